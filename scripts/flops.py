"""Print the backbone's theoretical cost table (MFLOPs per frame, max and average)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from patchwork.evaluation.cost import backbone_cost_table
from patchwork.evaluation.tables import markdown_table, write_json


@hydra.main(version_base="1.3", config_path="../configs", config_name="flops")
def main(cfg: DictConfig) -> None:
    rows = backbone_cost_table(
        image_size=tuple(cfg.image_size),
        widths=list(cfg.widths),
        grids=[tuple(g) for g in cfg.grids],
        num_frames=cfg.num_frames,
    )
    height, width = cfg.image_size
    print(f"Stateful MobileNetV2 backbone, {height}x{width} input, MFLOPs per frame (2 x multiply-adds)\n")
    print(markdown_table(rows, ["width", "grid", "windows", "mflops_max", "mflops_avg"]))
    if cfg.out:
        print(f"\nwrote {write_json(cfg.out, rows)}")


if __name__ == "__main__":
    main()
