"""The built-in synthetic dataset: the default data everywhere, no download needed.

A deterministic generator (:func:`ensure_synthetic_data`) writes, in the real layouts, a
VID-style video set, a DAVIS-style video set, and COCO- and VOC-style still sets; the task-data
builders below read them back through the same readers as the real datasets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from patchwork.data.coco import CocoStills
from patchwork.data.davis import Davis2016
from patchwork.data.fake_video import FakeVideoSynthesizer
from patchwork.data.imagenet_vid import ImageNetVID
from patchwork.data.synthetic.config import SyntheticDataConfig, SyntheticDataPaths, default_cache_dir
from patchwork.data.synthetic.generate import ensure_synthetic_data, generate_synthetic_data
from patchwork.data.task_data import VideoTaskData
from patchwork.data.voc import VocStills

__all__ = [
    "SyntheticDataConfig", "SyntheticDataPaths", "default_cache_dir", "ensure_synthetic_data",
    "generate_synthetic_data", "synthetic_detection_data", "synthetic_segmentation_data",
]


def synthetic_detection_data(cache_dir: str | Path | None = None, generator: SyntheticDataConfig | None = None,
                             fake_video: FakeVideoSynthesizer | None = None, image_size: Sequence[int] = (128, 128),
                             clip_length: int = 8, still_fraction: float = 0.5, frame_step: int = 1,
                             samples_per_epoch: int | None = None, augment: bool = True, seed: int = 0,
                             strict: bool = False) -> VideoTaskData:
    """Detection data on the synthetic sets: VID-style train/val videos, COCO- and VOC-style
    stills (boxes) for fake videos. Generates the sets on first use; the other arguments are
    :class:`~patchwork.data.VideoTaskData`'s."""
    paths = ensure_synthetic_data(cache_dir, generator)
    return VideoTaskData(
        train_videos=ImageNetVID(paths.vid_root, "train", strict=strict),
        val_videos=ImageNetVID(paths.vid_root, "val", strict=strict),
        still_images=[CocoStills(paths.coco_annotation_file, paths.coco_image_dir, strict=strict),
                      VocStills(paths.voc_root, paths.VOC_YEAR, "trainval", strict=strict)],
        fake_video=fake_video, image_size=image_size, clip_length=clip_length, still_fraction=still_fraction,
        frame_step=frame_step, samples_per_epoch=samples_per_epoch, augment=augment, seed=seed, strict=strict)


def synthetic_segmentation_data(cache_dir: str | Path | None = None, generator: SyntheticDataConfig | None = None,
                                fake_video: FakeVideoSynthesizer | None = None,
                                image_size: Sequence[int] = (128, 128), clip_length: int = 8,
                                still_fraction: float = 0.5, frame_step: int = 1,
                                samples_per_epoch: int | None = None, augment: bool = True, seed: int = 0,
                                strict: bool = False) -> VideoTaskData:
    """Segmentation data on the synthetic sets: DAVIS-style train/val videos, COCO- and
    VOC-style stills with foreground masks for fake videos."""
    paths = ensure_synthetic_data(cache_dir, generator)
    return VideoTaskData(
        train_videos=Davis2016(paths.davis_root, "train", strict=strict),
        val_videos=Davis2016(paths.davis_root, "val", strict=strict),
        still_images=[CocoStills(paths.coco_annotation_file, paths.coco_image_dir, with_masks=True, strict=strict),
                      VocStills(paths.voc_root, paths.VOC_YEAR, "trainval", with_masks=True, strict=strict)],
        fake_video=fake_video, image_size=image_size, clip_length=clip_length, still_fraction=still_fraction,
        frame_step=frame_step, samples_per_epoch=samples_per_epoch, augment=augment, seed=seed, strict=strict)
