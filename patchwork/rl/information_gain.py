"""BlockCopy's information gain (Verelst and Tuytelaars, ICCV 2021, Sec. 3.4, Eq. 1, Algorithm 1).

The information gain of an output pixel is how much executing the network there changed
the output compared with re-using the previous one; a block's is the maximum over its
pixels (Eq. 1). It is the block's reward signal (Eq. 9), computed from the task network's
own outputs: no ground truth is needed (the policy learns online, Sec. 3.2).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou


def _paint(ig: Tensor, box: list[float], value: Tensor) -> None:
    """Raise the pixels of ``box`` in ``ig`` to at least ``value``, in place.

    Pixel ``(i, j)`` (its centre at ``(j + 0.5, i + 0.5)``) lies in box ``(x1, y1, x2, y2)``
    when ``x1 <= j + 0.5 < x2`` and ``y1 <= i + 0.5 < y2``, i.e. for
    ``ceil(x1 - 0.5) <= j < ceil(x2 - 0.5)``.
    """
    x1, y1, x2, y2 = box
    height, width = ig.shape
    top, bottom = max(math.ceil(y1 - 0.5), 0), min(math.ceil(y2 - 0.5), height)
    left, right = max(math.ceil(x1 - 0.5), 0), min(math.ceil(x2 - 0.5), width)
    if top < bottom and left < right:
        region = ig[top:bottom, left:right]
        torch.maximum(region, value, out=region)


def detection_information_gain(
    boxes: Tensor, scores: Tensor, prev_boxes: Tensor, prev_scores: Tensor, image_size: tuple[int, int]
) -> Tensor:
    """Algorithm 1: the information gain map of one frame's detections.

    For each current detection, the previous detection of highest IoU (IoU > 0) is its
    match; ``(1 - IoU) * score`` is painted into the current box and ``(1 - IoU) *
    previous score`` into the matched previous box (a moved or changed object gains where
    it is and where it was; a static one gains nothing). A current detection without a match
    paints its score; previous detections matched by no current one paint their score
    (they must be removed). A pixel keeps the maximum painted into it.

    Args:
        boxes: ``(N, 4)`` current detections ``(x1, y1, x2, y2)`` in pixels.
        scores: ``(N,)`` their confidences in ``[0, 1]``.
        prev_boxes: ``(M, 4)`` the previous frame's detections.
        prev_scores: ``(M,)`` their confidences.
        image_size: ``(H, W)`` in pixels.
    Returns:
        ``(H, W)`` float, in ``[0, 1]`` for scores in ``[0, 1]``. Painting loops over boxes
        in Python (a few dozen per frame), which reads box coordinates on the host.
    """
    dtype = scores.dtype if scores.is_floating_point() else torch.float32
    ig = torch.zeros(image_size, dtype=dtype, device=scores.device)
    matched_prev = torch.zeros(prev_boxes.shape[0], dtype=torch.bool, device=scores.device)
    if boxes.shape[0]:
        if prev_boxes.shape[0]:
            best_iou, best = box_iou(boxes.float(), prev_boxes.float()).max(dim=1)  # (N,), first maximum wins
        else:
            best_iou = torch.zeros(boxes.shape[0], device=scores.device)
            best = torch.zeros(boxes.shape[0], dtype=torch.long, device=scores.device)
        has_match = best_iou > 0
        gain = (1 - best_iou).to(dtype)
        for box, score, g, match, j in zip(boxes.tolist(), scores, gain, has_match.tolist(), best.tolist()):
            _paint(ig, box, g * score)
            if match:
                _paint(ig, prev_boxes[j].tolist(), g * prev_scores[j])
                matched_prev[j] = True
    for box, score, matched in zip(prev_boxes.tolist(), prev_scores, matched_prev.tolist()):
        if not matched:
            _paint(ig, box, score.to(dtype))
    return ig


def segmentation_information_gain(probs: Tensor, prev_probs: Tensor) -> Tensor:
    """Per-pixel KL divergence ``sum_c prev * (log prev - log probs)`` (Sec. 3.4, semantic segmentation).

    Args:
        probs: ``(B, C, H, W)`` current class probabilities (a binary segmenter passes
            ``[1 - p, p]``).
        prev_probs: ``(B, C, H, W)`` previous class probabilities.
    Returns:
        ``(B, H, W)``, non-negative. ``0 * log 0`` counts 0; a probability of 0 where the
        previous one is positive counts as the smallest positive float (a large, finite gain).
    """
    tiny = torch.finfo(probs.dtype).tiny
    kl = prev_probs * (prev_probs.clamp_min(tiny).log() - probs.clamp_min(tiny).log())
    return kl.sum(dim=1)


def block_information_gain(ig: Tensor, block_size: int) -> Tensor:
    """Eq. 1: the maximum information gain over each block's pixels.

    Args:
        ig: ``(H, W)`` or ``(B, H, W)`` per-pixel information gain, sides multiples of ``block_size``.
    Returns:
        ``(H // bs, W // bs)`` or ``(B, H // bs, W // bs)``.
    """
    if ig.shape[-2] % block_size or ig.shape[-1] % block_size:
        raise ValueError(
            f"information gain map {tuple(ig.shape[-2:])} is not a whole number of {block_size}-pixel blocks"
        )
    return F.max_pool2d(ig.unsqueeze(-3), block_size).squeeze(-3)
