"""Theoretical cost: FLOPs per frame (Sec. 4, supplementary Tab. 4/5).

FLOPs are ``2 x multiply-adds`` as the paper counts them, measured by
``torch.utils.flop_counter.FlopCounterMode`` on the operations a call really runs
(convolutions and matrix products; element-wise ops, BatchNorm in inference and the
Patchwork cells' copies count zero, as in the paper's figures). A streaming method's
cost depends on the frame (a keyframe baseline computes only every K-th frame), so the
paper reports the **max** and the **average** over the frames of a stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from patchwork.nn import WindowGrid

if TYPE_CHECKING:
    from patchwork.evaluation.paper_tables import PaperRow


def count_flops(run: Callable[[], object]) -> int:
    """FLOPs (2 x multiply-adds) of everything ``run()`` computes."""
    with FlopCounterMode(display=False) as counter:
        run()
    return int(counter.get_total_flops())


@dataclass(frozen=True)
class FrameCost:
    """Max and average FLOPs per frame over a stream, in MFLOPs (10**6 FLOPs)."""

    mflops_max: float
    mflops_avg: float

    @classmethod
    def from_frames(cls, flops_per_frame: Sequence[int]) -> "FrameCost":
        """Summarise per-frame FLOPs counts (at least one frame)."""
        if not flops_per_frame:
            raise ValueError("FrameCost needs at least one frame")
        return cls(max(flops_per_frame) / 1e6, sum(flops_per_frame) / len(flops_per_frame) / 1e6)


def stream_cost(step: Callable[[int], object], num_frames: int) -> FrameCost:
    """Cost of ``num_frames`` consecutive calls ``step(t)``, each counted as one frame.

    ``step`` runs whatever the method computes at frame ``t`` under the actions its
    policy takes, so frame-dependent schedules (keyframe intervals, delays) are
    measured as they run rather than assumed.
    """
    return FrameCost.from_frames([count_flops(lambda t=t: step(t)) for t in range(num_frames)])


def backbone_cost_table(
    image_size: tuple[int, int] = (384, 384),
    widths: Iterable[float] = (1.0, 1.4),
    grids: Iterable[tuple[int, int]] = ((1, 1), (2, 1), (4, 2), (4, 1)),
    num_frames: int = 4,
) -> list[dict[str, object]]:
    """MFLOPs per frame of the stateful MobileNetV2 backbone for each width and grid.

    Each configuration streams ``num_frames`` frames of one video, cycling through the
    windows, after an initial full-frame pass that is not counted.

    Returns:
        Rows ``{"width", "grid", "windows", "mflops_max", "mflops_avg"}``; ``grid`` is
        ``"single-frame"`` for ``M = N = 1`` else ``"M=4, N=2"`` style.
    """
    from patchwork.models import StatefulMobileNetV2

    rows = []
    frames = torch.zeros(1, 3, *image_size)
    for width in widths:
        tv_model = torchvision.models.mobilenet_v2(width_mult=width)
        for slices, span in grids:
            grid = WindowGrid(slices, span)
            net = StatefulMobileNetV2.from_torchvision(tv_model, grid).eval()
            with torch.no_grad():
                state = net.init_state(1, image_size)
                _, state = net.forward_full(frames, state)

                def step(t: int) -> None:
                    nonlocal state
                    windows = torch.tensor([t % grid.num_windows])
                    _, state = net(grid.crop(frames, windows), windows, state)

                cost = stream_cost(step, num_frames)
            rows.append(
                {
                    "width": width,
                    "grid": "single-frame" if grid.is_full_frame else f"M={slices}, N={span}",
                    "windows": grid.num_windows,
                    "mflops_max": cost.mflops_max,
                    "mflops_avg": cost.mflops_avg,
                }
            )
    return rows


def build_paper_row(row: "PaperRow") -> torch.nn.Module:
    """The model of one row of Tab. 4/5: base model (grid, width) wrapped as the row says."""
    from patchwork.models import Flip, KeyframeDelay, KeyframeInterval, Resolution
    from patchwork.models.builders import patchwork_detector, patchwork_segmenter

    build = patchwork_detector if row.task == "detection" else patchwork_segmenter
    model = build(row.grid, width_mult=row.width)
    if row.area != 1.0:
        model = Resolution(model, row.area)
    if row.flip:
        model = Flip(model)
    if row.delay:
        model = KeyframeDelay(model, row.interval, row.delay)
    elif row.interval > 1:
        model = KeyframeInterval(model, row.interval)
    return model.eval()


def paper_row_cost(row: "PaperRow", image_size: tuple[int, int] = (384, 384), cycles: int = 2) -> FrameCost:
    """Measured MFLOPs per frame (max, avg) of a paper row over ``cycles`` keyframe intervals
    (at least 4 frames), with windows visited in turn."""
    model = build_paper_row(row)
    frames = torch.rand(1, 3, *image_size)
    with torch.no_grad():
        state = model.init_state(1, image_size)

        def step(t: int) -> None:
            nonlocal state
            state = model(frames, torch.tensor([t % model.num_actions]), state).state

        return stream_cost(step, max(4, cycles * row.interval))


def paper_cost_table(rows: Iterable["PaperRow"], image_size: tuple[int, int] = (384, 384)) -> list[dict[str, object]]:
    """Our MFLOPs beside the paper's for each row: ``task, method, mflops_max, mflops_avg,
    paper_mflops_max, paper_mflops_avg``."""
    table = []
    for row in rows:
        cost = paper_row_cost(row, image_size)
        table.append(
            {
                "task": row.task,
                "method": row.method,
                "mflops_max": cost.mflops_max,
                "mflops_avg": cost.mflops_avg,
                "paper_mflops_max": row.paper["mflops_max"],
                "paper_mflops_avg": row.paper["mflops_avg"],
            }
        )
    return table
