"""Fake videos from still images (paper Sec. 3.4).

"For a single static image, we randomly sample 2 boxes and build a video sequence by moving the
view from one box to the other. We make sure that at least one of the two boxes overlaps with a
certain amount of groundtruth detection boxes or segmentation foreground pixels [...]. The speed
with which the view window moves adheres to a Gaussian distribution."

Choices the paper leaves open, made here:

- A *view* is a box with the output aspect ratio, inside the image, of width
  ``scale * (largest such width)`` with ``scale ~ U(view_scale)``; the two views may differ in
  size, so the camera zooms as it pans.
- Overlap of a view ``V`` with one ground truth ``G`` (a box, or the foreground pixels) is
  ``|G & V| / min(|G|, |V|)``: 1 when the view holds the whole object *or* is filled by it, so the
  rule works for tiny and for huge objects alike. A view qualifies when some ground truth
  reaches ``min_gt_overlap``. When random draws fail, the qualifying view is centred on a random
  ground-truth object; an image with no ground truth gets two random views.
- Speed ``|N(speed_mean, speed_std)|`` is in view widths per frame, measured on the fastest
  moving corner, so motion looks alike on images of any resolution.
- A ``T``-frame clip may be shorter than the trip between the views, so it starts *or* ends
  (a coin flip) on the qualifying view: every clip shows ground truth, and the view moves away
  from it or arrives at it. When the trip is shorter than the clip, the view ping-pongs between
  the two boxes, so every frame moves.
- Each frame is the view cropped and resized with ``torchvision.ops.roi_align``
  (``aligned=True``: output pixel ``j`` samples source ``x1 + (j + 0.5) / s``, the same affine map the
  boxes go through; adaptive sampling averages over each output pixel, i.e. antialiasing).
  Boxes are clipped to the view and dropped below ``min_box_size`` output pixels; masks are
  resampled and thresholded at 0.5.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import roi_align

from patchwork.data.records import StillImageRecord, Target
from patchwork.data.transforms import check_image_size


@dataclass
class FakeClip:
    """A fake video: ``frames`` uint8 ``(T, 3, H, W)``, ``T`` per-frame ``targets`` in output
    pixels, and the ``views`` float ``(T, 4)`` xyxy in source-image pixels."""

    frames: Tensor
    targets: list[Target]
    views: Tensor


def gt_overlap(views: np.ndarray, target: Target) -> np.ndarray:
    """Best overlap ``max_G |G & V| / min(|G|, |V|)`` of each view with the ground truth.

    Args:
        views: float ``(K, 4)`` xyxy in image pixels.
        target: boxes ``(G, 4)`` and optionally a bool ``mask (H, W)`` (the foreground counts as
            one ground truth).

    Returns float ``(K,)`` in ``[0, 1]``; zeros when there is no ground truth.
    """
    views = np.asarray(views, dtype=np.float64).reshape(-1, 4)
    view_area = (views[:, 2] - views[:, 0]) * (views[:, 3] - views[:, 1])
    best = np.zeros(len(views))
    boxes = target["boxes"].numpy().astype(np.float64)
    if len(boxes):
        iw = np.minimum(views[:, None, 2], boxes[None, :, 2]) - np.maximum(views[:, None, 0], boxes[None, :, 0])
        ih = np.minimum(views[:, None, 3], boxes[None, :, 3]) - np.maximum(views[:, None, 1], boxes[None, :, 1])
        inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
        box_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        denom = np.maximum(np.minimum(box_area[None, :], view_area[:, None]), 1e-9)
        best = np.maximum(best, (inter / denom).max(axis=1))
    mask = target.get("mask")
    if mask is not None and bool(mask.any()):
        # Summed-area table: the foreground inside any box in O(1).
        sat = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
        sat[1:, 1:] = mask.numpy().cumsum(0).cumsum(1)
        x1, y1, x2, y2 = (np.clip(np.round(views[:, i]).astype(int), 0, mask.shape[1 - i % 2]) for i in range(4))
        inside = sat[y2, x2] - sat[y1, x2] - sat[y2, x1] + sat[y1, x1]
        best = np.maximum(best, inside / np.maximum(np.minimum(sat[-1, -1], view_area), 1e-9))
    return np.clip(best, 0.0, 1.0)


def ground_truth_boxes(target: Target) -> np.ndarray:
    """The ground-truth objects as boxes ``(G, 4)``: the target's boxes, plus the foreground
    mask's bounding box when there is a mask."""
    boxes = [target["boxes"].numpy().astype(np.float64).reshape(-1, 4)]
    mask = target.get("mask")
    if mask is not None and bool(mask.any()):
        ys, xs = np.nonzero(mask.numpy().any(1))[0], np.nonzero(mask.numpy().any(0))[0]
        boxes.append(np.array([[xs[0], ys[0], xs[-1] + 1, ys[-1] + 1]], dtype=np.float64))
    return np.concatenate(boxes)


def view_path(anchor: np.ndarray, other: np.ndarray, speed: float, clip_length: int,
              anchor_last: bool = False) -> np.ndarray:
    """Views ``(T, 4)`` moving between ``anchor`` and ``other`` (ping-pong), ``speed`` view widths
    per frame on the fastest corner; frame 0 is ``anchor`` (frame ``T - 1`` if ``anchor_last``)."""
    mean_width = 0.5 * ((anchor[2] - anchor[0]) + (other[2] - other[0]))
    distance = np.abs(other - anchor).max() / max(mean_width, 1e-9)
    step = speed / distance if distance > 1e-9 else 0.0
    frames_from_anchor = np.arange(clip_length)[::-1] if anchor_last else np.arange(clip_length)
    phase = np.mod(frames_from_anchor * step, 2.0)
    u = np.where(phase > 1.0, 2.0 - phase, phase)
    return anchor[None, :] + u[:, None] * (other - anchor)[None, :]


class FakeVideoSynthesizer:
    """Turns a still image with boxes and/or a foreground mask into a moving-view clip.

    Args:
        view_scale: range of view widths as a fraction of the largest view of the output aspect
            ratio that fits the image.
        min_gt_overlap: the overlap (module docstring) at least one of the two views must reach.
        speed_mean, speed_std: the Gaussian of the view speed, in view widths per frame.
        min_box_size: boxes narrower or shorter than this (output pixels) after clipping to the
            view are dropped.
        candidates: random views drawn per attempt to find a qualifying one.
    """

    def __init__(self, view_scale: Sequence[float] = (0.4, 1.0), min_gt_overlap: float = 0.5,
                 speed_mean: float = 0.05, speed_std: float = 0.03, min_box_size: float = 2.0,
                 candidates: int = 32) -> None:
        lo, hi = float(view_scale[0]), float(view_scale[1])
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"view_scale must satisfy 0 < lo <= hi <= 1, got {view_scale}")
        self.view_scale = (lo, hi)
        self.min_gt_overlap = float(min_gt_overlap)
        self.speed_mean = float(speed_mean)
        self.speed_std = float(speed_std)
        self.min_box_size = float(min_box_size)
        self.candidates = int(candidates)

    def __repr__(self) -> str:
        return (f"FakeVideoSynthesizer(view_scale={self.view_scale}, min_gt_overlap={self.min_gt_overlap}, "
                f"speed=N({self.speed_mean}, {self.speed_std}))")

    def random_views(self, image_hw: tuple[int, int], aspect: float, count: int,
                     rng: np.random.Generator) -> np.ndarray:
        """``count`` random views ``(count, 4)`` of width/height ``aspect`` inside the image."""
        h0, w0 = image_hw
        max_w = min(float(w0), h0 * aspect)
        w = rng.uniform(*self.view_scale, size=count) * max_w
        h = w / aspect
        x1 = rng.uniform(0.0, 1.0, size=count) * (w0 - w)
        y1 = rng.uniform(0.0, 1.0, size=count) * (h0 - h)
        return np.stack([x1, y1, x1 + w, y1 + h], axis=1)

    def view_on_object(self, image_hw: tuple[int, int], aspect: float, gt_box: np.ndarray,
                       rng: np.random.Generator) -> np.ndarray:
        """A view ``(4,)`` centred on ``gt_box`` and just large enough to hold it (within
        ``view_scale``), shifted to lie inside the image."""
        h0, w0 = image_hw
        max_w = min(float(w0), h0 * aspect)
        need = max(gt_box[2] - gt_box[0], (gt_box[3] - gt_box[1]) * aspect) * rng.uniform(1.0, 1.5)
        w = float(np.clip(need, self.view_scale[0] * max_w, self.view_scale[1] * max_w))
        h = w / aspect
        cx, cy = 0.5 * (gt_box[0] + gt_box[2]), 0.5 * (gt_box[1] + gt_box[3])
        x1 = float(np.clip(cx - w / 2, 0.0, w0 - w))
        y1 = float(np.clip(cy - h / 2, 0.0, h0 - h))
        return np.array([x1, y1, x1 + w, y1 + h])

    def sample_views(self, image_hw: tuple[int, int], target: Target, aspect: float,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
        """The qualifying view (the anchor), the other view (each ``(4,)`` in image pixels) and
        the speed."""
        candidates = self.random_views(image_hw, aspect, self.candidates + 1, rng)
        good = np.nonzero(gt_overlap(candidates[:-1], target) >= self.min_gt_overlap)[0]
        other = candidates[-1]
        if len(good):
            anchor = candidates[good[0]]
        else:
            objects = ground_truth_boxes(target)
            anchor = (self.view_on_object(image_hw, aspect, objects[rng.integers(len(objects))], rng)
                      if len(objects) else candidates[0])
        speed = abs(rng.normal(self.speed_mean, self.speed_std))
        return anchor, other, float(speed)

    def render(self, image: Tensor, target: Target, views: np.ndarray | Tensor,
               image_size: Sequence[int]) -> FakeClip:
        """Crop every view out of ``image`` (uint8 ``(3, H0, W0)``) resized to ``image_size``,
        with ``target``'s boxes and mask carried into each view."""
        out_h, out_w = check_image_size(image_size)
        views_t = torch.as_tensor(np.asarray(views), dtype=torch.float32).reshape(-1, 4)
        planes = image.float()
        has_mask = "mask" in target
        if has_mask:
            planes = torch.cat([planes, target["mask"][None].float()], dim=0)
        crops = roi_align(planes[None], [views_t], (out_h, out_w), spatial_scale=1.0, sampling_ratio=-1,
                          aligned=True)
        frames = crops[:, :3].round_().clamp_(0, 255).to(torch.uint8)

        scale = torch.stack([out_w / (views_t[:, 2] - views_t[:, 0]), out_h / (views_t[:, 3] - views_t[:, 1])], 1)
        boxes = target["boxes"].float()
        limits = torch.tensor([out_w, out_h, out_w, out_h], dtype=torch.float32)
        targets = []
        for t in range(len(views_t)):
            b = (boxes - views_t[t, :2].repeat(2)) * scale[t].repeat(2)
            b = torch.minimum(b.clamp(min=0.0), limits)
            keep = ((b[:, 2] - b[:, 0]) >= self.min_box_size) & ((b[:, 3] - b[:, 1]) >= self.min_box_size)
            frame_target = {"boxes": b[keep], "labels": target["labels"][keep].clone(),
                            "track_ids": target["track_ids"][keep].clone()}
            if has_mask:
                frame_target["mask"] = crops[t, 3] >= 0.5
            targets.append(frame_target)
        return FakeClip(frames=frames, targets=targets, views=views_t)

    def __call__(self, image: Tensor, target: Target, clip_length: int, image_size: Sequence[int],
                 rng: np.random.Generator) -> FakeClip:
        """A ``clip_length``-frame fake video of ``image`` (uint8 ``(3, H0, W0)``) at
        ``image_size = (H, W)``; deterministic given ``rng``'s state."""
        out_h, out_w = check_image_size(image_size)
        image_hw = (int(image.shape[-2]), int(image.shape[-1]))
        anchor, other, speed = self.sample_views(image_hw, target, out_w / out_h, rng)
        anchor_last = bool(rng.random() < 0.5)
        return self.render(image, target, view_path(anchor, other, speed, clip_length, anchor_last), image_size)


def measure_fake_video_rate(stills: Sequence[StillImageRecord], synthesizer: FakeVideoSynthesizer,
                            clip_length: int, image_size: Sequence[int], num_clips: int = 50,
                            seed: int = 0) -> float:
    """Fake clips per second on one CPU thread, decoding included (torch's thread count is
    restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rng = np.random.default_rng(seed)
        begin = time.perf_counter()
        for i in range(num_clips):
            image, target = stills[i % len(stills)].load()
            synthesizer(image, target, clip_length, image_size, rng)
        return num_clips / (time.perf_counter() - begin)
    finally:
        torch.set_num_threads(threads)
