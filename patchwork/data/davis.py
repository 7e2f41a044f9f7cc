"""DAVIS 2016 reader (paper Sec. 4.2): unsupervised binary video object segmentation.

Layout (``root`` is the ``DAVIS`` directory)::

    JPEGImages/480p/<sequence>/00000.jpg, 00001.jpg, ...
    Annotations/480p/<sequence>/00000.png, ...         (0 background, 255 foreground)
    ImageSets/480p/{train,val}.txt                     (DAVIS 2016 release)
    ImageSets/2016/{train,val}.txt                     (DAVIS 2017 release)

List lines are either sequence names (``bear``, the 2017 release) or frame paths
(``/JPEGImages/480p/bear/00000.jpg /Annotations/480p/bear/00000.png``, the 2016 release); the
sequence name is taken from either. Without any list, the official 30/20 split below is used.
Every non-zero mask value is foreground, so the 2017 release's multi-object palette masks read
as the union of their objects. Targets have no boxes (``K = 0``) and a ``mask``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from patchwork.data.index_cache import InputWatch, cached_videos
from patchwork.data.records import (BadDataLog, BinaryPngMask, CorruptDataError, DatasetLayoutError, VideoRecord,
                                    empty_target)

logger = logging.getLogger("patchwork.data")

DAVIS_LAYOUT = """\
  <root>/JPEGImages/480p/<sequence>/00000.jpg, ...
  <root>/Annotations/480p/<sequence>/00000.png, ...   (0/255)
  <root>/ImageSets/480p/{train,val}.txt or <root>/ImageSets/2016/{train,val}.txt"""

#: The official DAVIS 2016 split: 30 training and 20 validation sequences.
DAVIS2016_TRAIN = (
    "bear", "bmx-bumps", "boat", "breakdance-flare", "bus", "car-turn", "dance-jump", "dog-agility",
    "drift-turn", "elephant", "flamingo", "hike", "hockey", "horsejump-low", "kite-walk", "lucia",
    "mallard-fly", "mallard-water", "motocross-bumps", "motorbike", "paragliding", "rhino", "rollerblade",
    "scooter-gray", "soccerball", "stroller", "surf", "swing", "tennis", "train",
)
DAVIS2016_VAL = (
    "blackswan", "bmx-trees", "breakdance", "camel", "car-roundabout", "car-shadow", "cows", "dance-twirl",
    "dog", "drift-chicane", "drift-straight", "goat", "horsejump-high", "kite-surf", "libby",
    "motocross-jump", "paragliding-launch", "parkour", "scooter-black", "soapbox",
)

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def parse_davis_image_set_line(line: str) -> str | None:
    """The sequence a DAVIS list line names (``None`` for blank lines).

    >>> parse_davis_image_set_line("/JPEGImages/480p/bear/00000.jpg /Annotations/480p/bear/00000.png")
    'bear'
    >>> parse_davis_image_set_line("bear")
    'bear'
    """
    tokens = line.split()
    if not tokens:
        return None
    parts = [p for p in tokens[0].strip("/").split("/") if p]
    if len(parts) >= 2 and Path(parts[-1]).suffix.lower() in _IMAGE_SUFFIXES:
        return parts[-2]
    return parts[-1] if parts else None


class Davis2016(Sequence[VideoRecord]):
    """The DAVIS 2016 sequences of one split, as a sequence of :class:`VideoRecord` with masks.

    Args:
        root: the ``DAVIS`` directory.
        split: ``"train"`` or ``"val"``.
        resolution: the image folder (``"480p"``; ``"1080p"`` for the full-resolution release).
        max_videos: keep only the first ``max_videos`` sequences.
        strict: raise on a missing annotation instead of skipping the frame.
        cache: keep the index in ``<root>/.patchwork_index`` (or ``$PATCHWORK_DATA_CACHE/index``)
            and reuse it while no list or sequence folder changed (:mod:`patchwork.data.index_cache`).

    A frame without its PNG is dropped, counted in ``bad_data`` and logged; a corrupt PNG or
    JPEG is caught when it is decoded (by the samplers).
    """

    def __init__(self, root: str | Path, split: str = "train", resolution: str = "480p",
                 max_videos: int | None = None, strict: bool = False, cache: bool = True) -> None:
        self.root = Path(root)
        self.split = split
        self.resolution = resolution
        self.bad_data = BadDataLog(strict=strict)
        image_dir = self.root / "JPEGImages" / resolution
        if not image_dir.is_dir():
            raise DatasetLayoutError("DAVIS 2016", image_dir, DAVIS_LAYOUT)
        params = {"split": split, "resolution": resolution, "max_videos": max_videos}
        self.videos: list[VideoRecord] = cached_videos(
            "davis2016", self.root, self.root, params, lambda watch: self._build(max_videos, watch), self.bad_data,
            enabled=cache)
        logger.info("DAVIS 2016 %s: %d sequences, %d frames", split, len(self.videos),
                    sum(len(v) for v in self.videos))

    def _build(self, max_videos: int | None, watch: InputWatch) -> list[VideoRecord]:
        sequences = self._sequences(watch)
        if max_videos is not None:
            sequences = sequences[:max_videos]
        return [v for v in (self._read_sequence(s, watch) for s in sequences) if v is not None]

    def _sequences(self, watch: InputWatch) -> list[str]:
        for list_file in (self.root / "ImageSets" / self.resolution / f"{self.split}.txt",
                          self.root / "ImageSets" / "480p" / f"{self.split}.txt",
                          self.root / "ImageSets" / "2016" / f"{self.split}.txt"):
            # Absent lists are watched too: one appearing later takes precedence.
            if watch.watch(list_file).is_file():
                names: dict[str, None] = {}
                for line in list_file.read_text().splitlines():
                    name = parse_davis_image_set_line(line)
                    if name is not None:
                        names.setdefault(name, None)
                return list(names)
        official = {"train": DAVIS2016_TRAIN, "val": DAVIS2016_VAL}.get(self.split)
        if official is None:
            raise DatasetLayoutError("DAVIS 2016", self.root / "ImageSets" / "2016" / f"{self.split}.txt",
                                     DAVIS_LAYOUT)
        logger.warning("DAVIS 2016: no ImageSets list for %s; using the official split", self.split)
        image_dir = watch.watch(self.root / "JPEGImages" / self.resolution)
        return [s for s in official if (image_dir / s).is_dir()]

    def _read_sequence(self, name: str, watch: InputWatch) -> VideoRecord | None:
        frame_dir = watch.watch(self.root / "JPEGImages" / self.resolution / name)
        ann_dir = watch.watch(self.root / "Annotations" / self.resolution / name)
        frames = sorted(p for p in frame_dir.glob("*") if p.suffix.lower() in {".jpg", ".jpeg"})
        if not frames:
            logger.warning("DAVIS 2016: sequence %s has no frames in %s; skipped", name, frame_dir)
            return None
        paths, masks = [], []
        for frame in frames:
            png = ann_dir / f"{frame.stem}.png"
            if not png.is_file():
                self.bad_data.skip(CorruptDataError(png, "missing annotation"))
                continue
            paths.append(str(frame))
            masks.append(BinaryPngMask(str(png)))
        if not paths:
            return None
        return VideoRecord.from_targets(name, paths, [empty_target() for _ in paths], masks)

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> VideoRecord:  # type: ignore[override]
        return self.videos[index]
