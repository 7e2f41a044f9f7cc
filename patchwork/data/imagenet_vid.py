"""ILSVRC2015 VID reader (paper Sec. 4.1): snippets of JPEG frames with per-frame XML boxes.

Layout (``root`` is the ``ILSVRC2015`` directory)::

    Data/VID/{train,val}/<snippet>/%06d.JPEG
    Annotations/VID/{train,val}/<snippet>/%06d.xml
    ImageSets/VID/train_<1..30>.txt, val.txt      (optional; the directories are scanned without them)

where a train ``<snippet>`` is ``ILSVRC2015_VID_train_000k/ILSVRC2015_train_xxxxxxxx`` and a val
one ``ILSVRC2015_val_xxxxxxxx``. XML objects carry ``trackid``, ``name`` (the wnid), ``bndbox``
(0-based *inclusive* integer pixels, converted to ``(xmin, ymin, xmax + 1, ymax + 1)``),
``occluded`` and ``generated``.

ImageSets line formats understood (the first token names a snippet or a frame; the rest is
ignored; an optional leading ``train/``/``val/`` split directory is stripped):

- official per-class train lists: ``ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000 1``
- official val/test frame lists: ``ILSVRC2015_val_00000000/000000 1``
- FGFA/MEGA-style lists: ``train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000 1 10 300``,
  ``val/ILSVRC2015_val_00000000 1 0 464``, ``val/ILSVRC2015_val_00000000/000000 1``

A list selects snippets; a snippet's frames are always all the JPEGs in its directory.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

import torch

from patchwork.data.classes import VID_INDEX_BY_WNID
from patchwork.data.index_cache import InputWatch, cached_videos
from patchwork.data.records import (BadDataLog, CorruptDataError, DatasetLayoutError, Target, VideoRecord,
                                    empty_target, make_target)

logger = logging.getLogger("patchwork.data")

VID_LAYOUT = """\
  <root>/Data/VID/<split>/<snippet>/000000.JPEG, 000001.JPEG, ...
  <root>/Annotations/VID/<split>/<snippet>/000000.xml, ...
  <root>/ImageSets/VID/train_1.txt .. train_30.txt, val.txt   (optional)
  (<root> is the ILSVRC2015 directory; train snippets sit one folder deeper, in ILSVRC2015_VID_train_000k/)"""


def parse_vid_xml(path: str | Path) -> Target:
    """Parse one VID annotation XML into a target in patchwork's box convention.

    Objects whose wnid is not a VID class are ignored. Returns boxes float32 ``(K, 4)`` xyxy in
    continuous pixel coordinates, labels ``(K,)``, track ids ``(K,)`` (``-1`` if absent), plus
    bool ``occluded`` and ``generated`` ``(K,)``. Raises ``CorruptDataError`` on malformed XML.
    """
    try:
        root = ET.parse(path).getroot()
        boxes, labels, track_ids, occluded, generated = [], [], [], [], []
        for obj in root.iter("object"):
            wnid = obj.findtext("name", "").strip()
            if wnid not in VID_INDEX_BY_WNID:
                continue
            bb = obj.find("bndbox")
            xmin, ymin, xmax, ymax = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            # Inclusive integer pixel bounds -> half-open continuous coordinates.
            boxes.append((xmin, ymin, xmax + 1.0, ymax + 1.0))
            labels.append(VID_INDEX_BY_WNID[wnid])
            track_ids.append(int(obj.findtext("trackid", "-1")))
            occluded.append(obj.findtext("occluded", "0").strip() == "1")
            generated.append(obj.findtext("generated", "0").strip() == "1")
    except (ET.ParseError, AttributeError, TypeError, ValueError, OSError) as e:
        raise CorruptDataError(path, f"bad VID XML: {e}") from e
    target = make_target(boxes, labels, track_ids) if boxes else empty_target()
    target["occluded"] = torch.tensor(occluded, dtype=torch.bool)
    target["generated"] = torch.tensor(generated, dtype=torch.bool)
    return target


def parse_vid_image_set_line(line: str, split: str) -> str | None:
    """The snippet id a line of an ImageSets/VID list refers to (``None`` for blank lines).

    >>> parse_vid_image_set_line("train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000 1 10 300", "train")
    'ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000'
    >>> parse_vid_image_set_line("ILSVRC2015_val_00000000/000012 13", "val")
    'ILSVRC2015_val_00000000'
    """
    tokens = line.split()
    if not tokens:
        return None
    parts = [p for p in tokens[0].strip("/").split("/") if p]
    if parts and parts[0] == split:
        parts = parts[1:]
    if parts and Path(parts[-1]).stem.isdigit():  # a frame: <snippet>/000123[.JPEG]
        parts = parts[:-1]
    return "/".join(parts) if parts else None


def read_vid_image_sets(files: Sequence[str | Path], split: str, watch: InputWatch | None = None) -> list[str]:
    """Snippet ids listed in ``files``, de-duplicated, in first-seen order (each file recorded
    in ``watch`` before it is read)."""
    snippets: dict[str, None] = {}
    for file in files:
        if watch is not None:
            watch.watch(file)
        with open(file) as f:
            for line in f:
                snippet = parse_vid_image_set_line(line, split)
                if snippet is not None:
                    snippets.setdefault(snippet, None)
    return list(snippets)


class ImageNetVID(Sequence[VideoRecord]):
    """The ILSVRC2015 VID snippets of one split, as a sequence of :class:`VideoRecord`.

    Args:
        root: the ``ILSVRC2015`` directory (see the module docstring for the layout).
        split: ``"train"`` or ``"val"`` (any directory name under ``Data/VID``).
        image_sets: list files to select snippets, relative to ``ImageSets/VID`` or absolute.
            ``None``: ``train_*.txt`` for train, ``<split>.txt`` otherwise, and a scan of
            ``Data/VID/<split>`` when those do not exist.
        max_videos: keep only the first ``max_videos`` snippets (quick runs).
        strict: raise on a corrupt or missing XML instead of skipping the frame.
        cache: keep the index in ``<root>/.patchwork_index`` (or ``$PATCHWORK_DATA_CACHE/index``)
            and reuse it while no annotation or list file changed (:mod:`patchwork.data.index_cache`).

    Frames whose XML is missing or corrupt are dropped from their snippet, counted in
    ``bad_data`` and logged. Targets carry boxes (original pixels), VID labels and track ids;
    the records also keep each object's ``occluded`` / ``generated`` flags
    (:meth:`VideoRecord.box_flags <patchwork.data.records.VideoRecord.box_flags>`).
    """

    def __init__(self, root: str | Path, split: str = "train", image_sets: Sequence[str] | None = None,
                 max_videos: int | None = None, strict: bool = False, cache: bool = True) -> None:
        self.root = Path(root)
        self.split = split
        self.bad_data = BadDataLog(strict=strict)
        data_dir = self.root / "Data" / "VID" / split
        if not data_dir.is_dir():
            raise DatasetLayoutError("ImageNet VID", data_dir, VID_LAYOUT)
        params = {"split": split, "image_sets": None if image_sets is None else [str(f) for f in image_sets],
                  "max_videos": max_videos}
        self.videos: list[VideoRecord] = cached_videos(
            "imagenet_vid", self.root, self.root, params,
            lambda watch: self._build(data_dir, image_sets, max_videos, watch), self.bad_data, enabled=cache)
        logger.info("ImageNet VID %s: %d snippets, %d frames, %d corrupt files skipped", split,
                    len(self.videos), sum(len(v) for v in self.videos), self.bad_data.count)

    def _build(self, data_dir: Path, image_sets: Sequence[str] | None, max_videos: int | None,
               watch: InputWatch) -> list[VideoRecord]:
        snippets = self._snippet_ids(data_dir, image_sets, watch)
        if max_videos is not None:
            snippets = snippets[:max_videos]
        records = (self._read_snippet(snippet, watch) for snippet in snippets)
        return [record for record in records if record is not None]

    def _snippet_ids(self, data_dir: Path, image_sets: Sequence[str] | None, watch: InputWatch) -> list[str]:
        sets_dir = watch.watch(self.root / "ImageSets" / "VID")  # a list added later changes it
        if image_sets is not None:
            files = [Path(f) if Path(f).is_absolute() else sets_dir / f for f in image_sets]
            missing = [f for f in files if not f.is_file()]
            if missing:
                raise DatasetLayoutError("ImageNet VID", missing[0], VID_LAYOUT)
        elif self.split == "train":
            files = sorted(sets_dir.glob("train_*.txt"), key=lambda p: (len(p.name), p.name))
        else:
            files = [f for f in [sets_dir / f"{self.split}.txt"] if f.is_file()]
        if files:
            return read_vid_image_sets(files, self.split, watch)
        logger.info("ImageNet VID: no ImageSets lists for %s; scanning %s", self.split, data_dir)
        snippets = sorted(str(d.parent.relative_to(data_dir)) for d in data_dir.rglob("000000.JPEG"))
        # A snippet added later changes its parent folder (the snippet folders themselves are
        # watched when read).
        for folder in {data_dir, *((data_dir / s).parent for s in snippets)}:
            watch.watch(folder)
        return snippets

    def _read_snippet(self, snippet: str, watch: InputWatch) -> VideoRecord | None:
        frame_dir = watch.watch(self.root / "Data" / "VID" / self.split / snippet)
        ann_dir = watch.watch(self.root / "Annotations" / "VID" / self.split / snippet)
        frames = sorted(frame_dir.glob("*.JPEG"))
        if not frames:
            logger.warning("ImageNet VID: snippet %s has no frames in %s; skipped", snippet, frame_dir)
            return None
        paths, targets = [], []
        for frame in frames:
            xml = watch.watch(ann_dir / f"{frame.stem}.xml")
            try:
                if not xml.is_file():
                    raise CorruptDataError(xml, "missing annotation")
                target = parse_vid_xml(xml)
            except CorruptDataError as e:
                self.bad_data.skip(e)
                continue
            paths.append(str(frame))
            targets.append(target)
        if not paths:
            return None
        return VideoRecord.from_targets(snippet, paths, targets)

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> VideoRecord:  # type: ignore[override]
        return self.videos[index]
