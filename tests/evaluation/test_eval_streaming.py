"""Streaming evaluation: coverage, batching invariance, oracle metrics, cost and latency."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.io import write_png

from patchwork.data import BinaryPngMask, VideoRecord, VideoTaskData
from patchwork.engine.runner import StreamRunner
from patchwork.evaluation.cost import theoretical_cost
from patchwork.evaluation.latency import measure_latency
from patchwork.evaluation.results import inclusive_boxes
from patchwork.evaluation.rows import evaluate_method
from patchwork.evaluation.streaming import evaluate_streams
from patchwork.models import KeyframeDelay, KeyframeInterval, StepOutput, StreamingModel, wrap_baselines
from patchwork.models.builders import patchwork_detector
from patchwork.nn import StreamState, WindowGrid
from patchwork.nn.spaces import first_actions
from patchwork.policies import FixedInterleavingPolicy, GreedyPolicy, RandomPolicy, ScanningPolicy
from tests.models.lfs.lfs_fixtures import TINY_SIZE, tiny_lfs


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def frame_value(video: int, frame: int) -> int:
    """Grey level of a frame: unique per (video, frame), so the oracle can recognise it."""
    return 10 + 40 * video + 5 * frame


def frame_box(video: int, frame: int) -> list[float]:
    """Ground-truth box of a frame, continuous xyxy, even corners (exact under 2x nearest resizing)."""
    x1, y1 = 4 + 2 * frame + 10 * video, 6 + 2 * frame
    return [float(x1), float(y1), float(x1 + 30), float(y1 + 24)]


def write_videos(root: Path, lengths: list[int], size: tuple[int, int], image_size: tuple[int, int],
                 masks: bool = False) -> VideoTaskData:
    """Solid-grey PNG videos of ``size`` with one box (and its mask) per frame, as VideoTaskData at ``image_size``."""
    records = []
    for v, length in enumerate(lengths):
        paths, targets, mask_sources = [], [], []
        for t in range(length):
            path = root / f"video{v}" / f"{t:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_png(torch.full((3, *size), frame_value(v, t), dtype=torch.uint8), str(path))
            paths.append(str(path))
            box = frame_box(v, t)
            targets.append({"boxes": torch.tensor([box]), "labels": torch.tensor([(v + t) % 3]),
                            "track_ids": torch.tensor([0])})
            if masks:
                mask = torch.zeros(size, dtype=torch.uint8)
                x1, y1, x2, y2 = (int(c) for c in box)
                mask[y1:y2, x1:x2] = 255
                mask_path = root / f"video{v}" / f"{t:05d}_mask.png"
                write_png(mask[None], str(mask_path))
                mask_sources.append(BinaryPngMask(str(mask_path)))
        records.append(VideoRecord.from_targets(f"video{v}", paths, targets, mask_sources if masks else None))
    return VideoTaskData([], records, image_size=image_size)


class Oracle(StreamingModel):
    """Predicts, for each frame, the (resized) ground truth of the frame it recognises by its grey level."""

    def __init__(self, truth: dict[int, dict[str, torch.Tensor]], task: str):
        super().__init__()
        self.truth, self.task, self.num_classes = truth, task, 3

    def init_state(self, batch_size, image_size, device=None):
        return StreamState({"frames_seen": torch.zeros(batch_size, dtype=torch.long, device=device)})

    def step_stages(self, frames, actions, state):
        pixels = frames[:, 0, 0, 0]
        values = pixels.long() if frames.dtype == torch.uint8 else (pixels * 255).round().long()
        yield
        new = StreamState(state)
        new["frames_seen"] = state["frames_seen"] + 1
        return StepOutput({"values": values, "image_size": tuple(frames.shape[-2:])}, new)

    def predict(self, out, min_score=None):
        # Padded steps (black frames past a video's end) match no frame: predict nothing.
        empty = self.empty_prediction(out.raw["image_size"], "cpu")
        return [dict(self.truth.get(int(v), empty)) for v in out.raw["values"]]

    def empty_prediction(self, image_size, device):
        if self.task == "segmentation":
            return {"mask": torch.zeros(image_size, dtype=torch.bool)}
        return {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}


def oracle_for(data: VideoTaskData, task: str) -> Oracle:
    truth = {}
    dataset = data.val_clip_dataset()
    for v in range(len(dataset)):
        sample = dataset[v]
        for t, target in enumerate(sample["targets"]):
            if task == "detection":
                truth[frame_value(v, t)] = {"boxes": target["boxes"], "scores": torch.ones(len(target["boxes"])),
                                            "labels": target["labels"]}
            else:
                truth[frame_value(v, t)] = {"mask": target["mask"]}
    return Oracle(truth, task)


LENGTHS = [2, 5, 3]


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return patchwork_detector((4, 2), width_mult=0.35, num_classes=3).eval()


@pytest.fixture(scope="module")
def video_data(tmp_path_factory):
    return write_videos(tmp_path_factory.mktemp("videos"), LENGTHS, (96, 160), (128, 128))


def test_every_frame_once_and_batching_changes_nothing(detector, video_data):
    batched = evaluate_streams(detector, video_data, GreedyPolicy(), streams=2)
    assert batched.frame_counts == {"video0": 2, "video1": 5, "video2": 3}
    assert batched.num_frames == sum(LENGTHS)
    for video, length in zip(batched.videos, LENGTHS):
        assert torch.equal(video.frame_indices, torch.arange(length))
        assert video.actions.shape == (length,) and 0 <= video.actions.min() and video.actions.max() < 9
        assert len(video.predictions) == len(video.ground_truth) == length
        assert video.original_size == (96, 160)
    alone = evaluate_streams(detector, video_data, GreedyPolicy(), streams=1)
    for a, b in zip(batched.videos, alone.videos):
        assert torch.equal(a.actions, b.actions)
        for p, q in zip(a.predictions, b.predictions):
            assert p["boxes"].shape == q["boxes"].shape
            torch.testing.assert_close(p["boxes"], q["boxes"], atol=1e-3, rtol=1e-4)
            torch.testing.assert_close(p["scores"], q["scores"], atol=1e-4, rtol=1e-4)


def test_first_window_is_seeded_per_video_and_policy_windows_follow_the_policy(detector, video_data):
    space = detector.action_space
    videos = torch.tensor([0, 1, 2])
    first = first_actions(space, videos, (128, 128), seed=3)
    assert torch.equal(first[1:], first_actions(space, torch.tensor([1, 2]), (128, 128), seed=3))
    greedy = evaluate_streams(detector, video_data, GreedyPolicy(), streams=3, generator_seed=3)
    alone = evaluate_streams(detector, video_data, GreedyPolicy(), streams=1, generator_seed=3)
    assert [int(v.actions[0]) for v in greedy.videos] == [int(v.actions[0]) for v in alone.videos]
    assert [int(v.actions[0]) for v in greedy.videos] == first_actions(space, videos, (128, 128), 3).tolist()
    scanning = evaluate_streams(detector, video_data, ScanningPolicy(WindowGrid(4, 2)), streams=3)
    for video, length in zip(scanning.videos, LENGTHS):
        assert video.actions.tolist() == list(range(length))
    first = evaluate_streams(detector, video_data, RandomPolicy(9), streams=3, generator_seed=1)
    again = evaluate_streams(detector, video_data, RandomPolicy(9), streams=3, generator_seed=1)
    assert all(torch.equal(a.actions, b.actions) for a, b in zip(first.videos, again.videos))


def test_keyframe_baselines_stream_videos_of_unequal_length(detector, video_data):
    single = patchwork_detector((1, 1), width_mult=0.35, num_classes=3).eval()
    for model in (KeyframeInterval(single, 2), KeyframeDelay(single, 2, 1)):
        result = evaluate_streams(model, video_data, GreedyPolicy(), streams=2)
        assert result.frame_counts == {"video0": 2, "video1": 5, "video2": 3}
        assert all(video.actions is None for video in result.videos)  # a single-frame model chooses nothing
    held = evaluate_streams(KeyframeInterval(single, 2), video_data, GreedyPolicy(), streams=3).videos[1]
    for t in (1, 3):  # copies of the keyframe before
        assert torch.equal(held.predictions[t]["boxes"], held.predictions[t - 1]["boxes"])
    # Patchwork with a delayed keyframe: no Q-values until the first keyframe finishes, so the
    # window stays; afterwards the greedy policy picks from the held Q-values.
    delayed = evaluate_streams(KeyframeDelay(detector, 2, 1), video_data, GreedyPolicy(), streams=2).videos[1]
    assert delayed.actions[1] == delayed.actions[0] and len(delayed.actions) == 5
    with pytest.raises(ValueError, match="no policy network"):
        evaluate_streams(_without_attention(detector), video_data, GreedyPolicy())


def _without_attention(model):
    clone = copy.deepcopy(model)
    clone.attention = None
    return clone


def test_oracle_detector_scores_map_one_in_original_resolution(tmp_path):
    data = write_videos(tmp_path, [3, 4], (96, 160), (64, 64))
    result = evaluate_streams(oracle_for(data, "detection"), data, GreedyPolicy(), streams=2)
    detections, truth = result.detection_frames()
    assert len(detections) == 7
    # Frame 1 of video 1: box (16, 8, 46, 32) continuous -> inclusive (16, 8, 45, 31) at 160x96.
    expected = torch.tensor([[16.0, 8.0, 45.0, 31.0]])
    assert torch.equal(truth[4]["boxes"], expected) and torch.equal(detections[4]["boxes"], expected)
    metrics = result.metrics()
    assert metrics["mAP"] == 1.0 and metrics["AP50 (COCO, extra)"] == pytest.approx(1.0)
    assert metrics["num_gt"] == [2, 3, 2]


def test_oracle_segmenter_scores_j_and_f_one(tmp_path):
    data = write_videos(tmp_path, [3, 4], (128, 192), (64, 96), masks=True)
    result = evaluate_streams(oracle_for(data, "segmentation"), data, GreedyPolicy(), streams=2)
    mask = result.original_predictions(1)[2]["mask"]
    assert mask.shape == (128, 192) and torch.equal(mask, result.videos[1].ground_truth[2]["mask"])
    for exclude in (True, False):
        metrics = result.metrics(exclude_first_last=exclude)
        assert metrics["J"]["mean"] == 1.0 and metrics["F"]["mean"] == 1.0 and metrics["J"]["decay"] == 0.0
        scored = {name: len(seq["J"]["per_frame"]) for name, seq in metrics["per_sequence"].items()}
        assert scored == ({"video0": 1, "video1": 2} if exclude else {"video0": 3, "video1": 4})


def test_inclusive_boxes_round_and_clamp():
    boxes = torch.tensor([[10.2, 4.6, 30.5, 20.0], [-3.0, -1.0, 200.0, 100.0]])
    assert inclusive_boxes(boxes, (50, 100)).tolist() == [[10, 5, 29, 19], [0, 0, 99, 49]]


def test_theoretical_cost_of_a_keyframe_interval(detector):
    single = patchwork_detector((1, 1), width_mult=0.35, num_classes=3).eval()
    full = theoretical_cost(single, (128, 128), GreedyPolicy())
    interval = theoretical_cost(wrap_baselines(single, interval=2), (128, 128), GreedyPolicy())
    assert full.mflops_max == full.mflops_avg > 0
    assert interval.mflops_max == full.mflops_max and interval.mflops_avg == pytest.approx(full.mflops_max / 2)
    patchwork = theoretical_cost(detector, (128, 128), GreedyPolicy())
    assert patchwork.mflops_max < full.mflops_max


def test_latency_counts_the_timed_frames_and_restores_threads(detector, video_data):
    clips = [video_data.val_clip_dataset()[i]["frames"] for i in (1, 0)]  # 5 and 2 frames
    torch.set_num_threads(2)
    try:
        summary = measure_latency(detector, clips, GreedyPolicy(), frames_per_video=3, fold_bn=True, threads=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    assert summary["count"] == 3 + 2 == len(summary["times_ms"])
    assert summary["p95"] <= summary["p99"] <= summary["max"] and summary["mean"] > 0
    assert any(isinstance(m, nn.BatchNorm2d) for m in detector.modules())  # folded a copy only


def test_evaluate_method_row(tmp_path):
    data = write_videos(tmp_path, [3, 4], (96, 160), (64, 64))
    row, result = evaluate_method(oracle_for(data, "detection"), data, GreedyPolicy(), "oracle",
                                  latency_videos=1, latency_frames=2)
    assert row["method"] == "oracle" and row["task"] == "detection" and row["policy"] == "Single-frame"
    assert row["mAP"] == 100.0 and row["frames"] == 7 and row["videos"] == 2 and row["ms_count"] == 2
    assert {"mflops_max", "mflops_avg", "ms_p95", "ms_p99", "ms_mean", "ms_std", "AP50_coco_extra"} <= set(row)
    assert result.num_frames == 7


class ReadingInterleaving(FixedInterleavingPolicy):
    """A fixed schedule that asks for the policy network's scores, as a learnt one does: a
    content-dependent row for the evaluation, whose cost must be counted on the evaluated frames."""

    needs_scores = True


def _lfs_frame_costs(model, frames):
    """Hand-counted MFLOPs of an f0 frame, an f1 frame and the policy network that chooses a frame's
    extractor (each stream's first frame runs f0 and, having no observation yet, no policy network)."""
    def stream(policy, num_frames: int) -> float:
        return theoretical_cost(model, TINY_SIZE, policy, num_frames=num_frames, frames=frames).mflops_avg

    f0 = stream(ReadingInterleaving(0), 1)
    policy = 2 * stream(ReadingInterleaving(0), 2) - 2 * f0
    f1 = 2 * stream(ReadingInterleaving(10 ** 6), 2) - f0 - policy
    assert f1 == pytest.approx(2 * stream(FixedInterleavingPolicy(10 ** 6), 2) - f0, rel=1e-9)
    return f0, f1, policy


def test_evaluation_counts_the_cost_of_every_evaluated_frame(tmp_path):
    model = tiny_lfs().eval()
    data = write_videos(tmp_path, LENGTHS, (64, 64), TINY_SIZE)
    f0, f1, policy = _lfs_frame_costs(model, torch.rand(2, 3, *TINY_SIZE))
    assert f0 > f1 > policy > 0
    # tau=1 restarting with each video: f0 on frames 0, 2, 4 -> 1 + 3 + 2 f0 frames of 10; the
    # policy network on the 10 - 3 frames after a first one.
    expected = (6 * f0 + 4 * f1 + 7 * policy) / 10
    for streams in (1, 3):  # padded steps (videos of 2, 5, 3 frames in one batch) count their live share
        result = evaluate_streams(model, data, ReadingInterleaving(1), streams=streams, count_flops=True)
        assert result.mflops_avg == pytest.approx(expected, rel=1e-9)
    assert evaluate_streams(model, data, ReadingInterleaving(1)).flops is None
    row, _ = evaluate_method(model, data, ReadingInterleaving(1), "reading", latency_videos=1, latency_frames=2,
                             resamples=0)
    assert row["mflops_avg_over"] == "evaluation" and row["mflops_avg"] == pytest.approx(expected, rel=1e-9)
    assert row["mflops_max"] == pytest.approx(f0 + policy, rel=1e-9)  # an f0 frame after the first
    fixed, _ = evaluate_method(model, data, FixedInterleavingPolicy(1), "fixed", latency_videos=1,
                               latency_frames=2, resamples=0)
    assert fixed["mflops_avg_over"] == "schedule" and fixed["mflops_avg"] == pytest.approx((f0 + f1) / 2, rel=1e-9)


class LearningWhileActing(FixedInterleavingPolicy):
    """Computes a matrix product after every frame, as an online learner's update would."""

    def observe_step(self, model, frames, step, t):
        torch.ones(64, 64) @ torch.ones(64, 64)


def test_counted_frames_exclude_what_a_learner_computes():
    model = tiny_lfs().eval()
    frames = torch.rand(1, 3, *TINY_SIZE)
    counts = []
    for policy in (FixedInterleavingPolicy(1), LearningWhileActing(1)):
        runner = StreamRunner(model, policy, count_flops=True)
        runner.start(1, TINY_SIZE)
        with torch.no_grad():
            counts.append([runner.step(frames).flops for _ in range(3)])
    assert counts[0] == counts[1] and counts[0][0] > counts[0][1] > 0
