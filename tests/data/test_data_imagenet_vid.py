import logging

import pytest
import torch

from data_fixtures import VID_TRAIN, frame_value, make_vid
from patchwork.data import CorruptDataError, DatasetLayoutError, ImageNetVID, SequentialClipDataset
from patchwork.data.imagenet_vid import parse_vid_image_set_line

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SNIPPETS = list(VID_TRAIN)


@pytest.mark.parametrize("style", ["official", "fgfa", "none"])
def test_reads_train_snippets_frames_boxes_labels_track_ids(tmp_path, style):
    vid = ImageNetVID(make_vid(tmp_path, style), "train",
                      image_sets=["VID_train_15frames.txt"] if style == "fgfa" else None)
    assert [v.name for v in vid] == SNIPPETS
    first, second = vid
    assert len(first) == 3 and len(second) == 2
    assert first.frame_paths[1].endswith("ILSVRC2015_train_00000000/000001.JPEG")

    # Inclusive (10, 20, 29, 39) -> half-open (10, 20, 30, 40); dog is VID index 8, cat 9.
    t1 = first.target(1)
    assert torch.equal(t1["boxes"], torch.tensor([[11.0, 20, 31, 40], [0, 0, 10, 5]]))
    assert t1["labels"].tolist() == [8, 9] and t1["track_ids"].tolist() == [0, 1]
    assert t1["boxes"].dtype == torch.float32 and t1["labels"].dtype == torch.int64

    empty = first.target(2)
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,) and empty["track_ids"].shape == (0,)

    # The unknown wnid is ignored; zebra is VID index 29.
    t0 = second.target(0)
    assert t0["labels"].tolist() == [29] and torch.equal(t0["boxes"], torch.tensor([[40.0, 40, 64, 64]]))

    image, target = second.load_frame(1)
    assert image.shape == (3, 64, 64) and image.dtype == torch.uint8
    assert abs(image.float().mean().item() - frame_value(1, 1)) < 3
    assert "mask" not in target


def test_reads_val_from_the_official_frame_list(tmp_path):
    (video,) = ImageNetVID(make_vid(tmp_path), "val")
    assert video.name == "ILSVRC2015_val_00000000" and len(video) == 2
    assert torch.equal(video.target(0)["boxes"], torch.tensor([[5.0, 6, 8, 9]]))


@pytest.mark.parametrize("line, split, snippet", [
    ("ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000 1", "train",
     "ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000"),
    ("train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000 1 10 300", "train",
     "ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000"),
    ("ILSVRC2015_val_00000000/000123 124", "val", "ILSVRC2015_val_00000000"),
    ("val/ILSVRC2015_val_00000000/000000 1", "val", "ILSVRC2015_val_00000000"),
    ("val/ILSVRC2015_val_00000000 1 0 464", "val", "ILSVRC2015_val_00000000"),
    ("   ", "val", None),
])
def test_image_set_line_formats(line, split, snippet):
    assert parse_vid_image_set_line(line, split) == snippet


def test_missing_root_names_path_and_layout(tmp_path):
    with pytest.raises(DatasetLayoutError) as e:
        ImageNetVID(tmp_path / "nowhere", "train")
    assert str(tmp_path / "nowhere") in str(e.value) and "Annotations/VID" in str(e.value)


def test_corrupt_xml_frame_is_skipped_counted_logged_or_raised(tmp_path, caplog):
    root = make_vid(tmp_path)
    bad = root / "Annotations" / "VID" / "train" / SNIPPETS[0] / "000001.xml"
    bad.write_text("<annotation><object><name>")
    with caplog.at_level(logging.WARNING, logger="patchwork.data"):
        vid = ImageNetVID(root, "train")
    assert len(vid[0]) == 2 and vid[0].frame_paths[1].endswith("000002.JPEG")
    assert vid.bad_data.count == 1 and vid.bad_data.skipped[0][0] == str(bad)
    assert str(bad) in caplog.text
    with pytest.raises(CorruptDataError):
        ImageNetVID(root, "train", strict=True)


def test_corrupt_jpeg_is_skipped_at_load_time(tmp_path, caplog):
    root = make_vid(tmp_path)
    bad = root / "Data" / "VID" / "train" / SNIPPETS[0] / "000001.JPEG"
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    vid = ImageNetVID(root, "train")
    clips = SequentialClipDataset(vid, (32, 32))
    with caplog.at_level(logging.WARNING, logger="patchwork.data"):
        sample = clips[0]
    assert sample["frame_indices"].tolist() == [0, 2] and sample["frames"].shape == (2, 3, 32, 32)
    assert clips.bad_data.count == 1 and str(bad) in caplog.text
    with pytest.raises(CorruptDataError):
        SequentialClipDataset(vid, (32, 32), strict=True)[0]
