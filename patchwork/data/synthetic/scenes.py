"""Synthetic scenes: objects moving over a textured world seen by a moving camera.

A video is a world canvas (textured background), a camera path and a set of sprites with
trajectories and a depth order. Rendering a frame pastes the sprites back to front, so objects
enter, leave and occlude each other; the annotation of each object is the tight box of its
*visible* pixels (as VID annotators box the visible part), with an ``occluded`` flag.

Two kinds of videos make hard attention matter (paper Sec. 1, 3.1):

- detection scenes (:func:`detection_scene`): several classes, small to large objects, most of
  them "residents" wandering in a focus region a fraction of the frame wide, some "passers" that
  cross the frame; the camera pans (sometimes with shake) or stands still.
- segmentation scenes (:func:`segmentation_scene`): one or two primary objects (the foreground,
  as in DAVIS) that the camera loosely follows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from patchwork.data.synthetic.appearance import STYLES, VIDEO_CLASSES, Sprite, make_sprite, textured_background

#: Objects with fewer visible pixels than this are not annotated (slivers at the frame border).
MIN_VISIBLE_PIXELS = 4


@dataclass
class SceneObject:
    """A sprite with a trajectory: centre ``start + velocity * t + wobble(t)`` in world pixels."""

    sprite: Sprite
    track_id: int
    start: np.ndarray
    velocity: np.ndarray
    wobble: np.ndarray = field(default_factory=lambda: np.zeros(2))
    wobble_freq: float = 0.0
    wobble_phase: float = 0.0
    foreground: bool = True

    @property
    def class_name(self) -> str:
        """The synthetic class (a VID class name, or ``person``)."""
        return self.sprite.style.name

    def centre(self, t: float) -> np.ndarray:
        """World position ``(x, y)`` of the sprite centre at frame ``t``."""
        return self.start + self.velocity * t + self.wobble * np.sin(self.wobble_freq * t + self.wobble_phase)


@dataclass
class Camera:
    """The frame's top-left corner in world pixels: ``start + velocity * t + shake * noise``."""

    start: np.ndarray
    velocity: np.ndarray
    shake: np.ndarray  # (T, 2) per-frame offsets

    def corner(self, t: int) -> tuple[int, int]:
        """Integer ``(x, y)`` of the frame's top-left corner at frame ``t``."""
        x, y = self.start + self.velocity * t + self.shake[t]
        return int(round(x)), int(round(y))


@dataclass
class ObjectAnnotation:
    """One visible object in one frame. ``box``: inclusive integer pixel bounds ``(x1, y1, x2,
    y2)`` of its visible pixels; ``index``: its position in the scene's object list."""

    index: int
    track_id: int
    class_name: str
    box: tuple[int, int, int, int]
    visible_pixels: int
    occluded: bool
    foreground: bool


@dataclass
class RenderedFrame:
    """``image`` uint8 ``(H, W, 3)``, the visible ``objects``, the ``owner`` map int16 ``(H, W)``
    (index of the object seen at each pixel, ``-1`` for background) and each object's sprite
    top-left ``(x, y)`` in frame pixels."""

    image: np.ndarray
    objects: list[ObjectAnnotation]
    owner: np.ndarray
    placements: list[tuple[int, int]]

    def foreground(self) -> np.ndarray:
        """bool ``(H, W)``: pixels of objects flagged ``foreground``."""
        fg_ids = [a.index for a in self.objects if a.foreground]
        return np.isin(self.owner, fg_ids)


@dataclass
class Scene:
    """A world ``canvas`` uint8 ``(Hc, Wc, 3)``, a ``camera``, objects in back-to-front order, and
    the frame size ``(H, W)``."""

    canvas: np.ndarray
    camera: Camera
    objects: list[SceneObject]
    frame_size: tuple[int, int]

    def render(self, t: int) -> RenderedFrame:
        """Draw frame ``t``: the camera's crop of the canvas with the sprites pasted in order."""
        h, w = self.frame_size
        cx, cy = self.camera.corner(t)
        image = self.canvas[cy:cy + h, cx:cx + w].copy()
        owner = np.full((h, w), -1, dtype=np.int16)
        painted, regions, placements = {}, {}, []
        for k, obj in enumerate(self.objects):
            sh, sw = obj.sprite.alpha.shape
            centre = obj.centre(t) - (cx, cy)
            x0, y0 = int(round(centre[0] - sw / 2)), int(round(centre[1] - sh / 2))
            placements.append((x0, y0))
            fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + sw, w), min(y0 + sh, h)
            if fx0 >= fx1 or fy0 >= fy1:
                continue
            alpha = obj.sprite.alpha[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
            image[fy0:fy1, fx0:fx1][alpha] = obj.sprite.pixels[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0][alpha]
            owner[fy0:fy1, fx0:fx1][alpha] = k
            painted[k] = int(alpha.sum())
            regions[k] = (fx0, fy0, fx1, fy1)
        annotations = []
        for k, (fx0, fy0, fx1, fy1) in regions.items():
            visible = owner[fy0:fy1, fx0:fx1] == k
            count = int(visible.sum())
            if count < MIN_VISIBLE_PIXELS:
                continue
            rows, cols = np.nonzero(visible.any(1))[0], np.nonzero(visible.any(0))[0]
            obj = self.objects[k]
            annotations.append(ObjectAnnotation(
                index=k, track_id=obj.track_id, class_name=obj.class_name,
                box=(fx0 + int(cols[0]), fy0 + int(rows[0]), fx0 + int(cols[-1]), fy0 + int(rows[-1])),
                visible_pixels=count, occluded=count < 0.9 * painted[k], foreground=obj.foreground))
        return RenderedFrame(image, annotations, owner, placements)


def _camera(rng: np.random.Generator, num_frames: int,
            follow: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Camera velocity ``(2,)``, shake ``(T, 2)`` and the shake margin in pixels."""
    if follow is not None:
        velocity = follow * rng.uniform(0.3, 1.0)
    elif rng.random() < 0.25:
        velocity = np.zeros(2)
    else:
        a = rng.uniform(0, 2 * np.pi)
        velocity = rng.uniform(0.3, 2.0) * np.array([np.cos(a), np.sin(a) * 0.5])
    amplitude = rng.uniform(0.5, 2.5) if rng.random() < 0.3 else 0.0
    shake = amplitude * np.clip(rng.normal(0, 0.5, (num_frames, 2)), -1, 1)
    return velocity, shake, int(np.ceil(amplitude))


def _world(rng: np.random.Generator, frame_size: tuple[int, int], num_frames: int, velocity: np.ndarray,
           shake: np.ndarray, margin: int) -> tuple[np.ndarray, Camera]:
    """A canvas just large enough for the camera path, and the camera on it."""
    h, w = frame_size
    travel = np.abs(velocity) * max(num_frames - 1, 0)
    size_x, size_y = w + int(np.ceil(travel[0])) + 2 * margin + 2, h + int(np.ceil(travel[1])) + 2 * margin + 2
    # Start at the end of the canvas the camera moves away from.
    start = margin + 1 + np.where(velocity < 0, travel, 0.0)
    canvas = textured_background(size_y, size_x, rng, clutter=int(size_x * size_y / 4000) + 8)
    return canvas, Camera(start, velocity, shake)


def _entering(rng: np.random.Generator, camera: Camera, frame_size: tuple[int, int], sprite: Sprite,
              speed: float, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and velocity of a sprite that enters the frame from a random side at a random time
    in the first half of the clip (and may leave again)."""
    h, w = frame_size
    t_in = rng.uniform(0, max(num_frames / 2, 1))
    corner = camera.start + camera.velocity * t_in
    sh, sw = sprite.alpha.shape
    side = rng.integers(4)
    inward = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]], dtype=float)[side]
    along = rng.uniform(0.1, 0.9)
    entry = ((-sw / 2, along * h), (w + sw / 2, along * h), (along * w, -sh / 2), (along * w, h + sh / 2))[side]
    a = rng.uniform(-0.5, 0.5)
    direction = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ inward
    velocity = direction * speed + camera.velocity
    return corner + np.array(entry) - velocity * t_in, velocity


def detection_scene(rng: np.random.Generator, frame_size: tuple[int, int], num_frames: int, max_objects: int,
                    object_scale: float = 1.0, classes: tuple[str, ...] | None = None) -> Scene:
    """A VID-style scene: 1-3 classes, 1..``max_objects`` objects of varied sizes, residents in a
    focus region and passers entering/leaving, back-to-front order random."""
    h, w = frame_size
    velocity, shake, margin = _camera(rng, num_frames)
    canvas, camera = _world(rng, frame_size, num_frames, velocity, shake, margin)
    names = classes or tuple(rng.choice(VIDEO_CLASSES, size=rng.integers(1, 4), replace=False))
    # The focus region (a quarter to half of each frame side) is where residents stay, so most
    # of the action happens in a fraction of the frame.
    mid = camera.start + camera.velocity * (num_frames / 2)
    focus_size = np.array([w, h]) * rng.uniform(0.25, 0.5, 2)
    focus_lo = mid + rng.uniform(0, 1, 2) * (np.array([w, h]) - focus_size)
    objects = []
    for track_id in range(int(rng.integers(1, max_objects + 1))):
        style = STYLES[str(rng.choice(names))]
        scale = object_scale * (0.5 if rng.random() < 0.25 else rng.uniform(0.7, 1.3))
        sprite = make_sprite(style, rng, scale)
        speed = rng.uniform(*style.speed)
        if rng.random() < 0.65:  # resident: wanders in the focus region; one in five drifts away
            centre = focus_lo + rng.uniform(0, 1, 2) * focus_size
            a = rng.uniform(0, 2 * np.pi)
            drift = speed if rng.random() < 0.2 else speed * rng.uniform(0, 0.3)
            start, obj_velocity = centre, drift * np.array([np.cos(a), np.sin(a)])
        else:
            start, obj_velocity = _entering(rng, camera, frame_size, sprite, speed, num_frames)
        objects.append(SceneObject(sprite, track_id, start, obj_velocity, wobble=rng.uniform(0, 5, 2),
                                   wobble_freq=rng.uniform(0.05, 0.3), wobble_phase=rng.uniform(0, 2 * np.pi)))
    order = rng.permutation(len(objects))
    return Scene(canvas, camera, [objects[i] for i in order], frame_size)


def segmentation_scene(rng: np.random.Generator, frame_size: tuple[int, int], num_frames: int,
                       object_scale: float = 1.0) -> Scene:
    """A DAVIS-style scene: one (sometimes two) primary objects, all foreground, that the camera
    loosely follows."""
    h, w = frame_size
    count = 1 if rng.random() < 0.75 else 2
    styles = [STYLES[str(rng.choice(VIDEO_CLASSES))] for _ in range(count)]
    speeds = [rng.uniform(*s.speed) for s in styles]
    a = rng.uniform(0, 2 * np.pi)
    heading = np.array([np.cos(a), 0.4 * np.sin(a)])
    velocity, shake, margin = _camera(rng, num_frames, follow=heading * speeds[0])
    canvas, camera = _world(rng, frame_size, num_frames, velocity, shake, margin)
    objects = []
    for track_id, (style, speed) in enumerate(zip(styles, speeds)):
        # DAVIS subjects are large: a long side of 20-50% of the frame width, whatever the class.
        long_side = w * rng.uniform(0.2, 0.5) * object_scale
        sprite = make_sprite(style, rng, long_side / np.mean(style.size))
        centre = camera.start + np.array([w, h]) * rng.uniform(0.3, 0.7, 2)
        objects.append(SceneObject(sprite, track_id, centre, heading * speed, wobble=rng.uniform(0, 4, 2),
                                   wobble_freq=rng.uniform(0.05, 0.2), wobble_phase=rng.uniform(0, 2 * np.pi)))
    return Scene(canvas, camera, objects, frame_size)


def still_scene(rng: np.random.Generator, frame_size: tuple[int, int], classes: tuple[str, ...], max_objects: int,
                object_scale: float = 1.0) -> Scene:
    """A still image (COCO/VOC style): 1..``max_objects`` objects of ``classes`` at random places,
    possibly overlapping and cut by the border; no motion."""
    h, w = frame_size
    canvas = textured_background(h, w, rng, clutter=int(h * w / 4000) + 8)
    camera = Camera(np.zeros(2), np.zeros(2), np.zeros((1, 2)))
    objects = []
    for track_id in range(int(rng.integers(1, max_objects + 1))):
        style = STYLES[str(rng.choice(classes))]
        sprite = make_sprite(style, rng, object_scale * (0.5 if rng.random() < 0.25 else rng.uniform(0.8, 1.6)))
        centre = rng.uniform(0, 1, 2) * np.array([w, h])
        objects.append(SceneObject(sprite, track_id, centre, np.zeros(2)))
    return Scene(canvas, camera, objects, frame_size)
