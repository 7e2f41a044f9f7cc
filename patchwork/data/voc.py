"""Pascal VOC still images, for fake videos (paper Sec. 3.4).

Layout (``root`` is ``VOCdevkit``, ``VOCdevkit/VOC20xx`` or anything holding ``VOC20xx``)::

    VOC20xx/JPEGImages/<id>.jpg
    VOC20xx/Annotations/<id>.xml                  (1-based inclusive boxes)
    VOC20xx/SegmentationObject/<id>.png           (palette: 0 bg, 1..N objects, 255 void)
    VOC20xx/ImageSets/Main/<split>.txt            (box data)
    VOC20xx/ImageSets/Segmentation/<split>.txt    (images that have SegmentationObject PNGs)

XML boxes are 1-based inclusive, converted to ``(xmin - 1, ymin - 1, xmax, ymax)``. Classes map
to VID by name (:data:`~patchwork.data.classes.VOC_TO_VID`, 13 classes); other objects are
dropped from the boxes. The foreground mask is every object instance of any class (the void
band is background); see :mod:`patchwork.data.coco` for why all classes.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

from patchwork.data.classes import voc_to_vid_label
from patchwork.data.index_cache import InputWatch, cached_stills
from patchwork.data.records import (BadDataLog, CorruptDataError, DatasetLayoutError, StillImageRecord, Target,
                                    VocObjectMask, empty_target, make_target)

logger = logging.getLogger("patchwork.data")

VOC_LAYOUT = """\
  <root>/VOC<year>/JPEGImages/<id>.jpg
  <root>/VOC<year>/Annotations/<id>.xml
  <root>/VOC<year>/SegmentationObject/<id>.png          (with_masks)
  <root>/VOC<year>/ImageSets/Main/<split>.txt, ImageSets/Segmentation/<split>.txt
  (<root> may be VOCdevkit, its parent, or VOC<year> itself)"""


def parse_voc_xml(path: str | Path, skip_difficult: bool = False) -> Target:
    """Parse a VOC annotation XML: VID-mapped objects only, boxes in continuous pixels.

    Returns boxes float32 ``(K, 4)``, labels ``(K,)``, track ids ``(K,)`` (the object's 1-based
    position in the XML, which is also its ``SegmentationObject`` index). ``CorruptDataError``
    on malformed XML.
    """
    try:
        root = ET.parse(path).getroot()
        boxes, labels, track_ids = [], [], []
        for position, obj in enumerate(root.iter("object"), start=1):
            label = voc_to_vid_label(obj.findtext("name", "").strip())
            if label is None or (skip_difficult and obj.findtext("difficult", "0").strip() == "1"):
                continue
            bb = obj.find("bndbox")
            xmin, ymin, xmax, ymax = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            # 1-based inclusive pixel bounds -> 0-based half-open continuous coordinates.
            boxes.append((xmin - 1.0, ymin - 1.0, xmax, ymax))
            labels.append(label)
            track_ids.append(position)
    except (ET.ParseError, AttributeError, TypeError, ValueError, OSError) as e:
        raise CorruptDataError(path, f"bad VOC XML: {e}") from e
    return make_target(boxes, labels, track_ids) if boxes else empty_target()


def find_voc_year_dir(root: str | Path, year: str) -> Path:
    """The ``VOC<year>`` directory under ``root``; ``DatasetLayoutError`` if there is none."""
    root = Path(root)
    for candidate in (root / "VOCdevkit" / f"VOC{year}", root / f"VOC{year}", root):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise DatasetLayoutError("Pascal VOC", root / "VOCdevkit" / f"VOC{year}", VOC_LAYOUT)


class VocStills(Sequence[StillImageRecord]):
    """Pascal VOC images with VID-mapped boxes (and optionally foreground masks).

    Args:
        root: see the module docstring.
        year: ``"2007"``, ``"2012"``, ...
        split: the ImageSets list name (``"train"``, ``"val"``, ``"trainval"``).
        with_masks: read ``ImageSets/Segmentation/<split>.txt`` and attach a lazily decoded
            ``SegmentationObject`` foreground mask; otherwise ``ImageSets/Main/<split>.txt``.
        skip_difficult: drop objects flagged ``difficult``.
        require_objects: drop images without a VID box (box-only data); with masks every listed
            image has objects, so nothing is dropped.
        max_images: keep only the first ``max_images`` images.
        strict: raise on a corrupt/missing XML or image instead of skipping it.
        cache: keep the index in ``VOC<year>/.patchwork_index`` (or ``$PATCHWORK_DATA_CACHE/index``)
            and reuse it while no list or annotation file changed (:mod:`patchwork.data.index_cache`).
    """

    def __init__(self, root: str | Path, year: str = "2012", split: str = "trainval", with_masks: bool = False,
                 skip_difficult: bool = False, require_objects: bool = True, max_images: int | None = None,
                 strict: bool = False, cache: bool = True) -> None:
        self.year_dir = find_voc_year_dir(root, str(year))
        self.bad_data = BadDataLog(strict=strict)
        list_file = self.year_dir / "ImageSets" / ("Segmentation" if with_masks else "Main") / f"{split}.txt"
        if not list_file.is_file():
            raise DatasetLayoutError("Pascal VOC", list_file, VOC_LAYOUT)
        params = {"split": split, "with_masks": with_masks, "skip_difficult": skip_difficult,
                  "require_objects": require_objects, "max_images": max_images}
        self.images: list[StillImageRecord] = cached_stills(
            "voc", self.year_dir, self.year_dir, params,
            lambda watch: self._build(list_file, with_masks, skip_difficult, require_objects, max_images, watch),
            self.bad_data, enabled=cache)
        logger.info("Pascal VOC%s %s: %d images, %d skipped", year, split, len(self.images), self.bad_data.count)

    def _build(self, list_file: Path, with_masks: bool, skip_difficult: bool, require_objects: bool,
               max_images: int | None, watch: InputWatch) -> list[StillImageRecord]:
        ids = [line.split()[0] for line in watch.watch(list_file).read_text().splitlines() if line.strip()]
        # Files added or removed change their folders; the XMLs themselves are watched when parsed.
        folders = ("JPEGImages", "Annotations") + (("SegmentationObject",) if with_masks else ())
        for folder in folders:
            watch.watch(self.year_dir / folder)
        images: list[StillImageRecord] = []
        for image_id in ids:
            image_path = self.year_dir / "JPEGImages" / f"{image_id}.jpg"
            xml_path = watch.watch(self.year_dir / "Annotations" / f"{image_id}.xml")
            png_path = self.year_dir / "SegmentationObject" / f"{image_id}.png"
            try:
                for path in (image_path, xml_path) + ((png_path,) if with_masks else ()):
                    if not path.is_file():
                        raise CorruptDataError(path, "missing file")
                target = parse_voc_xml(xml_path, skip_difficult)
            except CorruptDataError as e:
                self.bad_data.skip(e)
                continue
            if require_objects and not with_masks and len(target["boxes"]) == 0:
                continue
            mask = VocObjectMask(str(png_path)) if with_masks else None
            images.append(StillImageRecord(image_id, str(image_path), target, mask))
            if max_images is not None and len(images) >= max_images:
                break
        return images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> StillImageRecord:  # type: ignore[override]
        return self.images[index]
