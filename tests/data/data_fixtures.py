"""Tiny datasets in the exact on-disk layouts of ILSVRC2015 VID, DAVIS 2016, COCO and Pascal VOC.

Frames are 64x64 solid-colour JPEGs (value ``frame_value(...)``) so a test can tell which frame
it got back despite JPEG loss; annotations are hand-written with known pixel boxes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.io import write_jpeg, write_png

SIZE = 64
DOG, CAT, ZEBRA = "n02084071", "n02121808", "n02391049"  # VID wnids: dog 8, domestic_cat 9, zebra 29


def frame_value(video: int, frame: int) -> int:
    """The grey level of frame ``frame`` of video ``video`` in the fixtures."""
    return 20 + 40 * video + 15 * frame


def solid_jpeg(path: Path, value: int, height: int = SIZE, width: int = SIZE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jpeg(torch.full((3, height, width), value, dtype=torch.uint8), str(path), quality=95)


def vid_xml(objects: list[tuple[int, str, tuple[int, int, int, int]]], folder: str = "x", frame: str = "000000") -> str:
    """A VID XML; ``objects`` are ``(trackid, wnid, (xmin, ymin, xmax, ymax))`` inclusive."""
    body = "".join(
        f"<object><trackid>{t}</trackid><name>{w}</name><bndbox><xmax>{b[2]}</xmax><xmin>{b[0]}</xmin>"
        f"<ymax>{b[3]}</ymax><ymin>{b[1]}</ymin></bndbox><occluded>{int(t == 1)}</occluded>"
        f"<generated>0</generated></object>" for t, w, b in objects)
    return (f"<annotation><folder>{folder}</folder><filename>{frame}</filename><source><database>ILSVRC_2015"
            f"</database></source><size><width>{SIZE}</width><height>{SIZE}</height></size>{body}</annotation>")


#: Per train snippet, per frame: objects (trackid, wnid, inclusive box).
VID_TRAIN = {
    "ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000": [
        [(0, DOG, (10, 20, 29, 39))],
        [(0, DOG, (11, 20, 30, 39)), (1, CAT, (0, 0, 9, 4))],
        [],  # a frame with no objects
    ],
    "ILSVRC2015_VID_train_0001/ILSVRC2015_train_00001000": [
        [(3, ZEBRA, (40, 40, 63, 63)), (4, "n99999999", (1, 1, 5, 5))],  # unknown wnid: ignored
        [(3, ZEBRA, (41, 40, 63, 63))],
    ],
}
VID_VAL = {"ILSVRC2015_val_00000000": [[(0, CAT, (5, 6, 7, 8))], [(0, CAT, (6, 6, 8, 8))]]}


def make_vid(root: Path, train_list_style: str = "official") -> Path:
    """``root/ILSVRC2015`` with 2 train snippets (3 and 2 frames) and 1 val snippet (2 frames).

    ``train_list_style``: ``official`` (per-class ``train_<c>.txt``), ``fgfa`` (a
    ``VID_train_15frames.txt``-style list) or ``none`` (no lists)."""
    vid = root / "ILSVRC2015"
    for split, snippets in (("train", VID_TRAIN), ("val", VID_VAL)):
        for v, (snippet, frames) in enumerate(snippets.items()):
            for t, objects in enumerate(frames):
                solid_jpeg(vid / "Data" / "VID" / split / snippet / f"{t:06d}.JPEG", frame_value(v, t))
                xml = vid / "Annotations" / "VID" / split / snippet / f"{t:06d}.xml"
                xml.parent.mkdir(parents=True, exist_ok=True)
                xml.write_text(vid_xml(objects, snippet, f"{t:06d}"))
    sets = vid / "ImageSets" / "VID"
    sets.mkdir(parents=True, exist_ok=True)
    names = list(VID_TRAIN)
    if train_list_style == "official":
        (sets / "train_9.txt").write_text(f"{names[0]} 1\n")  # dog
        (sets / "train_10.txt").write_text(f"{names[0]} 1\n")  # domestic_cat
        (sets / "train_30.txt").write_text(f"{names[1]} 1\n")  # zebra
    elif train_list_style == "fgfa":
        (sets / "VID_train_15frames.txt").write_text(
            f"train/{names[0]} 1 0 3\ntrain/{names[0]} 1 2 3\ntrain/{names[1]} 1 1 2\n")
    (sets / "val.txt").write_text("ILSVRC2015_val_00000000/000000 1\nILSVRC2015_val_00000000/000001 2\n")
    return vid


#: DAVIS fixture: sequence -> split, frames; frame t's mask is a square at (8 + t, 8) of side 10.
DAVIS_SEQUENCES = {"bear": "train", "boat": "train", "camel": "val"}
DAVIS_FRAMES = 3


def davis_mask(t: int) -> torch.Tensor:
    """The bool ``(64, 64)`` foreground of frame ``t`` of every fixture sequence."""
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    mask[8:18, 8 + t:18 + t] = True
    return mask


def make_davis(root: Path, list_style: str = "2016") -> Path:
    """``root/DAVIS``: 2 train and 1 val sequences of 3 frames with 0/255 masks.

    ``list_style``: ``2016`` (``ImageSets/480p`` frame-path lines) or ``2017``
    (``ImageSets/2016`` sequence names)."""
    davis = root / "DAVIS"
    for v, name in enumerate(DAVIS_SEQUENCES):
        for t in range(DAVIS_FRAMES):
            solid_jpeg(davis / "JPEGImages" / "480p" / name / f"{t:05d}.jpg", frame_value(v, t))
            png = davis / "Annotations" / "480p" / name / f"{t:05d}.png"
            png.parent.mkdir(parents=True, exist_ok=True)
            write_png(davis_mask(t).to(torch.uint8)[None] * 255, str(png))
    for split in ("train", "val"):
        names = [n for n, s in DAVIS_SEQUENCES.items() if s == split]
        if list_style == "2016":
            lines = [f"/JPEGImages/480p/{n}/{t:05d}.jpg /Annotations/480p/{n}/{t:05d}.png"
                     for n in names for t in range(DAVIS_FRAMES)]
            path = davis / "ImageSets" / "480p" / f"{split}.txt"
        else:
            lines = names
            path = davis / "ImageSets" / "2016" / f"{split}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    return davis


def make_coco(root: Path) -> tuple[Path, Path]:
    """``root/coco``: 3 images. Image 1: a dog box ``[10, 12, 20, 8]`` with a square polygon, a
    person (no VID class) with an RLE mask, and a crowd of cars. Image 2: only a person. Image 3:
    a zebra, its image file missing. Returns ``(annotation_file, image_dir)``."""
    coco = root / "coco"
    image_dir = coco / "train2017"
    for image_id in (1, 2):
        solid_jpeg(image_dir / f"{image_id:012d}.jpg", 100 + image_id)
    person = np.zeros((SIZE, SIZE), dtype=np.uint8)
    person[40:50, 30:34] = 1
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(person))
    annotations = [
        {"id": 11, "image_id": 1, "category_id": 18, "bbox": [10, 12, 20, 8], "area": 160, "iscrowd": 0,
         "segmentation": [[10, 12, 30, 12, 30, 20, 10, 20]]},
        {"id": 12, "image_id": 1, "category_id": 1, "bbox": [30, 40, 4, 10], "area": 40, "iscrowd": 0,
         "segmentation": {"size": [SIZE, SIZE], "counts": rle["counts"].decode("ascii")}},
        {"id": 13, "image_id": 1, "category_id": 3, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 1,
         "segmentation": {"size": [SIZE, SIZE], "counts": [0, 5, 59, 5, 59, 5, 59, 5, 59, 5, 3835]}},
        {"id": 21, "image_id": 2, "category_id": 1, "bbox": [1, 1, 4, 4], "area": 16, "iscrowd": 0,
         "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]]},
        {"id": 31, "image_id": 3, "category_id": 24, "bbox": [1, 1, 4, 4], "area": 16, "iscrowd": 0,
         "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]]},
    ]
    data = {
        "images": [{"id": i, "file_name": f"{i:012d}.jpg", "height": SIZE, "width": SIZE} for i in (1, 2, 3)],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person", "supercategory": "person"},
                       {"id": 3, "name": "car", "supercategory": "vehicle"},
                       {"id": 18, "name": "dog", "supercategory": "animal"},
                       {"id": 24, "name": "zebra", "supercategory": "animal"}],
    }
    annotation_file = coco / "annotations" / "instances_train2017.json"
    annotation_file.parent.mkdir(parents=True, exist_ok=True)
    annotation_file.write_text(json.dumps(data))
    return annotation_file, image_dir


def voc_xml(objects: list[tuple[str, tuple[int, int, int, int], int]]) -> str:
    """A VOC XML; ``objects`` are ``(name, (xmin, ymin, xmax, ymax) 1-based inclusive, difficult)``."""
    body = "".join(
        f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>{d}</difficult>"
        f"<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d in objects)
    return (f"<annotation><folder>VOC2012</folder><filename>x.jpg</filename><size><width>{SIZE}</width>"
            f"<height>{SIZE}</height><depth>3</depth></size><segmented>1</segmented>{body}</annotation>")


#: VOC fixture: image id -> objects; the SegmentationObject PNG paints object k (1-based) at
#: rows/cols of its box and a void (255) ring around the first object.
VOC_IMAGES = {
    "2008_000001": [("aeroplane", (11, 21, 30, 40), 0), ("person", (41, 41, 50, 60), 0)],
    "2008_000002": [("motorbike", (1, 1, 64, 64), 1)],
    "2008_000003": [("chair", (5, 5, 20, 20), 0)],  # no VID class at all
}


def voc_instances(image_id: str) -> np.ndarray:
    """The uint8 ``(64, 64)`` SegmentationObject indices of a fixture image."""
    out = np.zeros((SIZE, SIZE), dtype=np.uint8)
    for k, (_, (x1, y1, x2, y2), _) in enumerate(VOC_IMAGES[image_id], start=1):
        if k == 1:
            out[y1 - 2:y2 + 1, x1 - 2:x2 + 1] = 255  # void band of one pixel around the object
        out[y1 - 1:y2, x1 - 1:x2] = k
    return out


def make_voc(root: Path) -> Path:
    """``root/VOCdevkit/VOC2012`` with 3 images, XMLs, palette SegmentationObject PNGs and lists."""
    year = root / "VOCdevkit" / "VOC2012"
    for image_id, objects in VOC_IMAGES.items():
        solid_jpeg(year / "JPEGImages" / f"{image_id}.jpg", 150)
        (year / "Annotations").mkdir(parents=True, exist_ok=True)
        (year / "Annotations" / f"{image_id}.xml").write_text(voc_xml(objects))
        png = Image.fromarray(voc_instances(image_id), mode="P")
        png.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * (3 * 251) + [224, 224, 192])
        (year / "SegmentationObject").mkdir(parents=True, exist_ok=True)
        png.save(year / "SegmentationObject" / f"{image_id}.png")
    for sub in ("Main", "Segmentation"):
        (year / "ImageSets" / sub).mkdir(parents=True, exist_ok=True)
        (year / "ImageSets" / sub / "trainval.txt").write_text("\n".join(VOC_IMAGES) + "\n")
    return year
