"""Tests for the COCO AP50 extra (patchwork.evaluation.coco_ap50)."""

import math

import numpy as np
import pytest
import torch

from patchwork.evaluation.coco_ap50 import coco_ap50, inclusive_to_coco_xywh
from patchwork.evaluation.vid import evaluate_vid


def frame(boxes, labels, scores=None):
    out = {"boxes": np.asarray(boxes, dtype=np.float64).reshape(-1, 4), "labels": np.asarray(labels, dtype=np.int64)}
    if scores is not None:
        out["scores"] = np.asarray(scores, dtype=np.float64)
    return out


GT = [frame([[0, 0, 49, 49]], [0]), frame([[20, 20, 59, 79], [100, 0, 139, 29]], [0, 1])]


def test_inclusive_to_xywh():
    np.testing.assert_array_equal(inclusive_to_coco_xywh(np.array([[0, 0, 9, 9], [3, 4, 5, 10]])), [[0, 0, 10, 10], [3, 4, 3, 7]])


def test_perfect_detections_give_one():
    dets = [
        frame([[0, 0, 49, 49]], [0], [0.9]),
        frame([[20, 20, 59, 79], [100, 0, 139, 29]], [0, 1], [0.8, 0.7]),
    ]
    assert coco_ap50(dets, GT, 2) == pytest.approx(1.0)
    tensors = [{k: torch.as_tensor(v) for k, v in d.items()} for d in dets]
    assert coco_ap50(tensors, GT, 2) == pytest.approx(1.0)


def test_half_right_detections():
    # One class, two objects: the higher-scored detection hits, the other misses.
    # Precision 1 up to recall 0.5, then nothing: 51 of COCO's 101 recall points.
    gt = [frame([[0, 0, 49, 49]], [0]), frame([[0, 0, 49, 49]], [0])]
    dets = [frame([[0, 0, 49, 49]], [0], [0.9]), frame([[200, 200, 249, 249]], [0], [0.8])]
    assert coco_ap50(dets, gt, 1) == pytest.approx(51 / 101)


def test_class_without_detections_counts_class_without_gt_is_excluded():
    dets = [frame([[0, 0, 49, 49]], [0], [0.9]), frame([[20, 20, 59, 79], [0, 0, 5, 5]], [0, 2], [0.8, 0.9])]
    # Class 0 perfect, class 1 (has GT) missed, class 2 (no GT) excluded.
    assert coco_ap50(dets, GT, 3) == pytest.approx(0.5)


def test_iou_uses_inclusive_boxes_and_differs_from_vid_rule():
    gt = [frame([[0, 0, 9, 9]], [0])]
    # IoU 50 / 100 = 0.5 exactly with the +1 convention (0.44 without it): a hit.
    assert coco_ap50([frame([[0, 0, 9, 4]], [0], [0.9])], gt, 1) == pytest.approx(1.0)
    # IoU 0.3: a miss at COCO's fixed 0.5, a hit under VID's 0.25 threshold for a 10 x 10 object.
    weak = [frame([[0, 0, 9, 2]], [0], [0.9])]
    assert coco_ap50(weak, gt, 1) == 0.0
    assert evaluate_vid(weak, gt, 1)["mAP"] == 1.0


def test_degenerate_inputs():
    empty = [{"boxes": np.zeros((0, 4)), "labels": np.zeros(0, dtype=np.int64), "scores": np.zeros(0)}]
    assert coco_ap50(empty, [frame([[0, 0, 9, 9]], [0])], 1) == 0.0
    assert math.isnan(coco_ap50([frame([[0, 0, 9, 9]], [0], [0.5])], empty, 1))
