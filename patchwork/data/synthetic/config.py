"""Sizes and locations of the built-in synthetic dataset."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from patchwork.data.index_cache import CACHE_ENV, data_cache_root

__all__ = ["CACHE_ENV", "GENERATOR_VERSION", "SyntheticDataConfig", "SyntheticDataPaths", "default_cache_dir"]

#: Bump when the generator's output changes for the same config: old caches are then ignored.
GENERATOR_VERSION = 2



@dataclass(frozen=True)
class SyntheticDataConfig:
    """What the synthetic generator writes. Frame sizes are ``(H, W)``; frame counts are
    ``(min, max)`` per video; ``object_scale`` scales every object's size range.

    The defaults generate in well under a minute on one core.
    """

    seed: int = 0
    vid_train_videos: int = 32
    vid_val_videos: int = 8
    vid_frames: tuple[int, int] = (32, 48)
    vid_frame_size: tuple[int, int] = (240, 320)
    davis_train_videos: int = 15
    davis_val_videos: int = 10
    davis_frames: tuple[int, int] = (30, 40)
    davis_frame_size: tuple[int, int] = (216, 384)
    coco_images: int = 300
    voc_images: int = 150
    still_size: tuple[int, int] = (240, 320)
    max_objects: int = 6
    object_scale: float = 1.0
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        # Hydra hands over ListConfigs; normalise so the config hashes and compares by value.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float, str)):
                object.__setattr__(self, f.name, tuple(int(v) for v in value))
        for name in ("vid_frames", "davis_frames"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"{name} must be (min, max) with 1 <= min <= max, got {(lo, hi)}")

    def key(self) -> str:
        """A short hash of the config and generator version: the cache sub-directory name."""
        text = json.dumps({"version": GENERATOR_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class SyntheticDataPaths:
    """Where each synthetic set lives, in its real layout."""

    root: Path

    @property
    def vid_root(self) -> Path:
        """The ``ILSVRC2015`` directory of the VID-style set."""
        return self.root / "ILSVRC2015"

    @property
    def davis_root(self) -> Path:
        """The ``DAVIS`` directory of the DAVIS-style set."""
        return self.root / "DAVIS"

    @property
    def coco_image_dir(self) -> Path:
        """COCO-style images."""
        return self.root / "coco" / "train2017"

    @property
    def coco_annotation_file(self) -> Path:
        """COCO-style instances JSON."""
        return self.root / "coco" / "annotations" / "instances_train2017.json"

    @property
    def voc_root(self) -> Path:
        """The ``VOCdevkit`` directory (year ``VOC_YEAR``)."""
        return self.root / "VOCdevkit"

    VOC_YEAR = "2012"


def default_cache_dir() -> Path:
    """``$PATCHWORK_DATA_CACHE/synthetic`` if set, else ``./data_cache/synthetic``."""
    return data_cache_root() / "synthetic"
