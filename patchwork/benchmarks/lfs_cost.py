"""Theoretical cost of Looking Fast and Slow per frame (LFS Tab. 2), by the project's FLOPs accounting.

Each row streams one video through the interleaved detector under its schedule and counts
FLOPs (2 x multiply-adds, :func:`~patchwork.nn.flops.stream_cost`) frame by frame.
For the asynchronous row (:class:`~patchwork.models.lfs.SimulatedAsynchronousInference`) the
frame waits only for the f1 path; f0 and its LSTM update run beside it (Sec. 3.5,
:func:`~patchwork.nn.flops.beside_the_frame`), so its ``mflops_max`` is the f1 path (the
paper's per-frame "84") and its ``mflops_avg`` all the work amortised over the frames (the
paper's "(190)").
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from patchwork.nn.flops import FrameCost, stream_cost
from patchwork.benchmarks.paper_tables import LFS_TABLE2, LfsPaperRow, comparison_row
from patchwork.models.builders import looking_fast_slow_detector
from patchwork.models.lfs import F1, LookingFastSlowDetector, SimulatedAsynchronousInference
from patchwork.models.streaming import StepOutput
from patchwork.policies import FixedInterleavingPolicy


def lfs_row_cost(
    row: LfsPaperRow, model: LookingFastSlowDetector, image_size: tuple[int, int] = (320, 320), cycles: int = 2
) -> FrameCost:
    """MFLOPs per frame (max, avg) of one LFS row over ``cycles`` interleaving periods of one stream."""
    frames = torch.rand(1, 3, *image_size)
    num_frames = max(2, cycles * ((row.tau or 0) + 1))
    runner = SimulatedAsynchronousInference(model, row.tau, delay=1) if row.asynchronous else None
    policy = None if row.tau is None else FixedInterleavingPolicy(row.tau)
    state = (runner or model).init_state(1, image_size)

    def run(t: int) -> StepOutput:
        steps = torch.tensor([t])
        if runner is not None:
            # Delay 1: f0 launched on a keyframe lands at the next frame (the work per frame is the same for any delay).
            return runner.step(frames, steps, state)
        return model(frames, torch.tensor([F1]) if policy is None else policy.select(None, steps), state)

    def step(t: int) -> None:
        nonlocal state
        state = run(t).state

    with torch.no_grad():
        return stream_cost(step, num_frames)


def lfs_cost_table(
    rows: Iterable[LfsPaperRow] = LFS_TABLE2,
    image_size: tuple[int, int] = (320, 320),
    num_classes: int = 30,
    model: LookingFastSlowDetector | None = None,
    cycles: int = 2,
) -> list[dict[str, object]]:
    """Our MFLOPs beside the paper's for LFS Tab. 2 rows: ``task, method, mflops_max, mflops_avg,
    paper_mflops_max, paper_mflops_avg``. ``model``: default the paper's (widths 1.4 / 0.35, ``num_classes``);
    ``cycles``: interleaving periods streamed per row."""
    model = (looking_fast_slow_detector(num_classes, image_size) if model is None else model).eval()
    table = []
    for row in rows:
        cost = lfs_row_cost(row, model, image_size, cycles)
        table.append(comparison_row("detection", row.method, cost.mflops_max, cost.mflops_avg, row.paper))
    return table
