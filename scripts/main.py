"""The main job: train all three stages and evaluate the paper's comparisons (``python scripts/main.py``)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from patchwork.main_job import run_main_job


@hydra.main(version_base="1.3", config_path="../configs", config_name="main")
def main(cfg: DictConfig) -> None:
    run_main_job(cfg)


if __name__ == "__main__":
    main()
