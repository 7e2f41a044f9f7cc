"""Look at the data: dataset statistics and PNG strips of clips with boxes and masks drawn."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

from torch import Tensor
from torchvision.io import write_png

from patchwork.data.classes import VID_NAMES
from patchwork.data.records import MaskSource, StillImageRecord, Target, VideoRecord
from patchwork.render import GROUND_TRUTH_COLOR, draw_boxes, draw_mask, hstack

#: Object-size bins, by ``sqrt(box area)`` in original pixels (COCO's small/medium/large split
#: at 32 and 96 falls on bin edges).
SIZE_BINS = (0, 8, 16, 32, 64, 96, 128, math.inf)


def _size_bin_label(lo: float, hi: float) -> str:
    return f"[{lo:g}, {hi:g})" if hi != math.inf else f">= {lo:g}"


def box_statistics(targets: Sequence[Target]) -> dict[str, Any]:
    """Objects per VID class and a histogram of object sizes (``sqrt(area)`` px, bins
    :data:`SIZE_BINS`) over ``targets``."""
    per_class: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for target in targets:
        boxes = target["boxes"]
        per_class.update(VID_NAMES[int(label)] for label in target["labels"])
        side = ((boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)).sqrt()
        for s in side.tolist():
            k = next(i for i in range(len(SIZE_BINS) - 1) if SIZE_BINS[i] <= s < SIZE_BINS[i + 1])
            sizes[_size_bin_label(SIZE_BINS[k], SIZE_BINS[k + 1])] += 1
    ordered_sizes = {_size_bin_label(lo, hi): sizes.get(_size_bin_label(lo, hi), 0)
                     for lo, hi in zip(SIZE_BINS[:-1], SIZE_BINS[1:])}
    return {"objects_per_class": dict(sorted(per_class.items())), "object_size_histogram": ordered_sizes}


#: Foreground-fraction bins of the mask histogram.
FOREGROUND_BINS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0001)


def mask_statistics(masks: Iterable[MaskSource]) -> dict[str, Any]:
    """Mean foreground fraction and a histogram of per-frame foreground fractions (bins
    :data:`FOREGROUND_BINS`); decodes every mask."""
    fractions = [float(m.load().float().mean()) for m in masks]
    bins = range(len(FOREGROUND_BINS) - 1)
    counts = Counter(next(i for i in bins if FOREGROUND_BINS[i] <= f < FOREGROUND_BINS[i + 1]) for f in fractions)
    histogram = {f"[{lo:g}, {min(hi, 1):g}{']' if hi > 1 else ')'}": counts.get(i, 0)
                 for i, (lo, hi) in enumerate(zip(FOREGROUND_BINS[:-1], FOREGROUND_BINS[1:]))}
    return {"mean_foreground_fraction": round(sum(fractions) / max(len(fractions), 1), 4),
            "foreground_fraction_histogram": histogram}


def video_set_statistics(videos: Sequence[VideoRecord]) -> dict[str, Any]:
    """Videos, frames, frames with no box, objects per class and object sizes of a video set;
    for segmentation sets, the foreground fractions of the masks."""
    targets = [t for v in videos for t in v.targets]
    stats: dict[str, Any] = {"videos": len(videos), "frames": len(targets),
                             "frames_without_boxes": sum(len(t["boxes"]) == 0 for t in targets)}
    if any(t["labels"].numel() for t in targets):
        stats.update(box_statistics(targets))
    if any(v.masks for v in videos):
        stats.update(mask_statistics(m for v in videos for m in (v.masks or [])))
    return stats


def still_set_statistics(stills: Sequence[StillImageRecord]) -> dict[str, Any]:
    """Images, objects per class and object sizes of a still-image set (and mask foreground
    fractions when it has masks)."""
    stats: dict[str, Any] = {"images": len(stills), **box_statistics([s.target for s in stills])}
    if any(s.mask is not None for s in stills):
        stats.update(mask_statistics(s.mask for s in stills if s.mask is not None))
    return stats


def format_statistics(name: str, stats: dict) -> str:
    """A few human-readable lines."""
    head = ", ".join(f"{k} {v}" for k, v in stats.items() if not isinstance(v, dict))
    lines = [f"{name}: {head}"]
    for key in ("objects_per_class", "object_size_histogram", "foreground_fraction_histogram"):
        if stats.get(key):
            lines.append(f"  {key.replace('_', ' ')}: " + ", ".join(f"{k} {v}" for k, v in stats[key].items()))
    return "\n".join(lines)


def draw_frame(image: Tensor, target: Target) -> Tensor:
    """``image`` uint8 ``(3, H, W)`` with its annotations drawn: the mask (green) and the boxes
    (yellow, the ground-truth colour of :mod:`patchwork.render`) captioned ``class:track id``."""
    out = image
    if "mask" in target and bool(target["mask"].any()):
        out = draw_mask(out, target["mask"], alpha=0.45)
    if len(target["boxes"]):
        names = [f"{VID_NAMES[int(l)]}:{int(t)}" for l, t in zip(target["labels"], target["track_ids"])]
        out = draw_boxes(out, target["boxes"], names, GROUND_TRUTH_COLOR, width=1)
    return out


def clip_strip(frames: Tensor, targets: Sequence[Target], gap: int = 2) -> Tensor:
    """Frames ``(T, 3, H, W)`` with annotations drawn, side by side: uint8 ``(3, H, T*(W+gap)-gap)``."""
    return hstack([draw_frame(frame, target) for frame, target in zip(frames, targets)], gap)


def save_clip_strip(frames: Tensor, targets: Sequence[Target], path: str | Path) -> Path:
    """Write :func:`clip_strip` as a PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(clip_strip(frames, targets), str(path))
    return path
