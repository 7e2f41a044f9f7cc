"""COCO still images through pycocotools, for fake videos (paper Sec. 3.4).

Layout: an instances JSON (``annotations/instances_train2017.json``) and its image folder
(``train2017/``). Boxes ``[x, y, w, h]`` become ``(x, y, x + w, y + h)`` (already continuous pixel
coordinates); categories map to VID by name (:data:`~patchwork.data.classes.COCO_TO_VID`, 16
classes) and objects of other categories are dropped from the boxes. Crowd annotations never
become boxes. With ``with_masks`` the foreground mask is the union of instance segmentations
of *all* categories by default (``foreground_all_classes``): for class-agnostic foreground
segmentation (DAVIS) a person is as much foreground as a dog.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Sequence

from pycocotools.coco import COCO

from patchwork.data.classes import coco_to_vid_label
from patchwork.data.index_cache import InputWatch, cached_stills
from patchwork.data.records import (BadDataLog, CocoMask, CorruptDataError, DatasetLayoutError, StillImageRecord,
                                    empty_target, make_target)

logger = logging.getLogger("patchwork.data")

COCO_LAYOUT = """\
  <annotation_file>: a COCO instances JSON, e.g. coco/annotations/instances_train2017.json
  <image_dir>/<file_name> for every image in it, e.g. coco/train2017/000000000009.jpg"""


class CocoStills(Sequence[StillImageRecord]):
    """COCO images with VID-mapped boxes (and optionally foreground masks).

    Args:
        annotation_file: the instances JSON.
        image_dir: the folder the JSON's ``file_name`` entries are relative to.
        with_masks: attach a lazily decoded foreground mask (union of instances).
        foreground_all_classes: the mask uses every category, not only the VID-mapped ones.
        require_objects: drop images with nothing to look at: no VID box (box-only data) or no
            foreground (with masks). Such images cannot satisfy the fake-video overlap rule.
        max_images: keep only the first ``max_images`` images (by image id).
        strict: raise on a missing image file instead of skipping it.
        cache: keep the index beside the JSON (``<its folder>/.patchwork_index``, else
            ``$PATCHWORK_DATA_CACHE/index``) and reuse it while the JSON and the image folder
            are unchanged (:mod:`patchwork.data.index_cache`).
    """

    def __init__(self, annotation_file: str | Path, image_dir: str | Path, with_masks: bool = False,
                 foreground_all_classes: bool = True, require_objects: bool = True,
                 max_images: int | None = None, strict: bool = False, cache: bool = True) -> None:
        self.annotation_file = Path(annotation_file)
        self.image_dir = Path(image_dir)
        self.bad_data = BadDataLog(strict=strict)
        for path in (self.annotation_file, self.image_dir):
            if not path.exists():
                raise DatasetLayoutError("COCO", path, COCO_LAYOUT)
        params = {"annotation_file": self.annotation_file.name, "image_dir": str(self.image_dir.resolve()),
                  "with_masks": with_masks, "foreground_all_classes": foreground_all_classes,
                  "require_objects": require_objects, "max_images": max_images}
        self.images: list[StillImageRecord] = cached_stills(
            "coco", self.annotation_file.parent, self.image_dir, params,
            lambda watch: self._build(with_masks, foreground_all_classes, require_objects, max_images, watch),
            self.bad_data, enabled=cache)
        logger.info("COCO %s: %d images", self.annotation_file.name, len(self.images))

    def _build(self, with_masks: bool, foreground_all_classes: bool, require_objects: bool,
               max_images: int | None, watch: InputWatch) -> list[StillImageRecord]:
        watch.watch(self.annotation_file)
        watch.watch(self.image_dir)  # images added or removed change it
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
                coco = COCO(str(self.annotation_file))
        except (ValueError, KeyError, TypeError, AssertionError) as e:
            # One JSON holds every annotation: nothing to skip to, so this always raises.
            raise CorruptDataError(self.annotation_file, f"bad COCO JSON: {e}") from e
        vid_label_of = {cat_id: coco_to_vid_label(cat["name"]) for cat_id, cat in coco.cats.items()}
        images: list[StillImageRecord] = []
        for image_id in sorted(coco.imgs):
            info = coco.imgs[image_id]
            anns = coco.imgToAnns.get(image_id, [])
            boxes, labels, track_ids, segmentations = [], [], [], []
            for ann in anns:
                label = vid_label_of.get(ann["category_id"])
                x, y, w, h = ann["bbox"]
                if label is not None and not ann.get("iscrowd", 0) and w >= 1 and h >= 1:
                    boxes.append((x, y, x + w, y + h))
                    labels.append(label)
                    track_ids.append(ann["id"])  # one image, so the annotation id is an identity
                if with_masks and (label is not None or foreground_all_classes) and ann.get("segmentation"):
                    segmentations.append(ann["segmentation"])
            if require_objects and not (segmentations if with_masks else boxes):
                continue
            image_path = self.image_dir / info["file_name"]
            if not image_path.is_file():
                self.bad_data.skip(CorruptDataError(image_path, "missing image"))
                continue
            target = make_target(boxes, labels, track_ids) if boxes else empty_target()
            mask = CocoMask(tuple(segmentations), int(info["height"]), int(info["width"])) if with_masks else None
            images.append(StillImageRecord(str(image_id), str(image_path), target, mask))
            if max_images is not None and len(images) >= max_images:
                break
        return images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> StillImageRecord:  # type: ignore[override]
        return self.images[index]
