"""Streaming evaluation of any streaming model under any policy (Sec. 4, supplementary Tab. 4/5).

Any method (Patchwork, Looking Fast and Slow, BlockCopy, a single-frame model, any of them
wrapped in the baselines of :mod:`patchwork.models.baselines`) is run over whole validation
videos, many videos at once as parallel streams, exactly as it would run online: one frame at
a time through :class:`~patchwork.engine.runner.StreamRunner`, the action of frame ``t``
chosen by the policy from the observation after frame ``t - 1``::

    result = evaluate_streams(model, data.val_clip_dataset(), GreedyPolicy(), streams=8)
    result.metrics()          # {"mAP", "AP", "AP50 (COCO, extra)"} or {"J", "F", "J&F"}

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

**First action.** Frame 0 has no observation yet: the runner's first-action rule applies,
with random first actions seeded by ``(generator_seed, video index)`` alone, so a video's
actions do not depend on the batching either.

**Cost.** With ``count_flops`` every step's FLOPs of inference are counted as it runs
(:class:`~patchwork.engine.runner.StreamRunner`), for methods whose cost depends on the content
(a learnt schedule, BlockCopy's executed blocks): ``StreamResult.flops`` totals them over the
evaluated frames. A step's FLOPs are those of all its streams; a step with padded streams counts
the live streams' share (``live / B`` of it), which is exact for every step of a batch of equally
long videos and an approximation only for the few steps past a shorter video's end.

**Resolution.** The model sees frames resized to the data's ``image_size``; metrics are
computed in each video's original resolution (``original_size``): boxes are scaled back and
made inclusive integer pixels (``x2 - 1``, ``y2 - 1``, the ImageNet VID devkit convention),
masks are resized back with nearest neighbour. Ground truth comes from the dataset's
records (original pixels), not from the resized samples.

Cost and latency of the same loop: :mod:`patchwork.evaluation.cost`, :mod:`patchwork.evaluation.latency`;
a table row of all of it: :mod:`patchwork.evaluation.rows`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Subset

from patchwork.engine.runner import StreamRunner
from patchwork.evaluation.results import KEPT_KEYS, LazySequence, Prediction, StreamResult, VideoResult
from patchwork.models.baselines import rescale_target
from patchwork.models.inference import evaluation_mode
from patchwork.models.streaming import StreamingModel


def clip_dataset(data: Any) -> Any:
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
    model: StreamingModel,
    dataset: Any,
    policy: Any,
    streams: int = 8,
    device: torch.device | str = "cpu",
    generator_seed: int = 0,
    max_videos: int | None = None,
    num_workers: int = 0,
    count_flops: bool = False,
) -> StreamResult:
    """Run a streaming model over whole videos as parallel streams and collect its outputs.

    Args:
        model: a streaming model or baseline wrapper (moved to ``device``; run in eval mode,
            its own training flags restored afterwards).
        dataset: a clip dataset with one clip per whole video (``VideoTaskData.val_clip_dataset()``),
            or a :class:`~patchwork.data.VideoTaskData` (its validation videos).
        policy: the policy for the model's action space (``None`` for a model without one).
        streams: videos run at once (the batch size ``B``).
        device: where the model runs.
        generator_seed: seed of the policy's randomness and of the first actions.
        max_videos: evaluate only the first ``max_videos`` videos of the dataset.
        num_workers: DataLoader workers decoding the videos.
        count_flops: count the FLOPs of inference (``StreamResult.flops``; see **Cost** above).
    Returns:
        A :class:`StreamResult` with one :class:`VideoResult` per video, in dataset order.
    """
    dataset = clip_dataset(dataset)
    records = _records(dataset)
    count = len(dataset) if max_videos is None else min(len(dataset), int(max_videos))
    order = list(range(count))
    if records is not None:
        # Longest first: similar lengths share a batch, so few steps are padding.
        order.sort(key=lambda i: -len(records[i]))
    task = model.task
    if task not in KEPT_KEYS:
        raise ValueError(f"{type(model).__name__} has no task 'detection' or 'segmentation' (got {task!r})")
    image_size = tuple(int(s) for s in dataset.image_size)
    device = torch.device(device)
    model.to(device)
    runner = StreamRunner(model, policy, seed=generator_seed, count_flops=count_flops)
    results: dict[int, VideoResult] = {}
    flops = 0.0
    loader = DataLoader(Subset(dataset, order), batch_size=None, num_workers=num_workers)
    batch: list[tuple[int, dict[str, Any]]] = []
    with evaluation_mode(model):
        for index, sample in zip(order, loader):
            batch.append((index, sample))
            if len(batch) == streams or index == order[-1]:
                flops += _run_batch(runner, batch, task, image_size, device, records, results)
                batch = []
    return StreamResult(task, image_size, [results[i] for i in range(count)],
                        getattr(model, "num_classes", None) if task == "detection" else None,
                        flops if count_flops else None)


def _run_batch(
    runner: StreamRunner,
    batch: list[tuple[int, dict[str, Any]]],
    task: str,
    image_size: tuple[int, int],
    device: torch.device,
    records: Sequence[Any] | None,
    results: dict[int, VideoResult],
) -> float:
    """Stream one batch of videos from their first frame to the end of the longest; returns the
    live streams' share of the FLOPs counted (0 when the runner counts none)."""
    lengths = torch.tensor([sample["frames"].shape[0] for _, sample in batch])
    videos = torch.tensor([index for index, _ in batch])
    frames = pad_sequence([sample["frames"] for _, sample in batch], batch_first=True)  # (B, T, 3, H, W) uint8
    size = len(batch)
    runner.start(size, image_size, device, videos=videos)
    predictions: list[list[Prediction]] = [[] for _ in batch]
    actions: list[Tensor] = []
    keys = KEPT_KEYS[task]
    flops = 0.0
    for t in range(int(lengths.max())):
        step = runner.step(frames[:, t].to(device))
        if step.actions is not None:
            actions.append(step.actions.detach().cpu())
        live = (lengths > t).nonzero().squeeze(1).tolist()  # padded streams' outputs are dropped
        if step.flops is not None:
            flops += step.flops * len(live) / size
        for b in live:
            predictions[b].append({k: step.out.predictions[b][k].detach().cpu() for k in keys})
    stacked = torch.stack(actions, dim=1) if actions else None  # (B, T, *action_shape)
    for b, (index, sample) in enumerate(batch):
        length = int(lengths[b])
        results[index] = VideoResult(
            name=sample["video"],
            frame_indices=sample["frame_indices"],
            actions=None if stacked is None else stacked[b, :length].clone(),
            predictions=predictions[b],
            ground_truth=_original_targets(None if records is None else records[index], sample, image_size),
            original_size=(int(sample["original_size"][0]), int(sample["original_size"][1])),
        )
    return flops
