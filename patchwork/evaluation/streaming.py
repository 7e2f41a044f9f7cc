"""Streaming evaluation of any streaming model under any policy (Sec. 4, supplementary Tab. 4/5).

A method (a Patchwork model, the single-frame model, or either wrapped in the baselines of
:mod:`patchwork.models.baselines`) is run over whole validation videos, many videos at once
as parallel streams, exactly as it would run online: one frame at a time, the window of
frame ``t`` chosen by the policy from the Q-values of frame ``t - 1``::

    result = evaluate_streams(model, data.val_clip_dataset(), GreedyPolicy(), streams=8)
    result.metrics()          # {"mAP", "AP", "AP50 (COCO, extra)"} or {"J", "F", "J&F"}
    row = evaluate_method(model, data, GreedyPolicy(), method="Patchwork M=4, N=2")[0]

**Batching.** Videos are sorted by length (longest first) and cut into batches of
``streams`` videos; every batch starts all its videos together and runs for as many steps
as its longest video has frames. A stream whose video has ended is padded with black
frames and its outputs are discarded. This keeps every stream of a batch in phase, which
:class:`~patchwork.models.KeyframeDelay` needs (one suspended keyframe computation serves
the whole batch) and which keeps the keyframes of ``interval=K`` on frames ``0, K, 2K, ...``
of every video; sorting by length keeps the wasted padded steps few. (Refilling an ended
stream with the next video through ``state.reset`` would waste nothing but puts streams out
of phase.) Streams never interact (BatchNorm runs on its running statistics), so a video's
predictions do not depend on which videos share its batch.

**First window.** Frame 0 has no Q-values yet. A policy that reads Q-values starts each
video at a random window drawn from a generator seeded by ``(generator_seed, video
index)`` alone, so a video's windows do not depend on the batching either; hand-designed
policies choose frame 0 themselves (scanning starts its cycle, random draws, fixed is fixed).

**Resolution.** The model sees frames resized to the data's ``image_size``; metrics are
computed in each video's original resolution (``original_size``): boxes are scaled back and
made inclusive integer pixels (``x2 - 1``, ``y2 - 1``, the ImageNet VID devkit convention),
masks are resized back with nearest neighbour. Ground truth comes from the dataset's
records (original pixels), not from the resized samples.

**Cost.** :func:`theoretical_cost` counts FLOPs per frame of one stream as it runs
(:func:`~patchwork.evaluation.cost.stream_cost`); :func:`measure_latency` times each frame of
one stream (batch of one, ``torch.set_num_threads(1)`` on the CPU as in Sec. 4, CUDA
synchronised around each frame on a GPU), summarised by
:func:`~patchwork.evaluation.latency_stats.summarize_latency`.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Subset

from patchwork.evaluation.coco_ap50 import coco_ap50
from patchwork.evaluation.cost import FrameCost, stream_cost
from patchwork.evaluation.davis import evaluate_davis
from patchwork.evaluation.latency_stats import summarize_latency
from patchwork.evaluation.vid import evaluate_vid
from patchwork.models.baselines import (Flip, KeyframeDelay, KeyframeInterval, Resolution, rescale_prediction,
                                        rescale_target)
from patchwork.models.inference import evaluation_mode, fold_batchnorm
from patchwork.nn import WindowGrid
from patchwork.policies import FixedPolicy, GreedyPolicy, RandomPolicy, ScanningPolicy

Prediction = dict[str, Tensor]

#: The prediction entries kept per frame (the rest, e.g. a segmenter's float score map, is dropped to save memory).
KEPT_KEYS = {"detection": ("boxes", "scores", "labels"), "segmentation": ("mask",)}


# --------------------------------------------------------------------------- model introspection
def unwrap(model: nn.Module) -> nn.Module:
    """The innermost streaming model under any baseline wrappers (wrappers keep it in ``.model``)."""
    while not hasattr(model, "task") and isinstance(getattr(model, "model", None), nn.Module):
        model = model.model
    return model


def model_task(model: nn.Module) -> str:
    """``"detection"`` or ``"segmentation"``: the ``task`` attribute of the (wrapped) model."""
    task = getattr(unwrap(model), "task", None)
    if task not in KEPT_KEYS:
        raise ValueError(f"{type(model).__name__} has no task attribute 'detection' or 'segmentation' (got {task!r})")
    return task


def keyframe_interval(model: nn.Module) -> int:
    """The largest keyframe interval among a model's wrappers (1 when there is none)."""
    interval = 1
    while isinstance(model, nn.Module):
        interval = max(interval, int(getattr(model, "interval", 1)))
        model = getattr(model, "model", None)
    return interval


def model_device(model: nn.Module) -> torch.device:
    """Device of a model's first parameter or buffer (CPU for a model with neither)."""
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


# --------------------------------------------------------------------------- building a method
def wrap_baselines(
    model: nn.Module, interval: int = 1, delay: int = 0, area: float = 1.0, flip: bool = False
) -> nn.Module:
    """Wrap a model as a row of Tab. 4/5 says, in the order of ``build_paper_row``.

    ``resolution`` innermost (the model runs on downscaled frames), then ``flip`` (both passes
    at that resolution), then the keyframe schedule (``delay > 0``: :class:`KeyframeDelay`,
    else ``interval > 1``: :class:`KeyframeInterval`) outermost.
    """
    if area != 1.0:
        model = Resolution(model, area)
    if flip:
        model = Flip(model)
    if delay:
        model = KeyframeDelay(model, interval, delay)
    elif interval > 1:
        model = KeyframeInterval(model, interval)
    return model


def build_policy(name: str, grid: WindowGrid, window: int = 0, order: str = "raster") -> Any:
    """The policy a config or notebook names: ``dqn`` (greedy on Q-values), ``random``,
    ``scanning`` (``order`` raster or snake) or ``fixed`` (always ``window``)."""
    if name == "dqn":
        return GreedyPolicy()
    if name == "random":
        return RandomPolicy(grid.num_windows)
    if name == "scanning":
        return ScanningPolicy(grid, order)
    if name == "fixed":
        return FixedPolicy(window)
    raise ValueError(f"unknown policy {name!r}: choose dqn, random, scanning or fixed")


def policy_name(policy: Any) -> str:
    """Table 1's name of a policy: ``DQN``, ``Random``, ``Scanning``, ``Fixed`` (else the class name)."""
    names = {GreedyPolicy: "DQN", RandomPolicy: "Random", ScanningPolicy: "Scanning", FixedPolicy: "Fixed"}
    return names.get(type(policy), type(policy).__name__)


class WindowChooser:
    """Picks the window of every stream at every frame from a policy (module docstring, "First window").

    One chooser serves one batch of streams from their first frame on. A Q-value policy
    keeps each stream's previous window while the model has no Q-values for it (a delayed
    keyframe whose computation has not finished yet: the wrapper ignores those windows).

    Args:
        policy: any :class:`~patchwork.policies.Policy`.
        num_actions: the model's action space; with one action (single-frame) the policy is not asked.
        generator_seed: seeds the policy's generator and the first windows.
    """

    def __init__(self, policy: Any, num_actions: int, generator_seed: int = 0) -> None:
        self.policy = policy
        self.num_actions = int(num_actions)
        self.seed = int(generator_seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.previous: Tensor | None = None

    def first_windows(self, videos: Tensor) -> Tensor:
        """``videos (B,)`` indices -> a random window each, LongTensor ``(B,)``, from per-video seeds."""
        seeds = (self.seed * 1_000_003 + 7919 * (videos.long().cpu() + 1)).tolist()
        return torch.cat(
            [torch.randint(self.num_actions, (1,), generator=torch.Generator().manual_seed(s)) for s in seeds]
        )

    def __call__(self, q_values: Tensor | None, steps: Tensor, videos: Tensor) -> Tensor:
        """Windows ``(B,)`` for frame indices ``steps (B,)`` of videos ``videos (B,)`` (on ``steps``' device)."""
        if self.num_actions == 1:
            return torch.zeros_like(steps, dtype=torch.long)
        if not self.policy.needs_q_values:
            return self.policy.select(None, steps, self.generator).to(steps.device)
        if bool((steps == 0).all()) or self.previous is None:
            self.previous = self.first_windows(videos).to(steps.device)
        elif q_values is not None:
            self.previous = self.policy.select(q_values, steps, self.generator).to(steps.device)
        return self.previous


def check_policy(model: nn.Module, policy: Any) -> None:
    """Raise ``ValueError`` when ``policy`` reads Q-values that ``model`` (a grid of several windows) never computes."""
    if model.num_actions > 1 and policy.needs_q_values and getattr(unwrap(model), "attention", None) is None:
        raise ValueError(f"{policy!r} needs Q-values but {type(unwrap(model)).__name__} has no attention network")


# --------------------------------------------------------------------------- results
class LazySequence(Sequence):
    """A read-only sequence whose item ``i`` is ``load(i)``, computed on access (masks stay on disk)."""

    def __init__(self, length: int, load: Callable[[int], Any]) -> None:
        self.length = int(length)
        self.load = load

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:  # type: ignore[override]
        if isinstance(index, slice):
            return [self.load(i) for i in range(self.length)[index]]
        if not -self.length <= index < self.length:
            raise IndexError(index)
        return self.load(index % self.length)


@dataclass
class VideoResult:
    """One video's outputs.

    Attributes:
        name: the video's name.
        frame_indices: LongTensor ``(T,)``, the frames evaluated (corrupt frames are skipped by the data).
        windows: LongTensor ``(T,)``, the window looked at in each frame.
        predictions: ``T`` per-frame predictions at the model's ``image_size`` (CPU; boxes
            ``(N, 4)`` xyxy continuous pixels, ``scores``, ``labels``; or ``mask`` bool ``(H, W)``).
        ground_truth: ``T`` per-frame targets in the original resolution (``boxes``
            continuous xyxy, ``labels``; ``mask`` bool for segmentation), possibly lazy.
        original_size: ``(H0, W0)`` of the source frames.
    """

    name: str
    frame_indices: Tensor
    windows: Tensor
    predictions: list[Prediction]
    ground_truth: Sequence[dict[str, Tensor]]
    original_size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.predictions)


def inclusive_boxes(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Continuous xyxy pixel boxes ``(N, 4)`` -> inclusive integer boxes inside an ``(H, W)`` image.

    ``(x1, y1, x2, y2) -> (round(x1), round(y1), round(x2) - 1, round(y2) - 1)`` clamped to
    ``[0, W - 1] x [0, H - 1]``: the inverse of the data's ImageNet VID conversion
    (inclusive ``xmax`` becomes ``xmax + 1``), as the devkit's ``+1`` IoU expects.
    """
    boxes = boxes.detach().float().reshape(-1, 4).round()
    boxes[:, 2:] -= 1
    height, width = size
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height - 1)
    return boxes


@dataclass
class StreamResult:
    """Everything one streaming evaluation produced, and its task metric.

    Attributes:
        task: ``"detection"`` or ``"segmentation"``.
        image_size: ``(H, W)`` the model ran at.
        grid: the model's window grid (window indices refer to it).
        videos: per-video results, in dataset order.
        num_classes: number of object classes (detection), else ``None``.
    """

    task: str
    image_size: tuple[int, int]
    grid: WindowGrid
    videos: list[VideoResult]
    num_classes: int | None = None
    _metrics: dict[tuple[bool, int | None], dict[str, Any]] = field(default_factory=dict, init=False, repr=False)

    @property
    def frame_counts(self) -> dict[str, int]:
        """Frames evaluated per video, ``{name: T}``."""
        return {video.name: len(video) for video in self.videos}

    @property
    def num_frames(self) -> int:
        """Frames evaluated in total."""
        return sum(len(video) for video in self.videos)

    def window_boxes(self, video: int) -> Tensor:
        """The attention windows of one video as ``(T, 4)`` xyxy boxes in model pixels (x2, y2 exclusive)."""
        return self.grid.boxes(self.image_size).float()[self.videos[video].windows]

    def original_predictions(self, video: int) -> Sequence[Prediction]:
        """One video's predictions mapped to its original resolution (boxes scaled, masks resized nearest), lazily."""
        result = self.videos[video]
        return LazySequence(
            len(result), lambda t: rescale_prediction(result.predictions[t], self.image_size, result.original_size)
        )

    def detection_frames(self) -> tuple[list[dict[str, Tensor]], list[dict[str, Tensor]]]:
        """All frames' detections and ground truth as inclusive integer boxes in original pixels (VID devkit form)."""
        detections, ground_truth = [], []
        for v, video in enumerate(self.videos):
            predictions = self.original_predictions(v)
            for t in range(len(video)):
                p, g = predictions[t], video.ground_truth[t]
                detections.append({"boxes": inclusive_boxes(p["boxes"], video.original_size),
                                   "scores": p["scores"], "labels": p["labels"]})
                ground_truth.append({"boxes": inclusive_boxes(g["boxes"], video.original_size), "labels": g["labels"]})
        return detections, ground_truth

    def metrics(self, exclude_first_last: bool = True, num_classes: int | None = None) -> dict[str, Any]:
        """The task metric in ``[0, 1]`` units.

        Detection: ``{"mAP", "AP" (per class, NaN without ground truth), "num_gt",
        "AP50 (COCO, extra)"}`` (the official VID rule; COCO AP50 through pycocotools only as an
        extra). Segmentation: ``{"J": {"mean", "recall", "decay"}, "F": {...}, "J&F",
        "per_sequence"}`` of :func:`~patchwork.evaluation.davis.evaluate_davis`;
        ``exclude_first_last`` is the DAVIS 2016 protocol's first/last-frame exclusion.
        Computed once per set of arguments (masks are decoded again otherwise).
        """
        key = (bool(exclude_first_last), num_classes)
        if key not in self._metrics:
            self._metrics[key] = self._compute_metrics(exclude_first_last, num_classes)
        return self._metrics[key]

    def _compute_metrics(self, exclude_first_last: bool, num_classes: int | None) -> dict[str, Any]:
        if self.task == "detection":
            classes = num_classes if num_classes is not None else self.num_classes
            if classes is None:
                raise ValueError("detection metrics need num_classes")
            detections, ground_truth = self.detection_frames()
            vid = evaluate_vid(detections, ground_truth, classes)
            return {"mAP": vid["mAP"], "AP": vid["AP"].tolist(), "num_gt": vid["num_gt"].tolist(),
                    "AP50 (COCO, extra)": coco_ap50(detections, ground_truth, classes)}
        sequences = {}
        for v, video in enumerate(self.videos):
            predictions = self.original_predictions(v)
            masks = LazySequence(len(video), lambda t, p=predictions: p[t]["mask"])
            truth = LazySequence(len(video), lambda t, g=video.ground_truth: g[t]["mask"])
            sequences[video.name] = (truth, masks)
        return evaluate_davis(sequences, exclude_first_last=exclude_first_last)


# --------------------------------------------------------------------------- the streaming loop
def _clip_dataset(data: Any) -> Any:
    """A clip dataset of whole videos: ``data.val_clip_dataset()`` for a VideoTaskData, else ``data``."""
    return data.val_clip_dataset() if hasattr(data, "val_clip_dataset") else data


def _records(dataset: Any) -> Sequence[Any] | None:
    """The dataset's video records when it holds one clip per whole video (SequentialClipDataset)."""
    videos = getattr(dataset, "videos", None)
    return videos if videos is not None and len(videos) == len(dataset) else None


def _original_targets(
    record: Any, sample: dict[str, Any], image_size: tuple[int, int]
) -> Sequence[dict[str, Tensor]]:
    """Ground truth of a sample's frames in its original resolution.

    From the video record when there is one (exact: the on-disk boxes, masks decoded on
    access); otherwise the sample's resized targets mapped back (boxes scaled, masks nearest).
    """
    indices = sample["frame_indices"].tolist()
    if record is not None:
        def load(t: int) -> dict[str, Tensor]:
            target = record.target(indices[t])
            if record.masks is not None:
                target["mask"] = record.masks[indices[t]].load()
            return target

        return LazySequence(len(indices), load)
    original = tuple(int(s) for s in sample["original_size"])
    return [rescale_target(t, image_size, original) for t in sample["targets"]]


def evaluate_streams(
    model: nn.Module,
    dataset: Any,
    policy: Any,
    streams: int = 8,
    device: torch.device | str = "cpu",
    generator_seed: int = 0,
    max_videos: int | None = None,
    num_workers: int = 0,
) -> StreamResult:
    """Run a streaming model over whole videos as parallel streams and collect its outputs.

    Args:
        model: a streaming model or baseline wrapper (moved to ``device``; run in eval mode,
            its own training flags restored afterwards).
        dataset: a clip dataset with one clip per whole video (``VideoTaskData.val_clip_dataset()``),
            or a :class:`~patchwork.data.VideoTaskData` (its validation videos).
        policy: the attention policy (see the module docstring for frame 0).
        streams: videos run at once (the batch size ``B``).
        device: where the model runs.
        generator_seed: seed of the policy's randomness and of the first windows.
        max_videos: evaluate only the first ``max_videos`` videos of the dataset.
        num_workers: DataLoader workers decoding the videos.
    Returns:
        A :class:`StreamResult` with one :class:`VideoResult` per video, in dataset order.
    """
    dataset = _clip_dataset(dataset)
    records = _records(dataset)
    count = len(dataset) if max_videos is None else min(len(dataset), int(max_videos))
    order = list(range(count))
    if records is not None:
        # Longest first: similar lengths share a batch, so few steps are padding.
        order.sort(key=lambda i: -len(records[i]))
    task = model_task(model)
    check_policy(model, policy)
    image_size = tuple(int(s) for s in dataset.image_size)
    device = torch.device(device)
    model.to(device)
    chooser = WindowChooser(policy, model.num_actions, generator_seed)
    results: dict[int, VideoResult] = {}
    loader = DataLoader(Subset(dataset, order), batch_size=None, num_workers=num_workers)
    batch: list[tuple[int, dict[str, Any]]] = []
    with evaluation_mode(model):
        for index, sample in zip(order, loader):
            batch.append((index, sample))
            if len(batch) == streams or index == order[-1]:
                _run_batch(model, batch, chooser, task, image_size, device, records, results)
                batch = []
    inner = unwrap(model)
    return StreamResult(task, image_size, model.grid, [results[i] for i in range(count)],
                        getattr(inner, "num_classes", None) if task == "detection" else None)


def _run_batch(
    model: nn.Module,
    batch: list[tuple[int, dict[str, Any]]],
    chooser: WindowChooser,
    task: str,
    image_size: tuple[int, int],
    device: torch.device,
    records: Sequence[Any] | None,
    results: dict[int, VideoResult],
) -> None:
    """Stream one batch of videos from their first frame to the end of the longest."""
    lengths = torch.tensor([sample["frames"].shape[0] for _, sample in batch])
    videos = torch.tensor([index for index, _ in batch])
    frames = pad_sequence([sample["frames"] for _, sample in batch], batch_first=True)  # (B, T, 3, H, W) uint8
    size = len(batch)
    state = model.init_state(size, image_size, device)
    q_values = None
    predictions: list[list[Prediction]] = [[] for _ in batch]
    windows = torch.zeros(size, int(lengths.max()), dtype=torch.long)
    keys = KEPT_KEYS[task]
    for t in range(int(lengths.max())):
        steps = torch.full((size,), t, dtype=torch.long, device=device)
        actions = chooser(q_values, steps, videos)
        out = model(frames[:, t].to(device), actions, state)
        state, q_values = out.state, out.q_values
        windows[:, t] = actions.cpu()
        live = (lengths > t).nonzero().squeeze(1).tolist()  # padded streams' outputs are dropped
        for b in live:
            predictions[b].append({k: out.predictions[b][k].detach().cpu() for k in keys})
    for b, (index, sample) in enumerate(batch):
        length = int(lengths[b])
        results[index] = VideoResult(
            name=sample["video"],
            frame_indices=sample["frame_indices"],
            windows=windows[b, :length].clone(),
            predictions=predictions[b],
            ground_truth=_original_targets(None if records is None else records[index], sample, image_size),
            original_size=(int(sample["original_size"][0]), int(sample["original_size"][1])),
        )


# --------------------------------------------------------------------------- cost
def theoretical_cost(
    model: nn.Module,
    image_size: tuple[int, int],
    policy: Any,
    num_frames: int | None = None,
    generator_seed: int = 0,
) -> FrameCost:
    """MFLOPs per frame (max, avg) of one stream running ``num_frames`` frames under ``policy``.

    ``num_frames`` defaults to ``max(4, 2 * interval)`` so a keyframe baseline's whole cycle
    (keyframe, delayed stages, copied frames) is counted twice. Frames are seeded noise:
    FLOPs do not depend on the pixels. Runs on the model's device, in eval mode.
    """
    interval = keyframe_interval(model)
    num_frames = max(4, 2 * interval) if num_frames is None else int(num_frames)
    device = model_device(model)
    frames = torch.rand(1, 3, *image_size, generator=torch.Generator().manual_seed(generator_seed)).to(device)
    chooser = WindowChooser(policy, model.num_actions, generator_seed)
    videos = torch.zeros(1, dtype=torch.long)
    with evaluation_mode(model):
        state = model.init_state(1, tuple(image_size), device)
        q_values = None

        def step(t: int) -> None:
            nonlocal state, q_values
            actions = chooser(q_values, torch.full((1,), t, dtype=torch.long, device=device), videos)
            out = model(frames, actions, state)
            state, q_values = out.state, out.q_values

        return stream_cost(step, num_frames)


def inference_copy(model: nn.Module, device: torch.device | str, fold_bn: bool) -> nn.Module:
    """The model to time: a copy on ``device``, BatchNorm folded into the convs when asked
    (:func:`~patchwork.models.inference.fold_batchnorm`); the model itself when neither changes it."""
    device = torch.device(device)
    if not fold_bn and model_device(model) == device:
        return model
    try:
        timed = copy.deepcopy(model)
    except TypeError as error:
        raise TypeError(
            f"cannot copy {type(model).__name__} for timing ({error}); a KeyframeDelay holds its in-flight "
            "keyframe computation (a generator): measure latency before streaming with it, or use fold_bn=False"
        ) from error
    timed.to(device).eval()
    return fold_batchnorm(timed) if fold_bn else timed


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(
    model: nn.Module,
    clips: Sequence[Tensor],
    policy: Any,
    frames_per_video: int = 32,
    device: torch.device | str = "cpu",
    fold_bn: bool = True,
    threads: int = 1,
    warmup: int = 2,
    generator_seed: int = 0,
) -> dict[str, Any]:
    """Per-frame wall-clock latency of one stream (batch of one), as Sec. 4 measures it.

    Each clip is streamed from its first frame with a fresh state, its first
    ``frames_per_video`` frames timed one by one: the policy's choice plus the model's step
    with decoded predictions (what a deployed method does per frame). The frame is on the
    device before the clock starts. On the CPU the run uses ``threads`` intra-op threads
    (the paper: one) and restores the previous setting afterwards; on a GPU the device is
    synchronised before and after each frame. ``warmup`` frames of the first clip run first,
    untimed, on a throwaway state (allocations, lazy initialisation).

    Args:
        model: the method (copied, and BatchNorm-folded when ``fold_bn``, see :func:`inference_copy`).
        clips: videos as uint8 (or ``[0, 1]`` float) ``(T, 3, H, W)`` tensors at the model's image size.
        policy: the attention policy.
    Returns:
        :func:`~patchwork.evaluation.latency_stats.summarize_latency` of the per-frame times
        (``p95``, ``p99``, ``median``, ``mean``, ``std``, ``max`` in ms; ``count`` frames)
        plus ``"device"``, ``"threads"``, ``"fold_bn"`` and ``"times_ms"`` (the raw list).
    """
    if not clips:
        raise ValueError("measure_latency needs at least one clip")
    device = torch.device(device)
    timed = inference_copy(model, device, fold_bn)
    image_size = tuple(int(s) for s in clips[0].shape[-2:])
    previous_threads = torch.get_num_threads()
    times: list[float] = []
    try:
        if device.type == "cpu":
            torch.set_num_threads(threads)
        with evaluation_mode(timed):
            for v, clip in enumerate([clips[0][:warmup]] + list(clips)):
                chooser = WindowChooser(policy, timed.num_actions, generator_seed)
                state = timed.init_state(1, image_size, device)
                q_values = None
                video = torch.tensor([v])
                for t in range(min(len(clip), frames_per_video)):
                    frame = clip[t : t + 1].to(device)
                    steps = torch.full((1,), t, dtype=torch.long, device=device)
                    _synchronize(device)
                    tic = time.perf_counter()
                    actions = chooser(q_values, steps, video)
                    out = timed(frame, actions, state)
                    _synchronize(device)
                    elapsed = (time.perf_counter() - tic) * 1e3
                    state, q_values = out.state, out.q_values
                    if v > 0:  # clip 0 is the warm-up
                        times.append(elapsed)
    finally:
        torch.set_num_threads(previous_threads)
    return {**summarize_latency(times), "device": str(device), "threads": threads if device.type == "cpu" else None,
            "fold_bn": fold_bn, "times_ms": times}


# --------------------------------------------------------------------------- one table row
def latency_clips(dataset: Any, videos: int, frames: int) -> list[Tensor]:
    """The first ``frames`` frames of the first ``videos`` videos of a clip dataset (uint8 ``(T, 3, H, W)``)."""
    dataset = _clip_dataset(dataset)
    return [dataset[i]["frames"][:frames] for i in range(min(videos, len(dataset)))]


def grid_label(grid: WindowGrid) -> str:
    """``"single-frame"`` for ``M = N = 1``, else ``"M=4, N=2"``."""
    return "single-frame" if grid.is_full_frame else f"M={grid.slices}, N={grid.span}"


def metrics_row(task: str, metrics: dict[str, Any]) -> dict[str, float]:
    """A task metric as table numbers in percent (Tab. 4/5 units).

    Detection: ``mAP``, ``AP50_coco_extra``. Segmentation: ``J``, ``F`` (Mean), ``J_recall``,
    ``J_decay``, ``F_recall``, ``F_decay``, ``J&F``.
    """
    if task == "detection":
        return {"mAP": 100 * metrics["mAP"], "AP50_coco_extra": 100 * metrics["AP50 (COCO, extra)"]}
    row = {}
    for measure in ("J", "F"):
        row[measure] = 100 * metrics[measure]["mean"]
        row[f"{measure}_recall"] = 100 * metrics[measure]["recall"]
        row[f"{measure}_decay"] = 100 * metrics[measure]["decay"]
    row["J&F"] = 100 * metrics["J&F"]
    return row


def to_builtin(value: Any) -> Any:
    """Metrics as JSON-ready Python values: arrays and tensors become lists, numpy scalars numbers."""
    if isinstance(value, dict):
        return {str(k): to_builtin(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_builtin(v) for v in value]
    if isinstance(value, Tensor):
        return value.tolist()
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    return value


def latency_row(summary: dict[str, Any], prefix: str = "ms") -> dict[str, float]:
    """``{prefix}_p95``, ``_p99``, ``_mean``, ``_std``, ``_count`` from a latency summary."""
    return {f"{prefix}_{key}": summary[key] for key in ("p95", "p99", "mean", "std", "count")}


def evaluate_method(
    model: nn.Module,
    data: Any,
    policy: Any,
    method: str,
    streams: int = 8,
    device: torch.device | str = "cpu",
    generator_seed: int = 0,
    max_videos: int | None = None,
    num_workers: int = 0,
    exclude_first_last: bool = True,
    latency_videos: int = 2,
    latency_frames: int = 32,
    fold_bn: bool = True,
    threads: int = 1,
    cells: str | None = None,
    extra: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], StreamResult]:
    """One row of Tab. 4/5 (and Tab. 1/2): cost, latency and accuracy of a method.

    Order matters for :class:`~patchwork.models.KeyframeDelay`: latency is measured first,
    on a copy of the untouched model, then FLOPs, then accuracy.

    Args:
        model: the method (a streaming model, possibly wrapped in baselines).
        data: a :class:`~patchwork.data.VideoTaskData` or a whole-video clip dataset.
        policy: the attention policy.
        method: the row's label (e.g. :func:`patchwork.evaluation.report.method_label`).
        cells: the model's cell variant, recorded for Tab. 2 (``None``: read from the backbone).
        extra: further entries copied into the row (e.g. baseline options).
    Returns:
        ``(row, result)``: ``row`` has ``method``, ``task``, ``policy``, ``grid`` (label),
        ``M``, ``N``, ``cells``, ``mflops_max``, ``mflops_avg``, CPU latency ``ms_p95``,
        ``ms_p99``, ``ms_mean``, ``ms_std``, ``ms_count`` (plus ``gpu_ms_*`` when the model is on
        CUDA), the metric in percent (:func:`metrics_row`), ``videos`` and ``frames``;
        ``result`` is the :class:`StreamResult` (predictions and windows, for strips).
    """
    check_policy(model, policy)
    dataset = _clip_dataset(data)
    image_size = tuple(int(s) for s in dataset.image_size)
    device = torch.device(device)
    model.to(device)
    clips = latency_clips(dataset, latency_videos, latency_frames)
    latency = measure_latency(model, clips, policy, latency_frames, "cpu", fold_bn, threads,
                              generator_seed=generator_seed)
    row: dict[str, Any] = {}
    if device.type == "cuda":
        gpu = measure_latency(model, clips, policy, latency_frames, device, fold_bn, generator_seed=generator_seed)
        row.update(latency_row(gpu, "gpu_ms"))
    cost = theoretical_cost(model, image_size, policy, generator_seed=generator_seed)
    result = evaluate_streams(model, dataset, policy, streams, device, generator_seed, max_videos, num_workers)
    task = result.task
    inner = unwrap(model)
    backbone = getattr(inner, "backbone", None)
    grid = model.grid
    row = {
        "method": method,
        "task": task,
        "policy": policy_name(policy) if model.num_actions > 1 else "Single-frame",
        "grid": grid_label(grid),
        "M": grid.slices,
        "N": grid.span,
        "cells": cells if cells is not None else getattr(backbone, "cells", "none"),
        "mflops_max": cost.mflops_max,
        "mflops_avg": cost.mflops_avg,
        **latency_row(latency),
        **row,
        **metrics_row(task, result.metrics(exclude_first_last)),
        "videos": len(result.videos),
        "frames": result.num_frames,
        **(extra or {}),
    }
    return row, result
