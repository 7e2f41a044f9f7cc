"""The ImageNet VID class space and the maps from COCO and Pascal VOC into it.

Every dataset in patchwork labels objects with an index ``0..29`` into :data:`VID_CLASSES`,
the 30 ILSVRC2015 VID synsets in the official devkit order (``meta_vid.mat``, ILSVRC2015_VID_ID
``i + 1``). Background is *not* a class index here; a detector that needs one adds it itself.

Still-image datasets augment VID (paper Sec. 3.4) through the name maps below: 16 COCO and 13 VOC
categories have a VID counterpart; objects of the other categories are dropped from the boxes.
"""

from __future__ import annotations

from typing import NamedTuple


class VidClass(NamedTuple):
    """One ImageNet VID synset: its WordNet id (the ``<name>`` in the XML) and a readable name."""

    wnid: str
    name: str


#: The 30 VID classes in the official order; a label ``i`` means ``VID_CLASSES[i]``.
VID_CLASSES: tuple[VidClass, ...] = (
    VidClass("n02691156", "airplane"),
    VidClass("n02419796", "antelope"),
    VidClass("n02131653", "bear"),
    VidClass("n02834778", "bicycle"),
    VidClass("n01503061", "bird"),
    VidClass("n02924116", "bus"),
    VidClass("n02958343", "car"),
    VidClass("n02402425", "cattle"),
    VidClass("n02084071", "dog"),
    VidClass("n02121808", "domestic_cat"),
    VidClass("n02503517", "elephant"),
    VidClass("n02118333", "fox"),
    VidClass("n02510455", "giant_panda"),
    VidClass("n02342885", "hamster"),
    VidClass("n02374451", "horse"),
    VidClass("n02129165", "lion"),
    VidClass("n01674464", "lizard"),
    VidClass("n02484322", "monkey"),
    VidClass("n03790512", "motorcycle"),
    VidClass("n02324045", "rabbit"),
    VidClass("n02509815", "red_panda"),
    VidClass("n02411705", "sheep"),
    VidClass("n01726692", "snake"),
    VidClass("n02355227", "squirrel"),
    VidClass("n02129604", "tiger"),
    VidClass("n04468005", "train"),
    VidClass("n01662784", "turtle"),
    VidClass("n04530566", "watercraft"),
    VidClass("n02062744", "whale"),
    VidClass("n02391049", "zebra"),
)

NUM_VID_CLASSES = len(VID_CLASSES)
VID_NAMES: tuple[str, ...] = tuple(c.name for c in VID_CLASSES)
VID_WNIDS: tuple[str, ...] = tuple(c.wnid for c in VID_CLASSES)
VID_INDEX_BY_WNID: dict[str, int] = {c.wnid: i for i, c in enumerate(VID_CLASSES)}
VID_INDEX_BY_NAME: dict[str, int] = {c.name: i for i, c in enumerate(VID_CLASSES)}

#: COCO category name -> VID class name (16 classes).
COCO_TO_VID: dict[str, str] = {
    "airplane": "airplane",
    "bicycle": "bicycle",
    "bird": "bird",
    "boat": "watercraft",
    "bus": "bus",
    "car": "car",
    "cat": "domestic_cat",
    "cow": "cattle",
    "dog": "dog",
    "elephant": "elephant",
    "bear": "bear",
    "horse": "horse",
    "motorcycle": "motorcycle",
    "sheep": "sheep",
    "train": "train",
    "zebra": "zebra",
}

#: Pascal VOC class name -> VID class name (13 classes).
VOC_TO_VID: dict[str, str] = {
    "aeroplane": "airplane",
    "bicycle": "bicycle",
    "bird": "bird",
    "boat": "watercraft",
    "bus": "bus",
    "car": "car",
    "cat": "domestic_cat",
    "cow": "cattle",
    "dog": "dog",
    "horse": "horse",
    "motorbike": "motorcycle",
    "sheep": "sheep",
    "train": "train",
}


def vid_label(name: str) -> int:
    """VID class index ``0..29`` of a VID class name or wnid; ``KeyError`` for anything else."""
    if name in VID_INDEX_BY_WNID:
        return VID_INDEX_BY_WNID[name]
    return VID_INDEX_BY_NAME[name]


def coco_to_vid_label(coco_name: str) -> int | None:
    """VID class index of a COCO category name, or ``None`` when it has no VID counterpart."""
    vid_name = COCO_TO_VID.get(coco_name)
    return None if vid_name is None else VID_INDEX_BY_NAME[vid_name]


def voc_to_vid_label(voc_name: str) -> int | None:
    """VID class index of a Pascal VOC class name, or ``None`` when it has no VID counterpart."""
    vid_name = VOC_TO_VID.get(voc_name)
    return None if vid_name is None else VID_INDEX_BY_NAME[vid_name]
