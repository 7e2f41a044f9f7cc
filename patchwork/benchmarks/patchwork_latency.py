"""Patchwork's empirical cost: per-frame wall-clock latency of the stateful backbone and task models per grid
(Chai 2019, Sec. 4, Fig. 6/8).

The paper measures single-threaded CPU latency. Configurations are interleaved frame by
frame in one run, so machine noise (other processes, frequency scaling) hits all of them
alike instead of biasing whichever ran during a busy moment.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable

import numpy as np
import torch
import torchvision

from patchwork.evaluation.latency_stats import summarize_latency
from patchwork.models import StatefulMobileNetV2, patchwork_detector, patchwork_segmenter
from patchwork.models.inference import fold_batchnorm, inference_form
from patchwork.nn import PatchworkCell, WindowGrid, WindowPlacement


def cell_time_share(net: StatefulMobileNetV2, frames: torch.Tensor, window: int, repeats: int = 20) -> dict[str, float]:
    """Share of one window pass spent in the Patchwork cells' state update and propagation.

    The cells' inputs of a real pass are recorded, then the cells' :meth:`~PatchworkCell.propagate`
    (state update + feature propagation, including the index computation) and the output
    memory's write are replayed and timed on their own.

    Returns:
        ``{"pass_ms", "cells_ms", "share"}`` (medians over ``repeats``).
    """
    grid = net.grid
    windows = torch.tensor([window] * frames.shape[0])
    crops = grid.crop(frames, windows)
    recorded: list[tuple[PatchworkCell, tuple]] = []
    hooks = [
        module.register_forward_pre_hook(lambda module, args: recorded.append((module, args)))
        for module in net.modules()
        if isinstance(module, PatchworkCell)
    ]
    with torch.no_grad():
        state = net.init_state(frames.shape[0], tuple(frames.shape[-2:]))
        _, state = net.forward_full(frames, state)
        out, state = net(crops, windows, state)
        for hook in hooks:
            hook.remove()
        out_corners = grid.offsets(windows, tuple(frames.shape[-2:]), net.out_stride)

        def replay_cells() -> None:
            # Fresh placements, shared by stride as in a real pass, so the replay pays
            # for the index computation too.
            fresh: dict[int, WindowPlacement] = {}
            for cell, (window_features, memory, placement) in recorded:
                shared = fresh.setdefault(id(placement), WindowPlacement(placement.corners))
                cell.propagate(window_features, memory, shared)
            net.output_memory.write(state["output"], out, WindowPlacement(out_corners))

        pass_times, cell_times = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            net(crops, windows, state)
            pass_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            replay_cells()
            cell_times.append(time.perf_counter() - start)
    pass_ms, cells_ms = 1e3 * float(np.median(pass_times)), 1e3 * float(np.median(cell_times))
    return {"pass_ms": pass_ms, "cells_ms": cells_ms, "share": cells_ms / pass_ms}


def _streaming_config(task: str, grid: WindowGrid, width: float, tv_model: torch.nn.Module, fold_bn: bool):
    """``(module, step(frame, windows, state) -> state, state factory)`` for one grid of ``task``."""
    if task == "backbone":
        net = StatefulMobileNetV2.from_torchvision(tv_model, grid).eval()

        def step(frame, windows, state):
            return net(grid.crop(frame, windows), windows, state)[1]

    else:
        build = {"detection": patchwork_detector, "segmentation": patchwork_segmenter}[task]
        net = build((grid.slices, grid.span), width_mult=width).eval()

        def step(frame, windows, state):
            return net(frame, windows, state).state

    if fold_bn:
        inference_form(net)
    return net, step


def latency_table(
    task: str = "backbone",
    image_size: tuple[int, int] = (384, 384),
    width: float = 1.0,
    grids: Iterable[tuple[int, int]] = ((1, 1), (2, 1), (4, 2), (4, 1)),
    frames: int = 60,
    warmup: int = 5,
    threads: int = 1,
    seed: int = 0,
    fold_bn: bool = True,
) -> list[dict[str, object]]:
    """Per-frame CPU latency of ``task`` (``"backbone"``, ``"detection"`` or ``"segmentation"``)
    for each grid, all grids interleaved in one run.

    Every configuration streams the same random video with a random policy. For the
    backbone a frame's time covers cropping and the window pass; for a task model the
    whole step: crop, backbone, heads, memories, attention Q-values and decoded
    predictions. The single-frame row is ``WindowGrid(1, 1)`` through the same code (the
    stateless network). ``fold_bn`` puts every configuration alike in its deployed form
    (:func:`~patchwork.models.inference.inference_form`: BatchNorm folded, 1x1 convs as matmuls).

    Returns:
        Rows ``{"grid", "median_ms", "p95_ms", "speedup", "cells_share"}``, ``speedup``
        relative to single-frame's median (NaN when no single-frame row is requested);
        ``cells_share`` (backbone only, else NaN) is :func:`cell_time_share`.
    """
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(seed)
    tv_model = torchvision.models.mobilenet_v2(width_mult=width)
    video = torch.rand(warmup + frames, 1, 3, *image_size, generator=generator)
    configs = []
    for slices, span in grids:
        grid = WindowGrid(slices, span)
        net, step = _streaming_config(task, grid, width, tv_model, fold_bn)
        configs.append({"grid": grid, "net": net, "step": step, "state": net.init_state(1, image_size), "times": []})
    with torch.no_grad():
        for t in range(warmup + frames):
            for config in configs:
                windows = torch.randint(config["grid"].num_windows, (1,), generator=generator)
                start = time.perf_counter()
                config["state"] = config["step"](video[t], windows, config["state"])
                elapsed = time.perf_counter() - start
                if t >= warmup:
                    config["times"].append(1e3 * elapsed)
    rows = []
    for config in configs:
        grid = config["grid"]
        row = {"grid": "single-frame" if grid.is_full_frame else f"M={grid.slices}, N={grid.span}"}
        summary = summarize_latency(config["times"])
        row.update(median_ms=summary["median"], p95_ms=summary["p95"])
        row["cells_share"] = (
            cell_time_share(config["net"], video[0], window=0)["share"] if task == "backbone" else float("nan")
        )
        rows.append(row)
    reference = next((r["median_ms"] for r in rows if r["grid"] == "single-frame"), float("nan"))
    for row in rows:
        row["speedup"] = reference / row["median_ms"]
    return rows


def _plain_step(tv_model: torch.nn.Module, grid: WindowGrid):
    """torchvision's plain ``mobilenet_v2().features`` (BN folded, channels-last) on the window's crop."""
    plain = fold_batchnorm(copy.deepcopy(tv_model.features).eval()).to(memory_format=torch.channels_last)

    def step(frame, windows, state):
        plain(grid.crop(frame, windows).contiguous(memory_format=torch.channels_last))
        return state

    return plain, step


def _speed_configs(image_size, width, grids, tv_model):
    """``(task, kind, grid, step, state)`` of every configuration :func:`speed_table` interleaves."""
    configs = []
    for slices, span in grids:
        grid = WindowGrid(slices, span)
        net = inference_form(StatefulMobileNetV2.from_torchvision(tv_model, grid).eval())

        def window_pass(frame, windows, state, net=net, grid=grid):
            return net(grid.crop(frame, windows), windows, state)[1]

        configs.append(("backbone", "window pass", grid, window_pass, net.init_state(1, image_size)))
        if not grid.is_full_frame:
            _, plain = _plain_step(tv_model, grid)
            configs.append(("backbone", "plain torchvision on the crop", grid, plain, None))
        for task, build in (("detection", patchwork_detector), ("segmentation", patchwork_segmenter)):
            model = inference_form(build((slices, span), width_mult=width).eval())

            def forward(frame, windows, state, model=model):
                return model.forward_raw(frame, windows, state).state

            def whole_step(frame, windows, state, model=model):
                return model(frame, windows, state).state

            if task == "detection":
                configs.append((task, "forward (no decoding)", grid, forward, model.init_state(1, image_size)))
            configs.append((task, "whole step", grid, whole_step, model.init_state(1, image_size)))
    return configs


def speed_table(
    image_size: tuple[int, int] = (384, 384),
    width: float = 1.0,
    grids: Iterable[tuple[int, int]] = ((1, 1), (4, 2), (4, 1)),
    frames: int = 30,
    warmup: int = 3,
    threads: int = 1,
    seed: int = 0,
) -> list[dict[str, object]]:
    """Per-frame CPU latency of backbone, detector and segmenter for each grid, all interleaved in one run.

    Every model is in its deployed form (:func:`~patchwork.models.inference.inference_form`:
    BatchNorm folded, 1x1 convs as matrix products, channels-last), the single-frame row
    (``WindowGrid(1, 1)``) included. Rows per task: the backbone's window pass and
    torchvision's plain MobileNetV2 (BN folded, channels-last) on a crop of the window's
    size; the detector's forward without decoding and its whole step (decoded
    predictions); the segmenter's whole step. Random weights: decoding cost is bounded by
    ``topk_candidates`` whatever the head predicts.

    Returns:
        Rows ``{"task", "kind", "grid", "median_ms", "p95_ms", "speedup", "vs_plain"}``:
        ``speedup`` is single-frame's median (same task and kind; the backbone's plain rows
        use single-frame's window pass) over the row's; ``vs_plain`` (backbone window
        passes) the row's median over the plain network's on the same crop size.
    """
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(seed)
    tv_model = torchvision.models.mobilenet_v2(width_mult=width).eval()
    video = torch.rand(warmup + frames, 1, 3, *image_size, generator=generator)
    configs = [list(c) + [[]] for c in _speed_configs(image_size, width, grids, tv_model)]
    with torch.no_grad():
        for t in range(warmup + frames):
            for config in configs:
                grid = config[2]
                windows = torch.randint(grid.num_windows, (1,), generator=generator)
                start = time.perf_counter()
                config[4] = config[3](video[t], windows, config[4])
                if t >= warmup:
                    config[5].append(1e3 * (time.perf_counter() - start))
    rows = []
    for task, kind, grid, _, _, times in configs:
        summary = summarize_latency(times)
        label = "single-frame" if grid.is_full_frame else f"M={grid.slices}, N={grid.span}"
        rows.append({"task": task, "kind": kind, "grid": label, "median_ms": summary["median"], "p95_ms": summary["p95"]})
    medians = {(r["task"], r["kind"], r["grid"]): r["median_ms"] for r in rows}
    for row in rows:
        kind = "window pass" if row["kind"].startswith("plain") else row["kind"]
        row["speedup"] = medians.get((row["task"], kind, "single-frame"), float("nan")) / row["median_ms"]
        plain = medians.get((row["task"], "plain torchvision on the crop", row["grid"]))
        row["vs_plain"] = row["median_ms"] / plain if plain and row["kind"] == "window pass" else float("nan")
    return rows
