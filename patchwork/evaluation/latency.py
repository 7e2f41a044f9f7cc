"""Empirical cost of a method: per-frame wall-clock latency of one stream, as Chai 2019, Sec. 4 measures it.

Single thread on the CPU (the paper's setting), per-frame times over the first frames of
some validation videos, summarised by :func:`~patchwork.evaluation.latency_stats.summarize_latency`
(p95 / p99 as the "max", mean and std as the "average").
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from patchwork.engine.runner import StreamRunner
from patchwork.evaluation.cost import model_device
from patchwork.evaluation.latency_stats import summarize_latency
from patchwork.evaluation.streaming import clip_dataset
from patchwork.models.inference import evaluation_mode, inference_form
from patchwork.models.streaming import StreamingModel


def inference_copy(model: StreamingModel, device: torch.device | str, fold_bn: bool) -> StreamingModel:
    """The model to time: a copy on ``device``, BatchNorm folded into the convs when asked
    and 1x1 convs run as matrix products (:func:`~patchwork.models.inference.inference_form`); the model itself when neither changes it."""
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
    return inference_form(timed) if fold_bn else timed


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(
    model: StreamingModel,
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
    ``frames_per_video`` frames timed one by one: the policy's choice, the model's step with
    decoded predictions and the policy network (what a deployed method does per frame). The frame is on the
    device before the clock starts. On the CPU the run uses ``threads`` intra-op threads
    (the paper: one) and restores the previous setting afterwards; on a GPU the device is
    synchronised before and after each frame. ``warmup`` frames of the first clip run first,
    untimed, on a throwaway state (allocations, lazy initialisation).

    Args:
        model: the method (copied, and BatchNorm-folded when ``fold_bn``, see :func:`inference_copy`).
        clips: videos as uint8 (or ``[0, 1]`` float) ``(T, 3, H, W)`` tensors at the model's image size.
        policy: the method's policy.
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
        runner = StreamRunner(timed, policy, seed=generator_seed)
        with evaluation_mode(timed):
            for v, clip in enumerate([clips[0][:warmup]] + list(clips)):
                runner.start(1, image_size, device, videos=torch.tensor([v]))
                for t in range(min(len(clip), frames_per_video)):
                    frame = clip[t : t + 1].to(device)
                    _synchronize(device)
                    tic = time.perf_counter()
                    runner.step(frame)
                    _synchronize(device)
                    elapsed = (time.perf_counter() - tic) * 1e3
                    if v > 0:  # clip 0 is the warm-up
                        times.append(elapsed)
    finally:
        torch.set_num_threads(previous_threads)
    return {**summarize_latency(times), "device": str(device), "threads": threads if device.type == "cpu" else None,
            "fold_bn": fold_bn, "times_ms": times}


def latency_clips(dataset: Any, videos: int, frames: int) -> list[Tensor]:
    """The first ``frames`` frames of the first ``videos`` videos of a clip dataset (uint8 ``(T, 3, H, W)``)."""
    dataset = clip_dataset(dataset)
    return [dataset[i]["frames"][:frames] for i in range(min(videos, len(dataset)))]
