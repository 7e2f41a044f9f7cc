"""Evaluate a checkpoint as one row of the paper's Tab. 4/5 (``python scripts/evaluate.py checkpoint=PATH``).

Writes into the run directory: ``row.json`` (every number), ``table.{md,csv,json}`` (the
row as Tab. 4/5 shows it), ``metrics.json`` (per-class AP or per-sequence J/F) and
``strip_<video>.png`` (Fig. 4: frames with the attention window and the predictions).
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from patchwork.api import load
from patchwork.data import VID_NAMES
from patchwork.evaluation.report import method_label, paper_table, save_strip, write_table
from patchwork.evaluation.streaming import build_policy, evaluate_method, to_builtin, wrap_baselines
from patchwork.evaluation.tables import write_json


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    loaded = load(cfg.checkpoint, device, grid=cfg.model.grid, cells=cfg.model.cells,
                  width_mult=cfg.model.width_mult, image_size=cfg.image_size)
    base = loaded.model
    model = wrap_baselines(base, **cfg.baseline)
    policy = build_policy(cfg.attention_policy, base.grid, cfg.window, cfg.scan_order)
    data_cfg = loaded.config["data"] if cfg.data_from_checkpoint else cfg.data
    data = instantiate(data_cfg, image_size=list(loaded.image_size))
    cells = base.backbone.cells
    width = cfg.model.width_mult if cfg.model.width_mult is not None else loaded.config["model"].get("width_mult", 1.0)
    method = cfg.method or method_label((base.grid.slices, base.grid.span), float(width), cells=cells,
                                        policy=cfg.attention_policy, **cfg.baseline)
    row, result = evaluate_method(
        model, data, policy, method, streams=cfg.streams, device=device, generator_seed=cfg.seed,
        max_videos=cfg.max_videos, num_workers=cfg.num_workers, exclude_first_last=cfg.exclude_first_last,
        latency_videos=cfg.latency.videos, latency_frames=cfg.latency.frames, fold_bn=cfg.latency.fold_bn,
        threads=cfg.latency.threads, cells=cells,
        extra={"checkpoint": str(cfg.checkpoint), "width": float(width), **cfg.baseline},
    )
    out = Path(cfg.out_dir)
    write_json(out / "row.json", row)
    write_json(out / "metrics.json", to_builtin(result.metrics(cfg.exclude_first_last)))
    table = paper_table([row])
    write_table(table, out, "table")
    dataset = data.val_clip_dataset()
    names = VID_NAMES if result.num_classes == len(VID_NAMES) else None
    for v in range(min(cfg.strips.videos, len(result.videos))):
        frames = dataset[v]["frames"][: cfg.strips.frames]
        save_strip(out / f"strip_{v:02d}.png", frames, result.window_boxes(v)[: len(frames)],
                   result.videos[v].predictions[: len(frames)], class_names=names)
    print(table.markdown())
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
