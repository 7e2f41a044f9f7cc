"""Train Patchwork: stage 1, 2 and 3 of Sec. 3.4 (``python scripts/train.py experiment=quick``).

Under ``torchrun --nproc_per_node=N scripts/train.py ...`` every rank trains on its own
shard of the data and rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig

from patchwork.engine.train import train


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> None:
    summary = train(cfg)
    print(json.dumps(summary, indent=2, default=float))


if __name__ == "__main__":
    main()
