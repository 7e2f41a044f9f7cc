"""Cached dataset indexes: a cache hit returns equal records without parsing, a touched or
edited annotation/list file rebuilds, a corrupt cache is rebuilt with a warning, a read-only
dataset folder caches in $PATCHWORK_DATA_CACHE, and VID's occluded/generated flags survive."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import patchwork.data.imagenet_vid as imagenet_vid
import patchwork.data.voc as voc
from patchwork.data import CocoStills, CorruptDataError, Davis2016, ImageNetVID, VocStills
from patchwork.data.index_cache import CACHE_ENV, INDEX_DIR, index_cache_paths
from data_fixtures import DOG, make_coco, make_davis, make_vid, make_voc, vid_xml


@pytest.fixture(autouse=True)
def fallback_cache(tmp_path, monkeypatch):
    """``$PATCHWORK_DATA_CACHE`` inside the test's folder: nothing is written elsewhere."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "data_cache"))
    return tmp_path / "data_cache"


def count_calls(monkeypatch, module, name):
    """Wrap ``module.name`` to count its calls; returns the list the calls are appended to."""
    calls = []
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def bump_mtime(path: Path, seconds: int = 10) -> None:
    """Move the modification time forward (a ``touch`` that cannot fall in the same timestamp tick)."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 10**9))


def video_state(videos):
    """Everything a VideoRecord holds, as comparable Python values."""
    out = []
    for v in videos:
        out.append((v.name, v.frame_paths, v.boxes.tolist(), v.labels.tolist(), v.track_ids.tolist(),
                    v.frame_offsets.tolist(), None if v.occluded is None else v.occluded.tolist(),
                    None if v.generated is None else v.generated.tolist(),
                    None if v.masks is None else [(type(m).__name__, vars(m)) for m in v.masks]))
    return out


def still_state(stills):
    return [(s.name, s.image_path, {k: t.tolist() for k, t in s.target.items()},
             None if s.mask is None else (type(s.mask).__name__, vars(s.mask))) for s in stills]


def test_vid_cache_hit_returns_equal_records_without_parsing(tmp_path, monkeypatch):
    root = make_vid(tmp_path)
    parses = count_calls(monkeypatch, imagenet_vid, "parse_vid_xml")
    first = ImageNetVID(root, "train")
    assert len(parses) == 5  # 3 + 2 frames
    assert list((root / INDEX_DIR).glob("imagenet_vid-*.pt"))  # cached beside the data
    second = ImageNetVID(root, "train")
    assert len(parses) == 5  # nothing parsed again
    assert video_state(second) == video_state(first)
    assert video_state(ImageNetVID(root, "train", cache=False)) == video_state(first)
    assert not list((root / INDEX_DIR).glob("*.tmp"))  # atomic write: no temporary left


def test_vid_flags_are_kept_in_records_and_cache(tmp_path):
    root = make_vid(tmp_path)
    for videos in (ImageNetVID(root, "train"), ImageNetVID(root, "train")):  # built, then cached
        video = videos[0]
        # Frame 1 holds track 0 (dog, not occluded) and track 1 (cat, occluded in the fixture).
        assert video.target(1)["track_ids"].tolist() == [0, 1]
        assert set(video.box_flags(1)) == {"occluded", "generated"}
        assert video.box_flags(1)["occluded"].tolist() == [False, True]
        assert video.box_flags(1)["generated"].tolist() == [False, False]
        assert video.box_flags(2)["occluded"].shape == (0,)  # the frame without objects
        assert set(video.target(1)) == {"boxes", "labels", "track_ids"}  # the target contract is unchanged


def test_touching_or_editing_an_annotation_rebuilds(tmp_path, monkeypatch):
    root = make_vid(tmp_path)
    snippet = "ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000"
    xml = root / "Annotations" / "VID" / "train" / snippet / "000000.xml"
    ImageNetVID(root, "train")
    parses = count_calls(monkeypatch, imagenet_vid, "parse_vid_xml")
    bump_mtime(xml)  # touched: same content, new modification time
    ImageNetVID(root, "train")
    assert len(parses) == 5
    ImageNetVID(root, "train")
    assert len(parses) == 5  # the rebuilt cache is valid again
    xml.write_text(vid_xml([(0, DOG, (1, 2, 3, 4))], snippet, "000000"))  # edited: a new box
    bump_mtime(xml, 20)
    edited = ImageNetVID(root, "train")
    assert len(parses) == 10
    assert edited[0].target(0)["boxes"].tolist() == [[1.0, 2.0, 4.0, 5.0]]


def test_list_files_and_added_frames_rebuild(tmp_path):
    root = make_vid(tmp_path)
    assert len(ImageNetVID(root, "train")) == 2
    sets = root / "ImageSets" / "VID"
    (sets / "train_30.txt").write_text("")  # the zebra snippet is no longer listed
    bump_mtime(sets / "train_30.txt")
    assert [v.name for v in ImageNetVID(root, "train")] == ["ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000"]
    snippet = root / "Data" / "VID" / "val" / "ILSVRC2015_val_00000000"
    assert len(ImageNetVID(root, "val")[0]) == 2
    (snippet / "000002.JPEG").write_bytes((snippet / "000001.JPEG").read_bytes())
    (root / "Annotations" / "VID" / "val" / "ILSVRC2015_val_00000000" / "000002.xml").write_text(vid_xml([]))
    bump_mtime(snippet)
    assert len(ImageNetVID(root, "val")[0]) == 3  # a frame added to the folder is seen


def test_options_have_their_own_cache(tmp_path):
    root = make_vid(tmp_path)
    assert len(ImageNetVID(root, "train", max_videos=1)) == 1
    assert len(ImageNetVID(root, "train")) == 2
    assert len(ImageNetVID(root, "train", max_videos=1)) == 1
    assert len(list((root / INDEX_DIR).glob("imagenet_vid-*.pt"))) == 2


def test_a_corrupt_cache_is_rebuilt_with_a_warning(tmp_path, monkeypatch, caplog):
    root = make_vid(tmp_path)
    expected = video_state(ImageNetVID(root, "train"))
    (cache,) = (root / INDEX_DIR).glob("imagenet_vid-*.pt")
    cache.write_bytes(cache.read_bytes()[:100])  # truncated
    parses = count_calls(monkeypatch, imagenet_vid, "parse_vid_xml")
    assert video_state(ImageNetVID(root, "train")) == expected
    assert len(parses) == 5
    assert "corrupt or unreadable" in caplog.text and str(cache) in caplog.text
    cache.write_bytes(b"not a torch file at all")
    assert video_state(ImageNetVID(root, "train")) == expected
    assert video_state(ImageNetVID(root, "train")) == expected and len(parses) == 10  # rewritten, valid


def test_an_unwritable_dataset_folder_caches_in_the_data_cache(tmp_path, monkeypatch, fallback_cache):
    root = make_vid(tmp_path)
    (root / INDEX_DIR).write_text("")  # a file where the folder would go: the folder cannot be made
    first = ImageNetVID(root, "train")
    (cache,) = (fallback_cache / "index").glob("imagenet_vid-*.pt")
    assert cache == index_cache_paths("imagenet_vid", root, {"split": "train", "image_sets": None,
                                                             "max_videos": None})[1]
    parses = count_calls(monkeypatch, imagenet_vid, "parse_vid_xml")
    assert video_state(ImageNetVID(root, "train")) == video_state(first) and parses == []


def test_skipped_files_are_remembered_and_strict_still_raises(tmp_path):
    root = make_vid(tmp_path)
    bad = root / "Annotations" / "VID" / "val" / "ILSVRC2015_val_00000000" / "000001.xml"
    bad.write_text("<annotation><object>")
    first = ImageNetVID(root, "val")
    cached = ImageNetVID(root, "val")
    assert first.bad_data.skipped == cached.bad_data.skipped and cached.bad_data.count == 1
    assert len(cached[0]) == 1
    with pytest.raises(CorruptDataError, match="000001.xml"):
        ImageNetVID(root, "val", strict=True)


def test_davis_cache_hit_and_rebuild(tmp_path):
    root = make_davis(tmp_path)
    first = Davis2016(root, "train")
    assert video_state(Davis2016(root, "train")) == video_state(first)
    assert list((root / INDEX_DIR).glob("davis2016-*.pt"))
    ann = root / "Annotations" / "480p" / "bear"
    (ann / "00002.png").unlink()
    bump_mtime(ann)
    rebuilt = Davis2016(root, "train")
    assert len(rebuilt[0]) == 2 and rebuilt.bad_data.count == 1
    assert torch.equal(rebuilt[1].load_frame(0)[1]["mask"], first[1].load_frame(0)[1]["mask"])


def test_coco_cache_hit_and_rebuild(tmp_path):
    annotation_file, image_dir = make_coco(tmp_path)
    first = CocoStills(annotation_file, image_dir, with_masks=True)
    second = CocoStills(annotation_file, image_dir, with_masks=True)
    assert still_state(second) == still_state(first)
    assert torch.equal(second[0].load()[1]["mask"], first[0].load()[1]["mask"])  # polygons and RLE survive
    assert second.bad_data.count == first.bad_data.count == 1  # image 3's file is missing
    assert list((annotation_file.parent / INDEX_DIR).glob("coco-*.pt"))
    (image_dir / "000000000003.jpg").write_bytes((image_dir / "000000000001.jpg").read_bytes())
    bump_mtime(image_dir)
    assert len(CocoStills(annotation_file, image_dir, with_masks=True)) == len(first) + 1


def test_voc_cache_hit_and_rebuild(tmp_path, monkeypatch):
    root = make_voc(tmp_path)
    first = VocStills(root.parent.parent, "2012", with_masks=True)
    parses = count_calls(monkeypatch, voc, "parse_voc_xml")
    assert still_state(VocStills(root.parent.parent, "2012", with_masks=True)) == still_state(first)
    assert parses == []
    bump_mtime(root / "Annotations" / "2008_000001.xml")
    assert still_state(VocStills(root.parent.parent, "2012", with_masks=True)) == still_state(first)
    assert len(parses) == 3
