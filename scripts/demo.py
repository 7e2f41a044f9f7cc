"""Annotated video of a checkpoint's model on a clip (``python scripts/demo.py checkpoint=PATH input=clip.mp4``)."""

from __future__ import annotations

import hydra
import torch
from omegaconf import DictConfig
from torchvision.io import write_png

from patchwork.api import annotate, load
from patchwork.data.video_io import read_video_frames


@hydra.main(version_base="1.3", config_path="../configs", config_name="demo")
def main(cfg: DictConfig) -> None:
    torch.set_num_threads(int(cfg.threads))
    model = load(cfg.checkpoint, cfg.device)
    path = annotate(model, cfg.input, hydra.utils.to_absolute_path(cfg.output), cfg.policy, cfg.window, cfg.fps,
                    score_threshold=cfg.score_threshold, flops=cfg.flops, generator_seed=cfg.seed)
    print(f"wrote {path}")
    if cfg.still is not None:
        # One frame of what was written, as a PNG (e.g. for a README), decoded back from the video.
        frame = next(frame for t, frame in enumerate(read_video_frames(path)) if t == int(cfg.still))
        still = path.with_name(f"{path.stem}_frame{int(cfg.still)}.png")
        write_png(frame if frame.dtype == torch.uint8 else (frame * 255).round().to(torch.uint8), str(still))
        print(f"wrote {still}")


if __name__ == "__main__":
    main()
