from pathlib import Path

import pytest
import torch

from patchwork.data import (VID_NAMES, CocoStills, Davis2016, ImageNetVID, SyntheticDataConfig, VocStills,
                            ensure_synthetic_data, synthetic_detection_data, synthetic_segmentation_data)
from patchwork.data.synthetic import generate
from patchwork.data.synthetic.appearance import COCO_CATEGORIES, VOC_CLASSES
from patchwork.data.synthetic.config import default_cache_dir
from patchwork.data.synthetic.report import make_synthetic_data
from patchwork.data.synthetic.writers import coco_scene, davis_scene, vid_scene, voc_scene

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = SyntheticDataConfig(vid_train_videos=2, vid_val_videos=1, vid_frames=(3, 4), vid_frame_size=(64, 96),
                           davis_train_videos=2, davis_val_videos=1, davis_frames=(3, 3), davis_frame_size=(64, 96),
                           coco_images=5, voc_images=3, still_size=(64, 96), max_objects=4, object_scale=0.6)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return ensure_synthetic_data(tmp_path_factory.mktemp("synthetic"), TINY)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generation_is_deterministic_cached_and_regenerated_when_incomplete(tiny, tmp_path, monkeypatch):
    assert (tiny.root / generate.MARKER).is_file() and tiny.root.name == TINY.key()
    again = generate.generate_synthetic_data(tmp_path / "again", TINY)
    original = {k: v for k, v in files(tiny.root).items() if k != generate.MARKER}
    assert files(again.root) == original  # byte for byte

    cache = tmp_path / "cache"
    first = ensure_synthetic_data(cache, TINY)
    calls = []
    real = generate.generate_synthetic_data
    monkeypatch.setattr(generate, "generate_synthetic_data", lambda *a: calls.append(a) or real(*a))
    assert ensure_synthetic_data(cache, TINY) == first and calls == []  # cached
    (first.root / generate.MARKER).unlink()
    (first.root / "junk").write_text("half-written")
    assert ensure_synthetic_data(cache, TINY) == first and len(calls) == 1  # regenerated
    assert not (first.root / "junk").exists() and (first.root / generate.MARKER).is_file()
    assert [p.name for p in cache.iterdir()] == [TINY.key()]  # no staging left behind


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("PATCHWORK_DATA_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_cache_dir() == tmp_path / "data_cache" / "synthetic"
    monkeypatch.setenv("PATCHWORK_DATA_CACHE", str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere" / "synthetic"


def test_vid_set_reads_back_the_rendered_boxes(tiny):
    for split, count in (("train", TINY.vid_train_videos), ("val", TINY.vid_val_videos)):
        videos = ImageNetVID(tiny.vid_root, split)
        assert len(videos) == count and videos.bad_data.count == 0
        for index, video in enumerate(videos):
            scene, num_frames = vid_scene(TINY, split, index)
            assert len(video) == num_frames
            for t in range(num_frames):
                objects = scene.render(t).objects
                target = video.target(t)
                expected = torch.tensor([[o.box[0], o.box[1], o.box[2] + 1, o.box[3] + 1] for o in objects],
                                        dtype=torch.float32).reshape(-1, 4)
                assert torch.equal(target["boxes"], expected)
                assert target["labels"].tolist() == [VID_NAMES.index(o.class_name) for o in objects]
                assert target["track_ids"].tolist() == [o.track_id for o in objects]


def test_davis_set_reads_back_the_rendered_foreground(tiny):
    for split in ("train", "val"):
        for index, video in enumerate(Davis2016(tiny.davis_root, split)):
            name, scene, num_frames = davis_scene(TINY, split, index)
            assert video.name == name and len(video) == num_frames
            for t in range(num_frames):
                image, target = video.load_frame(t)
                assert image.shape == (3, *TINY.davis_frame_size)
                assert torch.equal(target["mask"], torch.from_numpy(scene.render(t).foreground()))


def test_still_sets_read_back_boxes_and_masks(tiny):
    coco = CocoStills(tiny.coco_annotation_file, tiny.coco_image_dir, with_masks=True, require_objects=False)
    voc = VocStills(tiny.voc_root, "2012", "trainval", with_masks=True)
    assert len(coco) == TINY.coco_images and len(voc) == TINY.voc_images
    for index, (still, scene_of) in enumerate(zip(list(coco) + list(voc),
                                                  [coco_scene] * len(coco) + [voc_scene] * len(voc))):
        rendered = scene_of(TINY, index if index < len(coco) else index - len(coco)).render(0)
        mapped = [o for o in rendered.objects if o.class_name != "person"]  # person has no VID class
        image, target = still.load()
        assert image.shape[1:] == rendered.owner.shape
        expected = torch.tensor([[o.box[0], o.box[1], o.box[2] + 1, o.box[3] + 1] for o in mapped],
                                dtype=torch.float32).reshape(-1, 4)
        assert torch.equal(target["boxes"], expected)
        assert target["labels"].tolist() == [VID_NAMES.index(o.class_name) for o in mapped]
        # The foreground is every visible object, person included.
        assert torch.equal(target["mask"], torch.from_numpy(rendered.owner >= 0))
    assert set(COCO_CATEGORIES) == set(VOC_CLASSES) | {"zebra"}


def test_task_data_and_report_on_synthetic_sets(tiny, tmp_path, capsys):
    cache = tiny.root.parent
    detection = synthetic_detection_data(cache, TINY, image_size=(32, 64), clip_length=3)
    segmentation = synthetic_segmentation_data(cache, TINY, image_size=(32, 64), clip_length=3)
    clip = detection.clip_dataset()[0]
    assert clip["frames"].shape == (3, 3, 32, 64)
    frame = segmentation.frame_dataset()[0]
    assert frame["image"].shape == (3, 32, 64) and frame["target"]["mask"].shape == (32, 64)

    report = make_synthetic_data(tmp_path / "previews", cache, TINY, num_preview_clips=1, clip_length=3,
                                 image_size=(32, 64), fake_video_benchmark_clips=2)
    out = capsys.readouterr().out
    assert "vid train: videos 2" in out and "object size histogram" in out and "clips/s" in out
    assert len(report["previews"]) == 4 and all(Path(p).is_file() for p in report["previews"])
    stats = report["statistics"]["vid train"]
    assert sum(stats["objects_per_class"].values()) == sum(stats["object_size_histogram"].values())
    assert 0 < report["statistics"]["davis train"]["mean_foreground_fraction"] < 1
    assert report["fake_clips_per_second"] > 0
