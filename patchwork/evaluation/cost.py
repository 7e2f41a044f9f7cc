"""Theoretical cost of a method as it runs: MFLOPs per frame, max and average (Chai 2019, Sec. 4).

The stream runner steps one stream under the method's policy and every frame's FLOPs are
counted (:mod:`patchwork.nn.flops`), so frame-dependent schedules (keyframe intervals and
delays, LFS's interleaving, BlockCopy's executed blocks) are measured, not assumed. The
policy network's cost counts in the frame that computes the next action. It is the cost of
inference: a policy that learns while it acts (BlockCopy's online mode) acts without learning
here; its information gain, backward pass and update are in its latency (measured as it runs).
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import Tensor, nn

from patchwork.engine.runner import StreamRunner
from patchwork.models.inference import evaluation_mode
from patchwork.models.streaming import StreamingModel
from patchwork.nn.flops import FrameCost, stream_cost


def model_device(model: nn.Module) -> torch.device:
    """Device of a model's first parameter or buffer (CPU for a model with neither)."""
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def keyframe_interval(model: StreamingModel) -> int:
    """The method's keyframe interval from its description (1 when it has none)."""
    return int(model.describe().fields.get("interval", 1))


def schedule_period(model: StreamingModel, policy: Any) -> int:
    """Frames of one cycle of the method's schedule: the model's keyframe interval or the policy's
    ``period`` (e.g. LFS's fixed interleaving, ``tau + 1``), whichever is longer (1 for neither)."""
    return max(keyframe_interval(model), int(getattr(policy, "period", 1) or 1))


def theoretical_cost(
    model: StreamingModel,
    image_size: tuple[int, int],
    policy: Any,
    num_frames: int | None = None,
    generator_seed: int = 0,
    frames: Tensor | None = None,
) -> FrameCost:
    """MFLOPs per frame (max, avg) of one stream running ``num_frames`` frames under ``policy``.

    ``num_frames`` defaults to ``max(4, 2 * period)`` (:func:`schedule_period`) so a keyframe
    baseline's whole cycle (keyframe, delayed stages, copied frames) or a fixed interleaving's
    (LFS tau=9: f0 then nine f1, Tab. 2's amortised cost) is counted twice; under a policy that
    reads scores (a learnt schedule, which depends on the content) it is at least ``len(frames)``.
    ``frames`` ``(T, 3, H, W)`` are the frames streamed (a method whose cost depends on the
    content, such as BlockCopy's, needs real ones); by default seeded noise repeated, for
    methods whose FLOPs do not depend on the pixels. Runs on the model's device, in eval mode.
    """
    if num_frames is None:
        num_frames = max(4, 2 * schedule_period(model, policy))
        if frames is not None and policy is not None and policy.needs_scores:
            num_frames = max(num_frames, len(frames))
    num_frames = int(num_frames)
    device = model_device(model)
    if frames is None:
        noise = torch.rand(1, 3, *image_size, generator=torch.Generator().manual_seed(generator_seed))
        frames = noise.expand(num_frames, -1, -1, -1)
    frames = frames.to(device)
    runner = StreamRunner(model, policy, seed=generator_seed, learn=False)
    with evaluation_mode(model):
        runner.start(1, tuple(image_size), device, videos=torch.zeros(1, dtype=torch.long))
        return stream_cost(lambda t: runner.step(frames[t % len(frames)][None]), num_frames)
