"""Dataset records, per-frame targets, lazy image/mask loading and bad-data accounting.

A *record* is what a reader indexes: paths and small annotations, no pixels. Pixels are decoded
on demand (:func:`load_image`, :class:`MaskSource.load`), so a reader over a million frames costs
memory only for boxes.

Per-frame target (the contract every reader and sampler keeps), in original pixel coordinates
until a transform resizes it:

- ``boxes``: float32 ``(K, 4)`` xyxy, continuous pixel coordinates (pixel ``i`` covers ``[i, i+1)``)
- ``labels``: int64 ``(K,)`` VID class indices ``0..29``
- ``track_ids``: int64 ``(K,)``, ``-1`` where the dataset has no identities
- ``mask`` (segmentation data only): bool ``(H, W)`` binary foreground

``K = 0`` is a valid frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch
from pycocotools import mask as coco_mask
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image, read_file

logger = logging.getLogger("patchwork.data")

Target = dict[str, Tensor]

#: Per-object flags a :class:`VideoRecord` keeps beside its boxes when every target has them.
BOX_FLAGS = ("occluded", "generated")


class DatasetLayoutError(FileNotFoundError):
    """A dataset root (or a file every layout needs) is missing; the message names the path and
    the expected layout."""

    def __init__(self, dataset: str, path: str | Path, layout: str) -> None:
        super().__init__(f"{dataset}: not found: {path}\nExpected layout:\n{layout}")
        self.path = Path(path)


class CorruptDataError(RuntimeError):
    """One file (image, XML, PNG) could not be read or parsed."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"corrupt or unreadable file {path}: {reason}")
        self.path = Path(path)
        self.reason = reason


@dataclass
class BadDataLog:
    """Counts and logs skipped files; with ``strict=True`` raises instead of skipping.

    Counts are per process: a DataLoader worker keeps its own.
    """

    strict: bool = False
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def count(self) -> int:
        """How many files were skipped."""
        return len(self.skipped)

    def skip(self, error: CorruptDataError) -> None:
        """Record ``error`` (log a warning with its path), or re-raise it when strict."""
        if self.strict:
            raise error
        self.skipped.append((str(error.path), error.reason))
        logger.warning("skipping corrupt file %s (%s); %d skipped so far", error.path, error.reason, self.count)


def empty_target() -> Target:
    """A frame with no objects: ``boxes (0, 4)``, ``labels (0,)``, ``track_ids (0,)``."""
    return {
        "boxes": torch.zeros((0, 4), dtype=torch.float32),
        "labels": torch.zeros((0,), dtype=torch.int64),
        "track_ids": torch.zeros((0,), dtype=torch.int64),
    }


def make_target(boxes: Sequence[Sequence[float]] | np.ndarray | Tensor, labels: Sequence[int] | Tensor,
                track_ids: Sequence[int] | Tensor | None = None) -> Target:
    """Build a target dict with the contract's dtypes and shapes (``track_ids`` default ``-1``)."""
    boxes_t = torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
    labels_t = torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1))
    if track_ids is None:
        track_ids_t = torch.full_like(labels_t, -1)
    else:
        track_ids_t = torch.as_tensor(np.asarray(track_ids, dtype=np.int64).reshape(-1))
    if not (len(boxes_t) == len(labels_t) == len(track_ids_t)):
        raise ValueError(f"boxes/labels/track_ids disagree: {len(boxes_t)}, {len(labels_t)}, {len(track_ids_t)}")
    return {"boxes": boxes_t, "labels": labels_t, "track_ids": track_ids_t}


def load_image(path: str | Path) -> Tensor:
    """Decode a JPEG/PNG to uint8 ``(3, H, W)`` RGB; ``CorruptDataError`` if it cannot be read."""
    try:
        return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
    except (RuntimeError, OSError, ValueError) as e:
        raise CorruptDataError(path, str(e).splitlines()[0] if str(e) else type(e).__name__) from e


def _load_png_indices(path: Path) -> Tensor:
    """A PNG's raw values ``(H, W)`` uint8: palette indices for palette PNGs, gray levels
    otherwise (torchvision keeps palette indices with ``ImageReadMode.UNCHANGED``); RGB PNGs
    are reduced to "any channel non-zero" * 255."""
    try:
        png = decode_image(read_file(str(path)), mode=ImageReadMode.UNCHANGED)
    except (RuntimeError, OSError, ValueError) as e:
        raise CorruptDataError(path, str(e).splitlines()[0] if str(e) else type(e).__name__) from e
    if png.shape[0] == 1:
        return png[0]
    return png[:3].amax(dim=0)


class MaskSource(Protocol):
    """Something that decodes one frame's binary foreground mask on demand."""

    def load(self) -> Tensor:
        """The mask, bool ``(H, W)``."""
        ...


@dataclass(frozen=True)
class BinaryPngMask:
    """A PNG where every non-zero value is foreground: DAVIS 2016 (0/255) and the DAVIS 2017
    release's palette masks (object ids ``1..N``) alike."""

    path: str

    def load(self) -> Tensor:
        """bool ``(H, W)``."""
        return _load_png_indices(Path(self.path)) > 0


@dataclass(frozen=True)
class VocObjectMask:
    """A Pascal VOC ``SegmentationObject`` palette PNG: ``0`` background, ``1..N`` object
    instances, ``255`` the void band around object boundaries (counted as background)."""

    path: str

    def load(self) -> Tensor:
        """bool ``(H, W)``."""
        values = _load_png_indices(Path(self.path))
        return (values > 0) & (values < 255)


@dataclass(frozen=True)
class CocoMask:
    """The union of COCO instance segmentations (polygons or RLE) of one image."""

    segmentations: tuple
    height: int
    width: int

    def load(self) -> Tensor:
        """bool ``(H, W)``; all-false when there are no segmentations."""
        if not self.segmentations:
            return torch.zeros((self.height, self.width), dtype=torch.bool)
        rles = []
        for segm in self.segmentations:
            if isinstance(segm, list):  # polygons
                rles.extend(coco_mask.frPyObjects(segm, self.height, self.width))
            elif isinstance(segm.get("counts"), list):  # uncompressed RLE
                rles.append(coco_mask.frPyObjects(segm, self.height, self.width))
            else:
                rles.append(segm)
        merged = coco_mask.merge(rles, intersect=False)
        return torch.from_numpy(coco_mask.decode(merged).astype(bool))


@dataclass
class StillImageRecord:
    """One still image (COCO, VOC) for fake videos and stage-1 training.

    ``target`` is in the image's pixel coordinates; ``mask`` decodes the foreground on demand
    (``None`` for box-only data).
    """

    name: str
    image_path: str
    target: Target
    mask: MaskSource | None = None

    def load(self) -> tuple[Tensor, Target]:
        """Decode the image, uint8 ``(3, H, W)``, and its target (with ``mask`` when available)."""
        image = load_image(self.image_path)
        return image, _with_mask(image, self.target, self.mask)


@dataclass
class VideoRecord:
    """One video (a VID snippet, a DAVIS sequence, a synthetic clip): frame paths and per-frame
    annotations, stored compactly so that a million frames stay cheap.

    Boxes of all frames live in one ``(N, 4)`` tensor; frame ``i`` owns rows
    ``frame_offsets[i]:frame_offsets[i + 1]``. ImageNet VID's per-object ``occluded`` and
    ``generated`` flags, bool ``(N,)`` aligned with ``boxes``, are kept when the reader has them
    (:meth:`box_flags`); they are not part of the per-frame target.
    """

    name: str
    frame_paths: list[str]
    boxes: Tensor
    labels: Tensor
    track_ids: Tensor
    frame_offsets: Tensor
    masks: list[MaskSource] | None = None
    occluded: Tensor | None = None
    generated: Tensor | None = None

    @classmethod
    def from_targets(cls, name: str, frame_paths: Sequence[str], targets: Sequence[Target],
                     masks: Sequence[MaskSource] | None = None) -> "VideoRecord":
        """Pack per-frame targets (``len(targets) == len(frame_paths)``) into a record."""
        if len(targets) != len(frame_paths) or (masks is not None and len(masks) != len(frame_paths)):
            raise ValueError(f"{name}: {len(frame_paths)} frames but {len(targets)} targets")
        counts = torch.tensor([len(t["boxes"]) for t in targets], dtype=torch.int64)
        offsets = torch.zeros(len(targets) + 1, dtype=torch.int64)
        offsets[1:] = torch.cumsum(counts, 0)
        packed = {key: torch.cat([empty_target()[key]] + [t[key] for t in targets])
                  for key in ("boxes", "labels", "track_ids")}
        flags = {key: torch.cat([torch.zeros(0, dtype=torch.bool)] + [t[key].bool() for t in targets])
                 for key in BOX_FLAGS if targets and all(key in t for t in targets)}
        return cls(name=name, frame_paths=list(frame_paths), boxes=packed["boxes"].float(),
                   labels=packed["labels"].long(), track_ids=packed["track_ids"].long(), frame_offsets=offsets,
                   masks=None if masks is None else list(masks), occluded=flags.get("occluded"),
                   generated=flags.get("generated"))

    def __len__(self) -> int:
        return len(self.frame_paths)

    def target(self, index: int) -> Target:
        """Boxes, labels and track ids of frame ``index`` (no mask; see :meth:`load_frame`)."""
        lo, hi = int(self.frame_offsets[index]), int(self.frame_offsets[index + 1])
        return {"boxes": self.boxes[lo:hi].clone(), "labels": self.labels[lo:hi].clone(),
                "track_ids": self.track_ids[lo:hi].clone()}

    def box_flags(self, index: int) -> dict[str, Tensor]:
        """The per-object flags of frame ``index`` the reader kept: ``occluded`` / ``generated``
        bool ``(K,)`` for ImageNet VID (aligned with :meth:`target`'s boxes), else ``{}``."""
        lo, hi = int(self.frame_offsets[index]), int(self.frame_offsets[index + 1])
        return {key: flags[lo:hi].clone() for key, flags in (("occluded", self.occluded),
                                                               ("generated", self.generated)) if flags is not None}

    @property
    def targets(self) -> list[Target]:
        """All frames' targets (no masks), one dict per frame."""
        return [self.target(i) for i in range(len(self))]

    def load_frame(self, index: int) -> tuple[Tensor, Target]:
        """Decode frame ``index``: uint8 ``(3, H, W)`` and its target (with ``mask`` for
        segmentation data). ``CorruptDataError`` if the image or mask cannot be read."""
        image = load_image(self.frame_paths[index])
        return image, _with_mask(image, self.target(index), None if self.masks is None else self.masks[index])


def _with_mask(image: Tensor, target: Target, mask_source: MaskSource | None) -> Target:
    if mask_source is None:
        return target
    mask = mask_source.load()
    if tuple(mask.shape) != tuple(image.shape[-2:]):
        raise CorruptDataError(getattr(mask_source, "path", "<mask>"),
                               f"mask size {tuple(mask.shape)} != image size {tuple(image.shape[-2:])}")
    return {**target, "mask": mask}
