"""Benchmark: per-frame single-thread CPU latency, interleaved in one run.

``task=all`` (default): backbone window passes beside torchvision's plain MobileNetV2 on a crop
of the same size, detector forward and whole step, segmenter whole step, each against
single-frame in its deployed form (:func:`~patchwork.benchmarks.patchwork_latency.speed_table`).
``task=backbone|detection|segmentation``: one task per grid, and the backbone cells' share.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from patchwork.benchmarks.patchwork_latency import latency_table, speed_table
from patchwork.evaluation.tables import markdown_table, write_json


def _ratio(value: float) -> str:
    return "-" if value != value else f"{value:.2f}x"


@hydra.main(version_base="1.3", config_path="../configs", config_name="benchmark_latency")
def main(cfg: DictConfig) -> None:
    height, width = cfg.image_size
    grids = [tuple(g) for g in cfg.grids]
    if cfg.task == "all":
        rows = speed_table(
            image_size=(height, width), width=cfg.width, grids=grids, frames=cfg.frames, warmup=cfg.warmup,
            threads=cfg.threads, seed=cfg.seed,
        )
        columns = ["task", "kind", "grid", "median_ms", "p95_ms", "speedup", "vs_plain"]
        shown = [{**row, "speedup": _ratio(row["speedup"]), "vs_plain": _ratio(row["vs_plain"])} for row in rows]
    else:
        rows = latency_table(
            task=cfg.task, image_size=(height, width), width=cfg.width, grids=grids, frames=cfg.frames,
            warmup=cfg.warmup, threads=cfg.threads, seed=cfg.seed, fold_bn=cfg.fold_bn,
        )
        columns = ["grid", "median_ms", "p95_ms", "speedup", "cells_share"]
        shown = [
            {**row, "speedup": _ratio(row["speedup"]),
             "cells_share": "-" if row["cells_share"] != row["cells_share"] else f"{100 * row['cells_share']:.1f}%"}
            for row in rows
        ]
    print(
        f"{cfg.task} (width {cfg.width}), {height}x{width}, {cfg.threads} thread(s), "
        f"{cfg.frames} frames per configuration, interleaved\n"
    )
    print(markdown_table(shown, columns, floats=".2f"))
    if cfg.out:
        print(f"\nwrote {write_json(cfg.out, rows)}")


if __name__ == "__main__":
    main()
