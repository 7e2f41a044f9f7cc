"""Benchmark: per-frame single-thread CPU latency of the backbone, and the cells' share of it."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from patchwork.benchmarks.patchwork_latency import latency_table
from patchwork.evaluation.tables import markdown_table, write_json


@hydra.main(version_base="1.3", config_path="../configs", config_name="benchmark_latency")
def main(cfg: DictConfig) -> None:
    rows = latency_table(
        task=cfg.task,
        image_size=tuple(cfg.image_size),
        width=cfg.width,
        grids=[tuple(g) for g in cfg.grids],
        frames=cfg.frames,
        warmup=cfg.warmup,
        threads=cfg.threads,
        seed=cfg.seed,
        fold_bn=cfg.fold_bn,
    )
    height, width = cfg.image_size
    print(
        f"{cfg.task} (width {cfg.width}), {height}x{width}, {cfg.threads} thread(s), "
        f"{cfg.frames} frames per configuration, interleaved\n"
    )
    for row in rows:
        row["cells_share"] = "-" if row["cells_share"] != row["cells_share"] else f"{100 * row['cells_share']:.1f}%"
        row["speedup"] = f"{row['speedup']:.2f}x"
    print(markdown_table(rows, ["grid", "median_ms", "p95_ms", "speedup", "cells_share"], floats=".2f"))
    if cfg.out:
        print(f"\nwrote {write_json(cfg.out, rows)}")


if __name__ == "__main__":
    main()
