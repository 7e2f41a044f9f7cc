"""SSD pieces shared by the project's detectors, on top of torchvision's SSD building blocks.

Default boxes come from ``DefaultBoxGenerator``, box coding from ``BoxCoder``, matching
from ``SSDMatcher``, the multibox loss with hard-negative mining from ``SSD.compute_loss``
and class-wise NMS from ``batched_nms`` (candidates chosen across classes, see :func:`postprocess`);
this module only adapts their calling conventions to the project's:

* raw head outputs ``{"cls_logits" (B, A, C + 1), "bbox_regression" (B, A, 4), "image_size"}``
  over ``A`` default boxes, background logit first;
* targets and predictions use class indices ``0 .. C - 1`` (SSD's background 0 is internal)
  and ``(x1, y1, x2, y2)`` boxes in full-frame pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.ssd import SSD
from torchvision.ops import box_iou
from torchvision.ops import boxes as box_ops
from torchvision.ops.misc import Conv2dNormActivation

#: BatchNorm of the SSDLite layers (TF object detection's decay 0.97 and epsilon 0.001).
SSD_BATCH_NORM = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)


def separable_layer(in_channels: int, out_channels: int, stride: int = 2) -> nn.Sequential:
    """Depthwise 3x3 (stride ``stride``), then pointwise, both BatchNorm + ReLU6: the SSDLite extra layer."""
    return nn.Sequential(
        Conv2dNormActivation(
            in_channels, in_channels, 3, stride=stride, groups=in_channels, norm_layer=SSD_BATCH_NORM,
            activation_layer=nn.ReLU6,
        ),
        Conv2dNormActivation(in_channels, out_channels, 1, norm_layer=SSD_BATCH_NORM, activation_layer=nn.ReLU6),
    )


def halved_sizes(first: tuple[int, int], count: int) -> list[tuple[int, int]]:
    """``first`` and the ``count - 1`` map sizes after it, each halved by a stride-2, kernel-3,
    padding-1 convolution (``ceil(n / 2)``): e.g. ``(10, 10)``, 5 -> 10, 5, 3, 2, 1."""
    sizes = [tuple(first)]
    for _ in range(count - 1):
        height, width = sizes[-1]
        sizes.append(((height + 1) // 2, (width + 1) // 2))
    return sizes


def default_boxes(
    generator: DefaultBoxGenerator, image_size: tuple[int, int], level_sizes: Sequence[tuple[int, int]],
    device: torch.device | str,
) -> Tensor:
    """Default boxes ``(A, 4)`` xyxy in pixels of frames of ``image_size``, levels in order, each
    level row-major over its ``(h, w)`` locations with the anchors of a location contiguous."""
    maps = [torch.empty(1, 1, h, w, device=device) for h, w in level_sizes]
    images = ImageList(torch.empty(1, 3, *image_size, device=device), [tuple(image_size)])
    return generator(images, maps)[0]


def _match(
    targets: Sequence[dict[str, Tensor]], anchors: Tensor, matcher: det_utils.SSDMatcher
) -> tuple[list[dict[str, Tensor]], list[Tensor]]:
    """Targets in SSD's convention (labels + 1) and each image's anchor -> target match (-1: none)."""
    ssd_targets, matched = [], []
    for target in targets:
        boxes = target["boxes"].to(anchors)
        ssd_targets.append({"boxes": boxes, "labels": target["labels"].to(anchors.device).long() + 1})
        if boxes.numel() == 0:
            matched.append(torch.full((anchors.shape[0],), -1, dtype=torch.long, device=anchors.device))
        else:
            matched.append(matcher(box_iou(boxes, anchors)))
    return ssd_targets, matched


def multibox_loss(
    raw: dict[str, Any], targets: Sequence[dict[str, Tensor]], anchors: Tensor, box_coder: det_utils.BoxCoder,
    matcher: det_utils.SSDMatcher, neg_to_pos_ratio: int,
) -> dict[str, Tensor]:
    """SSD multibox loss of a batch: ``{"bbox_regression", "classification"}``, scalars, both
    normalised by the number of matched default boxes over the batch (``SSD.compute_loss``).

    Args:
        raw: ``cls_logits (B, A, C + 1)``, ``bbox_regression (B, A, 4)``.
        targets: per image ``{"boxes" (K, 4) xyxy pixels, "labels" (K,) in 0..C-1}``.
        anchors: ``(A, 4)`` default boxes in pixels.
    """
    ssd_targets, matched = _match(targets, anchors, matcher)
    criterion = SimpleNamespace(box_coder=box_coder, neg_to_pos_ratio=neg_to_pos_ratio)
    return SSD.compute_loss(criterion, ssd_targets, raw, [anchors] * len(ssd_targets), matched)


def multibox_loss_per_image(
    raw: dict[str, Any], targets: Sequence[dict[str, Tensor]], anchors: Tensor, box_coder: det_utils.BoxCoder,
    matcher: det_utils.SSDMatcher, neg_to_pos_ratio: int,
) -> Tensor:
    """``(B,)``: each image's multibox loss (regression + classification) normalised by its own
    matches, i.e. :func:`multibox_loss` of that image alone, summed over the two terms."""
    losses = []
    for index, target in enumerate(targets):
        one = {"cls_logits": raw["cls_logits"][index : index + 1], "bbox_regression": raw["bbox_regression"][index : index + 1]}
        terms = multibox_loss(one, [target], anchors, box_coder, matcher, neg_to_pos_ratio)
        losses.append(terms["bbox_regression"] + terms["classification"])
    return torch.stack(losses)


def postprocess(
    raw: dict[str, Any], anchors: Tensor, box_coder: det_utils.BoxCoder, score_thresh: float, topk_candidates: int,
    nms_thresh: float, detections_per_img: int,
) -> list[dict[str, Tensor]]:
    """Decoded detections per image ``{"boxes" (N, 4) xyxy pixels, "scores" (N,), "labels" (N,) in 0..C-1}``.

    Softmax over the classes, then the ``topk_candidates`` best (default box, class) pairs
    above ``score_thresh`` across all classes, as torchvision's RetinaNet and FCOS select
    candidates, then class-wise NMS (``batched_nms``) and the ``detections_per_img`` best.
    Only the chosen boxes are decoded. Torchvision's SSD keeps ``topk_candidates`` per class
    instead, so its NMS sees up to ``C`` times more boxes (every box of an untrained head);
    whenever no more than ``topk_candidates`` pairs clear the threshold both keep the same
    candidates and give the same detections.
    """
    image_size = tuple(raw["image_size"])
    scores = torch.softmax(raw["cls_logits"], dim=-1)[..., 1:]  # (B, A, C): background dropped
    num_classes = scores.shape[-1]
    detections = []
    for image_scores, regression in zip(scores, raw["bbox_regression"]):
        flat = image_scores.reshape(-1)
        best, pairs = flat.topk(min(topk_candidates, flat.numel()))  # sorted, best first
        confident = best > score_thresh
        best, pairs = best[confident], pairs[confident]
        anchor, label = pairs // num_classes, pairs % num_classes
        boxes = box_coder.decode_single(regression[anchor], anchors[anchor])
        boxes = box_ops.clip_boxes_to_image(boxes, image_size)
        keep = box_ops.batched_nms(boxes, best, label, nms_thresh)[:detections_per_img]
        detections.append({"boxes": boxes[keep], "scores": best[keep], "labels": label[keep]})
    return detections


def empty_detection(device: torch.device | str) -> dict[str, Tensor]:
    """A prediction without boxes."""
    return {
        "boxes": torch.zeros(0, 4, device=device),
        "scores": torch.zeros(0, device=device),
        "labels": torch.zeros(0, dtype=torch.long, device=device),
    }


class FeatureMapChain(nn.Module):
    """Layers applied one after another, every layer's output kept: the extra feature maps an
    SSD head predicts on. Subclasses fill ``layers`` (an ``nn.ModuleList``) and ``out_channels``."""

    layers: nn.ModuleList
    out_channels: list[int]

    def forward(self, x: Tensor) -> list[Tensor]:
        """``(B, C, H, W)`` -> one map per layer, each from the previous layer's output."""
        maps = []
        for layer in self.layers:
            x = layer(x)
            maps.append(x)
        return maps


class SSDPredictions:
    """``predict``, ``empty_prediction`` and ``loss`` of a detector whose raw outputs are an SSD head's.

    The detector provides ``anchors(image_size, device) -> (A, 4)`` and the attributes
    ``box_coder``, ``proposal_matcher``, ``neg_to_pos_ratio``, ``score_thresh``,
    ``topk_candidates``, ``nms_thresh`` and ``detections_per_img``.
    """

    def predict(self, out: Any, min_score: float | None = None) -> list[dict[str, Tensor]]:
        """Per-stream ``{"boxes" (N, 4) xyxy pixels, "scores" (N,), "labels" (N,) in 0..num_classes-1}``,
        scores above ``score_thresh`` (and ``min_score`` when given: fewer boxes to decode)."""
        anchors = self.anchors(out.raw["image_size"], out.raw["cls_logits"].device)
        return postprocess(out.raw, anchors, self.box_coder, max(self.score_thresh, min_score or 0.0),
                           self.topk_candidates, self.nms_thresh, self.detections_per_img)

    def empty_prediction(self, image_size: tuple[int, int], device: torch.device | str) -> dict[str, Tensor]:
        """No boxes."""
        return empty_detection(device)

    def loss(self, out: Any, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """SSD multibox loss over the batch: ``{"bbox_regression", "classification"}`` scalars
        (torchvision's ``SSD.compute_loss``).

        Args:
            targets: per stream ``{"boxes" (K, 4) xyxy pixels, "labels" (K,) in 0..num_classes-1}``.
        """
        anchors = self.anchors(out.raw["image_size"], out.raw["cls_logits"].device)
        return multibox_loss(out.raw, targets, anchors, self.box_coder, self.proposal_matcher, self.neg_to_pos_ratio)
