"""Evaluate a checkpoint as one row of the paper's Tab. 4/5 (``python scripts/evaluate.py checkpoint=PATH``).

Writes into the run directory: ``row.json`` (every number), ``table.{md,csv,json}`` (the
row as Tab. 4/5 shows it), ``metrics.json`` (per-class AP or per-sequence J/F) and
``strip_<video>.png`` (Fig. 4: frames with what the method chose, e.g. the attention window,
and the predictions).
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from patchwork.api import load
from patchwork.data import VID_NAMES
from patchwork.evaluation.report import paper_table, save_strip, write_table
from patchwork.evaluation.rows import evaluate_method, method_label, to_builtin
from patchwork.evaluation.tables import write_json
from patchwork.models import wrap_baselines
from patchwork.policies import build_policy


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    loaded = load(cfg.checkpoint, device, image_size=cfg.image_size, **cfg.model)
    model = wrap_baselines(loaded.model, **cfg.baseline)
    policy = build_policy(cfg.attention_policy, model.action_space, cfg.window, cfg.scan_order)
    data_cfg = loaded.config["data"] if cfg.data_from_checkpoint else cfg.data
    data = instantiate(data_cfg, image_size=list(loaded.image_size))
    row, result = evaluate_method(
        model, data, policy, cfg.method or method_label(model, policy), streams=cfg.streams, device=device,
        generator_seed=cfg.seed, max_videos=cfg.max_videos, num_workers=cfg.num_workers,
        exclude_first_last=cfg.exclude_first_last, latency_videos=cfg.latency.videos,
        latency_frames=cfg.latency.frames, fold_bn=cfg.latency.fold_bn, threads=cfg.latency.threads,
        extra={"checkpoint": str(cfg.checkpoint), **cfg.baseline},
    )
    out = Path(cfg.out_dir)
    write_json(out / "row.json", row)
    write_json(out / "metrics.json", to_builtin(result.metrics(cfg.exclude_first_last)))
    table = paper_table([row])
    write_table(table, out, "table")
    dataset = data.val_clip_dataset()
    names = VID_NAMES if result.num_classes == len(VID_NAMES) else None
    height, width = result.image_size
    for v in range(min(cfg.strips.videos, len(result.videos))):
        frames = dataset[v]["frames"][: cfg.strips.frames]
        actions = result.videos[v].actions
        boxes = torch.tensor([
            model.action_overlay(actions[t], result.image_size).get("box", (0, 0, width, height)) if actions is not None
            else (0, 0, width, height) for t in range(len(frames))
        ], dtype=torch.float32)
        save_strip(out / f"strip_{v:02d}.png", frames, boxes, result.videos[v].predictions[: len(frames)],
                   class_names=names)
    print(table.markdown())
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
