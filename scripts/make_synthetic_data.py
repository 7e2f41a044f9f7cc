"""Generate the built-in synthetic dataset, print its statistics and save preview strips.

    python scripts/make_synthetic_data.py                       # defaults: configs/make_synthetic_data.yaml
    python scripts/make_synthetic_data.py generator.vid_train_videos=64 out_dir=previews
"""

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from patchwork.data.synthetic.report import make_synthetic_data


@hydra.main(version_base="1.3", config_path="../configs", config_name="make_synthetic_data")
def main(cfg: DictConfig) -> None:
    make_synthetic_data(
        out_dir=cfg.out_dir or HydraConfig.get().runtime.output_dir,
        cache_dir=cfg.cache_dir,
        generator=instantiate(cfg.generator),
        fake_video=instantiate(cfg.fake_video),
        num_preview_clips=cfg.num_preview_clips,
        clip_length=cfg.clip_length,
        image_size=tuple(cfg.image_size),
        fake_video_benchmark_clips=cfg.fake_video_benchmark_clips,
        seed=cfg.seed,
    )


if __name__ == "__main__":
    main()
