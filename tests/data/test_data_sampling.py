import pytest
import torch

from data_fixtures import frame_value, make_coco, make_vid, make_voc
from patchwork.data import (CocoStills, FakeVideoSynthesizer, ImageNetVID, MixedClipDataset, MixedFrameDataset,
                            SequentialClipDataset, VideoTaskData, VocStills, collate_clips, collate_frames)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sampling")
    vid = ImageNetVID(make_vid(root), "train")
    annotation_file, image_dir = make_coco(root)
    make_voc(root)
    stills = list(CocoStills(annotation_file, image_dir)) + list(VocStills(root, "2012", "trainval"))
    return vid, stills


def test_frames_mix_videos_and_stills_at_the_configured_ratio(sources):
    vid, stills = sources
    dataset = MixedFrameDataset(vid, stills, (32, 32), still_fraction=0.25, num_samples=300)
    # Still fixtures are grey 101 (COCO) and 150 (VOC), video frames at most 75; the brightness
    # jitter (+-12.5%) keeps the two apart.
    is_still = [dataset[i]["image"].float().median().item() > 86.5 for i in range(300)]
    assert 300 * 0.25 - 30 < sum(is_still) < 300 * 0.25 + 30
    batch = collate_frames([dataset[i] for i in range(4)])
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.uint8
    assert len(batch["target"]) == 4 and all(t["boxes"].shape[1] == 4 for t in batch["target"])


def test_samples_are_deterministic_per_item_and_epoch(sources):
    vid, stills = sources
    dataset = MixedFrameDataset(vid, stills, (32, 32), num_samples=10, seed=3)
    again = MixedFrameDataset(vid, stills, (32, 32), num_samples=10, seed=3)
    torch.manual_seed(0)
    first = [dataset[i] for i in range(10)]
    torch.manual_seed(1)  # the global RNG does not matter
    second = [again[i] for i in reversed(range(10))][::-1]
    assert all(torch.equal(a["image"], b["image"]) and torch.equal(a["target"]["boxes"], b["target"]["boxes"])
               for a, b in zip(first, second))
    dataset.set_epoch(1)
    assert any(not torch.equal(a["image"], dataset[i]["image"]) for i, a in enumerate(first))


def test_clips_from_videos_and_fake_videos(sources):
    vid, stills = sources
    clips = MixedClipDataset(vid, stills, clip_length=2, image_size=(32, 48), fake_video=FakeVideoSynthesizer(),
                             still_fraction=0.5, num_samples=12, frame_step=2, seed=0)
    samples = [clips[i] for i in range(12)]
    kinds = {s["video"].startswith("fake/") for s in samples}
    assert kinds == {True, False}
    for s in samples:
        assert s["frames"].shape == (2, 3, 32, 48) and len(s["targets"]) == 2
        if not s["video"].startswith("fake/"):
            video = next(v for v in vid if v.name == s["video"])
            first, second = s["frame_indices"].tolist()
            # frame_step 2 where the video is long enough (3 frames), else consecutive frames.
            assert second - first == (2 if len(video) >= 3 else 1)
            values = [frame_value([v.name for v in vid].index(video.name), i) for i in (first, second)]
            means = s["frames"].float().mean(dim=(1, 2, 3)).tolist()
            assert all(abs(m - v) < 3 for m, v in zip(means, values))
    batch = collate_clips(samples[:3])
    assert batch["frames"].shape == (3, 2, 3, 32, 48) and batch["frame_indices"].shape == (3, 2)
    assert len(batch["targets"]) == 3 and all(len(t) == 2 for t in batch["targets"])
    assert batch["original_size"].tolist() == [[64, 64]] * 3


def test_short_videos_are_not_clipped_and_stills_need_a_synthesizer(sources):
    vid, stills = sources
    clips = MixedClipDataset(vid, [], clip_length=3, image_size=(32, 32))
    assert [v.name for v in clips.videos] == [vid[0].name]  # the 2-frame snippet is too short
    with pytest.raises(ValueError):
        MixedClipDataset(vid, stills, clip_length=2, image_size=(32, 32))


def test_sequential_clips_cover_every_frame_in_order(sources):
    vid, _ = sources
    chunks = SequentialClipDataset(vid, (32, 32), clip_length=2)
    got = [(s["video"], s["frame_indices"].tolist()) for s in (chunks[i] for i in range(len(chunks)))]
    assert got == [(vid[0].name, [0, 1]), (vid[0].name, [2]), (vid[1].name, [0, 1])]
    whole = SequentialClipDataset(vid, (32, 32))
    assert [len(whole[i]["targets"]) for i in range(len(whole))] == [3, 2]
    # Boxes scale with the frame: (11, 20, 31, 40) in 64x64 -> halved.
    assert torch.equal(whole[0]["targets"][1]["boxes"][0], torch.tensor([5.5, 10, 15.5, 20]))


def test_task_data_builds_every_stage_dataset(sources):
    vid, stills = sources
    data = VideoTaskData(vid, vid, [stills[:2], stills[2:]], image_size=(32, 32), clip_length=2,
                         samples_per_epoch=5)
    assert len(data.still_images) == len(stills)
    assert len(data.frame_dataset()) == 5 and len(data.clip_dataset()) == 5
    assert len(data.val_frame_dataset()) == 5  # every val frame, in order
    loader = data.clip_dataset().loader(batch_size=2)
    batch = next(iter(loader))
    assert batch["frames"].shape == (2, 2, 3, 32, 32)
    # A stage may unroll its own length (LFS's detection stage); the data's stays the default.
    assert next(iter(data.clip_dataset(3).loader(batch_size=2)))["frames"].shape == (2, 3, 3, 32, 32)
    assert next(iter(data.val_clip_dataset().loader(batch_size=1)))["frames"].shape == (1, 3, 3, 32, 32)
