"""What synthetic objects and backgrounds look like: outlines, textures, class styles.

Pure numpy drawing. Each object class has its own outline, palette, texture, size range and
speed, so a detector can tell them apart by appearance; backgrounds are multi-scale textured
noise with unannotated clutter shapes, so "not an object" is not "flat colour". Polygons are
rasterised with pycocotools, the same code that later decodes COCO polygons, so a COCO
annotation and the painted pixels agree exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as TF
from pycocotools import mask as coco_mask

Outline = Callable[[np.random.Generator], np.ndarray]
Texture = Callable[[int, int, np.ndarray, np.random.Generator], np.ndarray]

#: Smallest long side of an object in pixels: anything smaller is unreadable even to a person.
MIN_SPRITE_SIZE = 6.0


# ---------------------------------------------------------------- outlines: (N, 2) in [-0.5, 0.5]^2

def ellipse(rng: np.random.Generator, wobble: float = 0.0, n: int = 24) -> np.ndarray:
    """An ellipse (optionally with a lumpy radius) filling the unit box."""
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = 0.5 * (1.0 - wobble * rng.random(n))
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def blob(rng: np.random.Generator) -> np.ndarray:
    """A lumpy ellipse (animals' bodies)."""
    return ellipse(rng, wobble=0.25)


def rounded_rect(rng: np.random.Generator) -> np.ndarray:
    """A rectangle with cut corners (vehicles)."""
    c = 0.5 - rng.uniform(0.06, 0.15)
    return np.array([[-c, -0.5], [c, -0.5], [0.5, -c], [0.5, c], [c, 0.5], [-c, 0.5], [-0.5, c], [-0.5, -c]])


def plane(rng: np.random.Generator) -> np.ndarray:
    """Fuselage, swept wings and a tail."""
    w = rng.uniform(0.08, 0.14)
    return np.array([[0.5, 0], [0.3, -w], [0.05, -w], [-0.15, -0.5], [-0.25, -0.5], [-0.15, -w], [-0.4, -w],
                     [-0.5, -0.25], [-0.5, 0.25], [-0.4, w], [-0.15, w], [-0.25, 0.5], [-0.15, 0.5], [0.05, w],
                     [0.3, w]])


def chevron(rng: np.random.Generator) -> np.ndarray:
    """A flapping-bird V."""
    d = rng.uniform(0.0, 0.3)
    return np.array([[-0.5, -0.5 + d], [0, 0.1], [0.5, -0.5 + d], [0.5, -0.1 + d], [0, 0.5], [-0.5, -0.1 + d]])


def hexagon(rng: np.random.Generator) -> np.ndarray:
    """A shell."""
    a = np.linspace(0, 2 * np.pi, 6, endpoint=False) + rng.uniform(0, np.pi / 3)
    return 0.5 * np.stack([np.cos(a), np.sin(a)], 1)


def diamond(rng: np.random.Generator) -> np.ndarray:
    """A long thin lizard-like diamond with a tail."""
    return np.array([[0.5, 0], [0.15, -0.5], [-0.2, -0.3], [-0.5, 0], [-0.2, 0.3], [0.15, 0.5]])


def boat(rng: np.random.Generator) -> np.ndarray:
    """A hull with a sail."""
    m = rng.uniform(-0.15, 0.15)
    return np.array([[-0.5, 0.1], [m - 0.05, 0.1], [m - 0.05, -0.5], [m + 0.35, 0.05], [m + 0.05, 0.05],
                     [m + 0.05, 0.1], [0.5, 0.1], [0.3, 0.5], [-0.3, 0.5]])


def person(rng: np.random.Generator) -> np.ndarray:
    """Head, body, legs: the unmapped (non-VID) class of the still sets."""
    return np.array([[-0.12, -0.5], [0.12, -0.5], [0.12, -0.32], [0.4, -0.25], [0.35, 0.1], [0.15, 0.1],
                     [0.2, 0.5], [0.03, 0.5], [0, 0.15], [-0.03, 0.5], [-0.2, 0.5], [-0.15, 0.1], [-0.35, 0.1],
                     [-0.4, -0.25], [-0.12, -0.32]])


# ---------------------------------------------------------------- textures: (h, w, 3) float in [0, 255]

def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")


def _noisy(base: np.ndarray, rng: np.random.Generator, amount: float = 8.0) -> np.ndarray:
    return base + rng.normal(0.0, amount, base.shape).astype(np.float32)


def solid(h: int, w: int, colors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One colour with a light-to-dark shading and grain."""
    y, _ = _grid(h, w)
    shade = 1.15 - 0.3 * y / max(h - 1, 1)
    return _noisy(colors[0][None, None, :] * shade[..., None], rng)


def stripes(h: int, w: int, colors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two-colour stripes at a random angle (zebra, tiger-like)."""
    y, x = _grid(h, w)
    angle, period = rng.uniform(0, np.pi), rng.uniform(4.0, 8.0)
    on = np.sin((x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi / period) > 0
    return _noisy(np.where(on[..., None], colors[0], colors[1]), rng)


def spots(h: int, w: int, colors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Base colour with darker round spots (dogs, turtles)."""
    y, x = _grid(h, w)
    out = np.broadcast_to(colors[0], (h, w, 3)).copy()
    for _ in range(max(2, h * w // 120)):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1.5, max(2.0, min(h, w) / 5))
        out[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = colors[1]
    return _noisy(out, rng)


def checker(h: int, w: int, colors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A checkerboard (shells, scales)."""
    y, x = _grid(h, w)
    cell = rng.uniform(3.0, 6.0)
    on = ((y // cell + x // cell) % 2) == 0
    return _noisy(np.where(on[..., None], colors[0], colors[1]), rng)


def windows(h: int, w: int, colors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Body colour with a band of dark windows (buses, cars)."""
    y, x = _grid(h, w)
    pitch = max(4.0, w / rng.integers(2, 7))
    band = (y > 0.2 * h) & (y < 0.5 * h) & ((x % pitch) > 0.3 * pitch)
    return _noisy(np.where(band[..., None], colors[1], colors[0]), rng, 5.0)


def patches(h: int, w: int, colors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """White body with black side patches (giant panda)."""
    y, x = _grid(h, w)
    side = (np.abs(x - w / 2) > 0.3 * w) | ((y > 0.6 * h) & (np.abs(x - w / 2) > 0.1 * w))
    return _noisy(np.where(side[..., None], colors[1], colors[0]), rng)


# ---------------------------------------------------------------- class styles

@dataclass(frozen=True)
class ObjectStyle:
    """How one synthetic class looks and moves.

    ``size``: range of the object's long side in pixels at ``object_scale = 1``; ``aspect``:
    width/height range; ``speed``: range of pixels per frame; ``rotate``: random orientation.
    """

    name: str
    outline: Outline
    texture: Texture
    palette: tuple[tuple[tuple[int, int, int], tuple[int, int, int]], ...]
    size: tuple[float, float]
    aspect: tuple[float, float]
    speed: tuple[float, float]
    rotate: bool = False


#: Synthetic classes, named after VID classes (``person`` has no VID counterpart: it exercises
#: the dropping of unmapped COCO/VOC classes). Sizes span small (birds, lizards: under 16 px) to
#: large (buses); motion spans slow turtles to fast birds and planes.
STYLES: dict[str, ObjectStyle] = {s.name: s for s in (
    ObjectStyle("airplane", plane, solid, (((225, 225, 230), (0, 0, 0)), ((190, 195, 210), (0, 0, 0))),
                (28, 72), (1.2, 1.8), (2.0, 4.0)),
    ObjectStyle("bird", chevron, solid, (((40, 30, 25), (0, 0, 0)), ((20, 20, 60), (0, 0, 0))),
                (8, 16), (1.3, 1.8), (2.0, 4.5), rotate=True),
    ObjectStyle("bus", rounded_rect, windows, (((235, 190, 20), (40, 50, 60)), ((200, 40, 30), (30, 40, 50))),
                (70, 130), (2.4, 3.2), (0.8, 2.0)),
    ObjectStyle("car", rounded_rect, windows, (((30, 70, 200), (20, 25, 35)), ((200, 30, 40), (25, 25, 30)),
                                               ((235, 235, 235), (30, 30, 40))),
                (26, 52), (1.8, 2.4), (1.0, 3.0)),
    ObjectStyle("dog", blob, spots, (((150, 95, 50), (70, 40, 20)), ((200, 160, 110), (90, 60, 30))),
                (20, 44), (1.3, 1.7), (0.8, 2.5)),
    ObjectStyle("giant_panda", blob, patches, (((240, 240, 235), (15, 15, 15)),), (36, 70), (0.9, 1.2), (0.2, 0.8)),
    ObjectStyle("lizard", diamond, checker, (((60, 160, 40), (200, 200, 40)), ((110, 180, 60), (40, 80, 30))),
                (10, 20), (2.2, 3.0), (0.5, 2.0), rotate=True),
    ObjectStyle("turtle", hexagon, checker, (((60, 110, 50), (130, 150, 60)),), (14, 30), (1.0, 1.3), (0.2, 0.6),
                rotate=True),
    ObjectStyle("watercraft", boat, solid, (((245, 245, 250), (0, 0, 0)), ((200, 60, 40), (0, 0, 0))),
                (30, 64), (1.1, 1.5), (0.5, 1.5)),
    ObjectStyle("zebra", blob, stripes, (((245, 245, 245), (15, 15, 15)),), (40, 90), (1.3, 1.7), (0.5, 2.0)),
    ObjectStyle("person", person, solid, (((230, 180, 140), (0, 0, 0)), ((90, 60, 150), (0, 0, 0))),
                (30, 70), (0.45, 0.6), (0.5, 1.5)),
)}

#: Classes of the synthetic video sets (VID and DAVIS style).
VIDEO_CLASSES = ("airplane", "bird", "bus", "car", "dog", "giant_panda", "lizard", "turtle", "watercraft", "zebra")
#: Synthetic classes -> COCO category (id, name); the still sets only draw these.
COCO_CATEGORIES = {"person": (1, "person"), "car": (3, "car"), "airplane": (5, "airplane"), "bus": (6, "bus"),
                   "watercraft": (9, "boat"), "bird": (16, "bird"), "dog": (18, "dog"), "zebra": (24, "zebra")}
#: Synthetic classes -> VOC class name.
VOC_CLASSES = {"person": "person", "car": "car", "airplane": "aeroplane", "bus": "bus", "watercraft": "boat",
               "bird": "bird", "dog": "dog"}


def rasterize(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    """Fill a polygon ``(N, 2)`` of ``(x, y)`` pixel coordinates: bool ``(height, width)``."""
    rle = coco_mask.frPyObjects([polygon.reshape(-1).astype(np.float64).tolist()], height, width)
    return coco_mask.decode(rle)[..., 0].astype(bool)


@dataclass
class Sprite:
    """A drawn object: ``pixels`` uint8 ``(h, w, 3)``, ``alpha`` bool ``(h, w)`` and the outline
    ``polygon`` ``(N, 2)`` in the sprite's own pixel coordinates."""

    style: ObjectStyle
    pixels: np.ndarray
    alpha: np.ndarray
    polygon: np.ndarray


def make_sprite(style: ObjectStyle, rng: np.random.Generator, scale: float = 1.0) -> Sprite:
    """Draw one object of ``style``: random size within the style's range times ``scale``,
    random aspect, orientation (if the style rotates), palette and texture."""
    long_side = max(rng.uniform(*style.size) * scale, MIN_SPRITE_SIZE)
    aspect = rng.uniform(*style.aspect)
    w, h = (long_side, long_side / aspect) if aspect >= 1 else (long_side * aspect, long_side)
    points = style.outline(rng) * np.array([w, h])
    if rng.random() < 0.5:
        points[:, 0] *= -1  # face left or right
    if style.rotate:
        a = rng.uniform(0, 2 * np.pi)
        points = points @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    points -= points.min(0)
    size_w, size_h = int(np.ceil(points[:, 0].max())) + 1, int(np.ceil(points[:, 1].max())) + 1
    alpha = rasterize(points, size_h, size_w)
    palette = np.array(style.palette[rng.integers(len(style.palette))], dtype=np.float32)
    palette = np.clip(palette * rng.uniform(0.85, 1.15, (1, 3)), 0, 255)
    pixels = np.clip(style.texture(size_h, size_w, palette, rng), 0, 255).astype(np.uint8)
    return Sprite(style, pixels, alpha, points)


# ---------------------------------------------------------------- backgrounds

#: Background palettes: grass, sand, water, tarmac, sky-and-haze, forest floor.
_GROUNDS = np.array([
    [[70, 110, 40], [110, 140, 60], [50, 80, 35]],
    [[190, 170, 120], [160, 140, 100], [210, 195, 150]],
    [[40, 90, 140], [70, 120, 170], [30, 60, 110]],
    [[90, 90, 95], [120, 118, 115], [60, 60, 65]],
    [[150, 180, 215], [200, 210, 225], [120, 150, 190]],
    [[90, 70, 45], [60, 80, 40], [120, 95, 60]],
], dtype=np.float32)


def _smooth_noise(h: int, w: int, cell: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    coarse = torch.from_numpy(rng.random((1, channels, h // cell + 2, w // cell + 2), dtype=np.float32))
    fine = TF.interpolate(coarse, size=(h + 2 * cell, w + 2 * cell), mode="bicubic", align_corners=False)
    return fine[0, :, cell:cell + h, cell:cell + w].permute(1, 2, 0).numpy()


def textured_background(height: int, width: int, rng: np.random.Generator, clutter: int = 30) -> np.ndarray:
    """A textured scene of ``height x width``: uint8 ``(H, W, 3)``.

    Multi-scale noise blends a ground palette; ``clutter`` unannotated shapes (stones, bushes,
    stripes of road paint) make the background as busy as the objects.
    """
    palette = _GROUNDS[rng.integers(len(_GROUNDS))] * rng.uniform(0.8, 1.2, (1, 3))
    weights = _smooth_noise(height, width, 48, 3, rng) ** 2 + 0.4 * _smooth_noise(height, width, 12, 3, rng)
    weights /= weights.sum(-1, keepdims=True)
    image = weights @ palette
    image += rng.normal(0.0, 7.0, (height, width, 1)).astype(np.float32)
    for _ in range(clutter):
        size = rng.uniform(6, 40)
        outline = (ellipse(rng, wobble=0.4) if rng.random() < 0.6 else rounded_rect(rng))
        points = outline * np.array([size * rng.uniform(0.4, 2.5), size]) + rng.uniform(0, 1, 2) * [width, height]
        x0, y0 = np.floor(points.min(0)).astype(int)
        local = points - [x0, y0]
        mask = rasterize(local, int(local[:, 1].max()) + 2, int(local[:, 0].max()) + 2)
        ys, xs = np.nonzero(mask)
        ys, xs = ys + y0, xs + x0
        keep = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
        tone = palette[rng.integers(3)] * rng.uniform(0.5, 1.3)
        image[ys[keep], xs[keep]] = tone + rng.normal(0, 10.0, (int(keep.sum()), 3))
    return np.clip(image, 0, 255).astype(np.uint8)
