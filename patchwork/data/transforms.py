"""Resizing and augmentation with torchvision transforms v2, boxes and masks kept consistent.

Every sample leaves the data pipeline at a fixed ``image_size = (H, W)`` (the models need sides
divisible by ``M * 32``, Sec. 3.1). Boxes travel as ``tv_tensors.BoundingBoxes`` and masks as
``tv_tensors.Mask`` through the same transform call as the pixels, so v2 applies one set of random
parameters to all of them. Outputs are converted back to plain tensors with the contract's dtypes
(:mod:`patchwork.data.records`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

from patchwork.data.records import Target

#: ImageNet mean in uint8, the fill of zoom-out borders.
_MEAN_FILL = (124, 116, 104)

FrameTransform = Callable[[tv_tensors.Image, dict], tuple[tv_tensors.Image, dict]]


def check_image_size(image_size: Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` as ints; ``ValueError`` unless both are positive."""
    if len(image_size) != 2 or min(int(s) for s in image_size) <= 0:
        raise ValueError(f"image_size must be (H, W) with positive sides, got {tuple(image_size)}")
    return int(image_size[0]), int(image_size[1])


def to_tv(image: Tensor, target: Target) -> tuple[tv_tensors.Image, dict]:
    """Wrap a uint8 ``(3, H, W)`` image and its target in tv_tensors (masks as uint8)."""
    canvas = tuple(image.shape[-2:])
    out = dict(target)
    out["boxes"] = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=canvas)
    if "mask" in target:
        out["mask"] = tv_tensors.Mask(target["mask"].to(torch.uint8))
    return tv_tensors.Image(image), out


def from_tv(image: Tensor, target: dict) -> tuple[Tensor, Target]:
    """Unwrap tv_tensors back to plain tensors: uint8 image, float32 boxes, bool mask."""
    out = dict(target)
    out["boxes"] = target["boxes"].as_subclass(Tensor).to(torch.float32).reshape(-1, 4)
    if "mask" in target:
        out["mask"] = target["mask"].as_subclass(Tensor) > 0
    return image.as_subclass(Tensor), out


def _labels_and_track_ids(inputs: tuple) -> tuple[Tensor, Tensor]:
    # SanitizeBoundingBoxes drops degenerate boxes and must drop their labels and ids with them.
    target = inputs[1]
    return target["labels"], target["track_ids"]


def train_transform(image_size: Sequence[int], hflip_p: float = 0.5, photometric_p: float = 0.5,
                    zoom_out_p: float = 0.0, zoom_out_max: float = 2.0) -> v2.Compose:
    """Stage-1 augmentation: optional zoom-out (smaller objects), resize to ``image_size``,
    photometric distortion, horizontal flip. Called as ``t(tv_image, tv_target)``.

    The photometric distortion runs after the resize: its colour-space conversions are per pixel,
    so on the (usually smaller) output they cost a fraction (on 240x320 frames resized to 128x128
    they were 40% of a stage-1 sample's loading time)."""
    steps: list[v2.Transform] = []
    if zoom_out_p > 0:
        steps.append(v2.RandomZoomOut(fill={tv_tensors.Image: _MEAN_FILL, "others": 0},
                                      side_range=(1.0, zoom_out_max), p=zoom_out_p))
    steps += [
        v2.Resize(check_image_size(image_size), antialias=True),
        v2.RandomPhotometricDistort(p=photometric_p),
        v2.RandomHorizontalFlip(p=hflip_p),
        v2.SanitizeBoundingBoxes(min_size=1.0, labels_getter=_labels_and_track_ids),
    ]
    return v2.Compose(steps)


def eval_transform(image_size: Sequence[int]) -> v2.Compose:
    """Resize to ``image_size`` only (validation, evaluation)."""
    return v2.Compose([v2.Resize(check_image_size(image_size), antialias=True)])


def apply_frame_transform(transform: FrameTransform, image: Tensor, target: Target) -> tuple[Tensor, Target]:
    """Run a v2 transform on one uint8 ``(3, H, W)`` image and its target; plain tensors out."""
    tv_image, tv_target = transform(*to_tv(image, target))
    return from_tv(tv_image, tv_target)


def transform_clip(frames: Tensor, targets: Sequence[Target], image_size: Sequence[int],
                   hflip: bool = False) -> tuple[Tensor, list[Target]]:
    """Resize a clip (and optionally mirror it) with one set of parameters for every frame.

    Args:
        frames: uint8 ``(T, 3, H, W)``, all frames the same size.
        targets: ``T`` per-frame targets in the frames' pixel coordinates.
        image_size: output ``(H', W')``.
        hflip: mirror every frame (the caller draws this once per clip so motion stays coherent).

    Returns frames uint8 ``(T, 3, H', W')`` and the ``T`` targets in output pixels.
    """
    size = check_image_size(image_size)
    video = tv_tensors.Video(frames)
    tv_targets = [to_tv(frames[0], t)[1] for t in targets]
    steps: list[v2.Transform] = [v2.Resize(size, antialias=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip(p=1.0))
    video, tv_targets = v2.Compose(steps)(video, tv_targets)
    return video.as_subclass(Tensor), [from_tv(frames[0], t)[1] for t in tv_targets]

