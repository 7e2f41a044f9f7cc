"""Patchwork's cost tables: MFLOPs of the stateful backbone per grid and of every row of the paper's
Tables 4 and 5 (Chai 2019, supplementary Sec. A), measured as the rows run."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torchvision

from patchwork.benchmarks.paper_tables import PaperRow, comparison_row
from patchwork.models import StatefulMobileNetV2, patchwork_detector, patchwork_segmenter, wrap_baselines
from patchwork.nn import WindowGrid
from patchwork.nn.flops import FrameCost, stream_cost


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


def build_paper_row(row: PaperRow) -> torch.nn.Module:
    """The model of one row of Tab. 4/5: base model (grid, width) wrapped as the row says."""
    build = patchwork_detector if row.task == "detection" else patchwork_segmenter
    model = build(row.grid, width_mult=row.width)
    return wrap_baselines(model, row.interval, row.delay, row.area, row.flip).eval()


def paper_row_cost(row: PaperRow, image_size: tuple[int, int] = (384, 384), cycles: int = 2) -> FrameCost:
    """Measured MFLOPs per frame (max, avg) of a paper row over ``cycles`` keyframe intervals
    (at least 4 frames), with windows visited in turn."""
    model = build_paper_row(row)
    frames = torch.rand(1, 3, *image_size)
    with torch.no_grad():
        state = model.init_state(1, image_size)

        space = model.action_space

        def step(t: int) -> None:
            nonlocal state
            actions = None if space is None else torch.tensor([t % space.n])
            state = model(frames, actions, state).state

        return stream_cost(step, max(4, cycles * row.interval))


def paper_cost_table(rows: Iterable[PaperRow], image_size: tuple[int, int] = (384, 384)) -> list[dict[str, object]]:
    """Our MFLOPs beside the paper's for each row: ``task, method, mflops_max, mflops_avg,
    paper_mflops_max, paper_mflops_avg``."""
    table = []
    for row in rows:
        cost = paper_row_cost(row, image_size)
        table.append(comparison_row(row.task, row.method, cost.mflops_max, cost.mflops_avg, row.paper))
    return table
