"""Annotated video of a checkpoint's model on a clip (``python scripts/demo.py checkpoint=PATH input=clip.mp4``)."""

from __future__ import annotations

import hydra
import torch
from omegaconf import DictConfig

from patchwork.api import annotate, load


@hydra.main(version_base="1.3", config_path="../configs", config_name="demo")
def main(cfg: DictConfig) -> None:
    torch.set_num_threads(int(cfg.threads))
    model = load(cfg.checkpoint, cfg.device)
    path = annotate(model, cfg.input, hydra.utils.to_absolute_path(cfg.output), cfg.policy, cfg.window, cfg.fps,
                    score_threshold=cfg.score_threshold, flops=cfg.flops, generator_seed=cfg.seed)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
