"""Write synthetic scenes in the real on-disk layouts (VID, DAVIS 2016, COCO, Pascal VOC).

Each ``write_*`` function writes one unit (a video or an image) from its own seed
``[config.seed, set, split, index]``, so units can be written in any order or in parallel and
the result is the same; ``finish_*`` functions write the lists and JSON that index the units.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as coco_mask
from torchvision.io import write_jpeg, write_png

from patchwork.data.classes import VID_INDEX_BY_NAME, VID_WNIDS
from patchwork.data.synthetic.appearance import COCO_CATEGORIES, VOC_CLASSES, rasterize
from patchwork.data.synthetic.config import SyntheticDataConfig
from patchwork.data.synthetic.scenes import RenderedFrame, Scene, detection_scene, segmentation_scene, still_scene

SPLITS = ("train", "val")
# Set ids in the per-unit seeds.
VID_SET, DAVIS_SET, COCO_SET, VOC_SET = 0, 1, 2, 3


def unit_rng(config: SyntheticDataConfig, dataset: int, split: int, index: int) -> np.random.Generator:
    """The generator of one unit (video or image)."""
    return np.random.default_rng([config.seed, dataset, split, index])


def _jpeg(image: np.ndarray, path: Path, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jpeg(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), str(path), quality=quality)


def _num_frames(rng: np.random.Generator, frames: tuple[int, int]) -> int:
    return int(rng.integers(frames[0], frames[1] + 1))


# ---------------------------------------------------------------- ImageNet VID

def vid_snippet_id(split: str, index: int) -> str:
    """Snippet ids as ILSVRC2015 names them (train: ``%05d%03d`` video and snippet number)."""
    if split == "train":
        return f"ILSVRC2015_VID_train_{index // 1000:04d}/ILSVRC2015_train_{index:05d}000"
    return f"ILSVRC2015_{split}_{index:08d}"


def vid_scene(config: SyntheticDataConfig, split: str, index: int) -> tuple[Scene, int]:
    """The scene of VID-style snippet ``index`` of ``split`` and its frame count."""
    rng = unit_rng(config, VID_SET, SPLITS.index(split), index)
    num_frames = _num_frames(rng, config.vid_frames)
    return detection_scene(rng, config.vid_frame_size, num_frames, config.max_objects, config.object_scale), num_frames


def _vid_xml(folder: str, frame: str, size: tuple[int, int], rendered: RenderedFrame) -> str:
    objects = "".join(
        f"\t<object>\n\t\t<trackid>{o.track_id}</trackid>\n"
        f"\t\t<name>{VID_WNIDS[VID_INDEX_BY_NAME[o.class_name]]}</name>\n"
        f"\t\t<bndbox>\n\t\t\t<xmax>{o.box[2]}</xmax>\n\t\t\t<xmin>{o.box[0]}</xmin>\n"
        f"\t\t\t<ymax>{o.box[3]}</ymax>\n\t\t\t<ymin>{o.box[1]}</ymin>\n\t\t</bndbox>\n"
        f"\t\t<occluded>{int(o.occluded)}</occluded>\n\t\t<generated>0</generated>\n\t</object>\n"
        for o in rendered.objects)
    return (f"<annotation>\n\t<folder>{folder}</folder>\n\t<filename>{frame}</filename>\n"
            f"\t<source>\n\t\t<database>ILSVRC_2015</database>\n\t</source>\n"
            f"\t<size>\n\t\t<width>{size[1]}</width>\n\t\t<height>{size[0]}</height>\n\t</size>\n"
            f"{objects}</annotation>\n")


def write_vid_snippet(vid_root: Path, config: SyntheticDataConfig, split: str, index: int) -> dict[str, Any]:
    """Write one snippet's JPEGs and XMLs; returns its id, frame count and VID labels present."""
    snippet = vid_snippet_id(split, index)
    scene, num_frames = vid_scene(config, split, index)
    labels: set[int] = set()
    for t in range(num_frames):
        rendered = scene.render(t)
        _jpeg(rendered.image, vid_root / "Data" / "VID" / split / snippet / f"{t:06d}.JPEG", config.jpeg_quality)
        xml = vid_root / "Annotations" / "VID" / split / snippet / f"{t:06d}.xml"
        xml.parent.mkdir(parents=True, exist_ok=True)
        xml.write_text(_vid_xml(snippet, f"{t:06d}", config.vid_frame_size, rendered))
        labels.update(VID_INDEX_BY_NAME[o.class_name] for o in rendered.objects)
    return {"snippet": snippet, "frames": num_frames, "labels": sorted(labels)}


def finish_vid(vid_root: Path, units: dict[str, list[dict[str, Any]]]) -> None:
    """ImageSets/VID: ``train_<c>.txt`` (snippets with class ``c``, label 1) for all 30 classes
    and ``val.txt`` (every val frame with its 1-based index)."""
    sets_dir = vid_root / "ImageSets" / "VID"
    sets_dir.mkdir(parents=True, exist_ok=True)
    for c in range(len(VID_WNIDS)):
        lines = [f"{u['snippet']} 1\n" for u in units.get("train", []) if c in u["labels"]]
        (sets_dir / f"train_{c + 1}.txt").write_text("".join(lines))
    lines, frame_index = [], 1
    for u in units.get("val", []):
        for t in range(u["frames"]):
            lines.append(f"{u['snippet']}/{t:06d} {frame_index}\n")
            frame_index += 1
    (sets_dir / "val.txt").write_text("".join(lines))


# ---------------------------------------------------------------- DAVIS 2016

def davis_scene(config: SyntheticDataConfig, split: str, index: int) -> tuple[str, Scene, int]:
    """Name, scene and frame count of DAVIS-style sequence ``index`` of ``split``."""
    rng = unit_rng(config, DAVIS_SET, SPLITS.index(split), index)
    num_frames = _num_frames(rng, config.davis_frames)
    scene = segmentation_scene(rng, config.davis_frame_size, num_frames, config.object_scale)
    name = f"{scene.objects[0].class_name.replace('_', '-')}-{split}-{index:03d}"
    return name, scene, num_frames


def write_davis_sequence(davis_root: Path, config: SyntheticDataConfig, split: str, index: int) -> dict[str, Any]:
    """Write one sequence's JPEGs and 0/255 PNG masks; returns its name and frame count."""
    name, scene, num_frames = davis_scene(config, split, index)
    mask_dir = davis_root / "Annotations" / "480p" / name
    mask_dir.mkdir(parents=True, exist_ok=True)
    for t in range(num_frames):
        rendered = scene.render(t)
        _jpeg(rendered.image, davis_root / "JPEGImages" / "480p" / name / f"{t:05d}.jpg", config.jpeg_quality)
        mask = torch.from_numpy(rendered.foreground().astype(np.uint8) * 255)[None]
        write_png(mask, str(mask_dir / f"{t:05d}.png"))
    return {"name": name, "frames": num_frames}


def finish_davis(davis_root: Path, units: dict[str, list[dict[str, Any]]]) -> None:
    """``ImageSets/480p/{train,val}.txt`` in the DAVIS 2016 release format (one frame per line:
    image path, annotation path)."""
    sets_dir = davis_root / "ImageSets" / "480p"
    sets_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        lines = [f"/JPEGImages/480p/{u['name']}/{t:05d}.jpg /Annotations/480p/{u['name']}/{t:05d}.png\n"
                 for u in units.get(split, []) for t in range(u["frames"])]
        (sets_dir / f"{split}.txt").write_text("".join(lines))


# ---------------------------------------------------------------- still images (COCO, VOC)

def _still_size(rng: np.random.Generator, config: SyntheticDataConfig) -> tuple[int, int]:
    h, w = config.still_size
    return int(h * rng.uniform(0.75, 1.0)), int(w * rng.uniform(0.75, 1.0))


def coco_scene(config: SyntheticDataConfig, index: int) -> Scene:
    """The scene of COCO-style image ``index``."""
    rng = unit_rng(config, COCO_SET, 0, index)
    return still_scene(rng, _still_size(rng, config), tuple(COCO_CATEGORIES), config.max_objects, config.object_scale)


def write_coco_image(image_dir: Path, config: SyntheticDataConfig, index: int) -> dict[str, Any]:
    """Write COCO-style image ``index`` (image id ``index + 1``); returns its ``images`` entry and
    ``annotations`` (polygons where the painted object is exactly its polygon, RLE of the visible
    pixels otherwise; bbox from the visible pixels)."""
    scene = coco_scene(config, index)
    rendered = scene.render(0)
    h, w = scene.frame_size
    image_id = index + 1
    file_name = f"{image_id:012d}.jpg"
    _jpeg(rendered.image, image_dir / file_name, config.jpeg_quality)
    annotations = []
    for o in rendered.objects:
        visible = rendered.owner == o.index
        polygon = scene.objects[o.index].sprite.polygon + np.array(rendered.placements[o.index])
        if np.array_equal(rasterize(polygon, h, w), visible):
            segmentation: Any = [np.round(polygon.reshape(-1), 3).tolist()]
        else:
            rle = coco_mask.encode(np.asfortranarray(visible.astype(np.uint8)))
            segmentation = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
        x1, y1, x2, y2 = o.box
        annotations.append({"image_id": image_id, "category_id": COCO_CATEGORIES[o.class_name][0],
                            "segmentation": segmentation, "area": float(o.visible_pixels),
                            "bbox": [float(x1), float(y1), float(x2 - x1 + 1), float(y2 - y1 + 1)], "iscrowd": 0})
    return {"image": {"id": image_id, "file_name": file_name, "height": h, "width": w}, "annotations": annotations}


def finish_coco(annotation_file: Path, units: list[dict[str, Any]]) -> None:
    """The instances JSON (annotation ids numbered from 1 in image order)."""
    annotations = [a for u in units for a in u["annotations"]]
    for ann_id, ann in enumerate(annotations, start=1):
        ann["id"] = ann_id
    categories = [{"id": cid, "name": name, "supercategory": "synthetic"}
                  for cid, name in sorted(COCO_CATEGORIES.values())]
    annotation_file.parent.mkdir(parents=True, exist_ok=True)
    annotation_file.write_text(json.dumps({
        "info": {"description": "patchwork synthetic COCO-style still images"}, "licenses": [],
        "images": [u["image"] for u in units], "annotations": annotations, "categories": categories}))


def voc_palette() -> list[int]:
    """The Pascal VOC colour map (index 255, the void band, is ``(224, 224, 192)``), flattened."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def voc_scene(config: SyntheticDataConfig, index: int) -> Scene:
    """The scene of VOC-style image ``index``."""
    rng = unit_rng(config, VOC_SET, 0, index)
    return still_scene(rng, _still_size(rng, config), tuple(VOC_CLASSES), config.max_objects, config.object_scale)


def voc_image_id(index: int) -> str:
    """VOC-style image ids, ``2012_000001`` onwards."""
    return f"2012_{index + 1:06d}"


def write_voc_image(year_dir: Path, config: SyntheticDataConfig, index: int) -> dict[str, Any]:
    """Write VOC-style image ``index``: JPEG, XML (1-based inclusive boxes, objects in instance
    order) and SegmentationObject palette PNG (instance ``k + 1`` for the ``k``-th object)."""
    scene = voc_scene(config, index)
    rendered = scene.render(0)
    h, w = scene.frame_size
    image_id = voc_image_id(index)
    _jpeg(rendered.image, year_dir / "JPEGImages" / f"{image_id}.jpg", config.jpeg_quality)
    instances = np.zeros((h, w), dtype=np.uint8)
    objects = []
    for k, o in enumerate(rendered.objects, start=1):
        instances[rendered.owner == o.index] = k
        x1, y1, x2, y2 = o.box
        truncated = int(x1 == 0 or y1 == 0 or x2 == w - 1 or y2 == h - 1)
        objects.append(f"\t<object>\n\t\t<name>{VOC_CLASSES[o.class_name]}</name>\n\t\t<pose>Unspecified</pose>\n"
                       f"\t\t<truncated>{truncated}</truncated>\n\t\t<difficult>0</difficult>\n"
                       f"\t\t<bndbox>\n\t\t\t<xmin>{x1 + 1}</xmin>\n\t\t\t<ymin>{y1 + 1}</ymin>\n"
                       f"\t\t\t<xmax>{x2 + 1}</xmax>\n\t\t\t<ymax>{y2 + 1}</ymax>\n\t\t</bndbox>\n\t</object>\n")
    xml = year_dir / "Annotations" / f"{image_id}.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    xml.write_text(f"<annotation>\n\t<folder>VOC2012</folder>\n\t<filename>{image_id}.jpg</filename>\n"
                   f"\t<source>\n\t\t<database>patchwork synthetic</database>\n\t</source>\n"
                   f"\t<size>\n\t\t<width>{w}</width>\n\t\t<height>{h}</height>\n\t\t<depth>3</depth>\n\t</size>\n"
                   f"\t<segmented>1</segmented>\n{''.join(objects)}</annotation>\n")
    # Palette PNG as in VOC (torchvision.io writes only gray/RGB PNGs, hence PIL here).
    png = Image.fromarray(instances, mode="P")
    png.putpalette(voc_palette())
    (year_dir / "SegmentationObject").mkdir(parents=True, exist_ok=True)
    png.save(year_dir / "SegmentationObject" / f"{image_id}.png")
    return {"id": image_id}


def finish_voc(year_dir: Path, units: list[dict[str, Any]]) -> None:
    """``ImageSets/{Main,Segmentation}/{train,trainval}.txt`` listing every image."""
    text = "".join(f"{u['id']}\n" for u in units)
    for sub in ("Main", "Segmentation"):
        (year_dir / "ImageSets" / sub).mkdir(parents=True, exist_ok=True)
        for split in ("train", "trainval"):
            (year_dir / "ImageSets" / sub / f"{split}.txt").write_text(text)
