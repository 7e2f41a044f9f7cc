"""COCO-style AP at IoU 0.5 through pycocotools: an *extra* number, not the VID metric.

Several video-detection codebases (e.g. MMTracking) report this "bbox_mAP_50" on
ImageNet VID. It differs from the official VID rule of :mod:`patchwork.evaluation.vid`:
one fixed IoU threshold of 0.5 for every object (no small-object leniency),
101-point interpolated precision, at most 100 detections per frame (the highest
scored), and pycocotools' own matching order. Report it beside, never instead of,
:func:`patchwork.evaluation.vid.evaluate_vid`.

Box convention: inclusive pixel boxes ``(x1, y1, x2, y2)`` become COCO
``[x, y, w, h] = [x1, y1, x2 - x1 + 1, y2 - y1 + 1]``. pycocotools measures
intersections as ``min(x + w) - max(x)``, so on these boxes its IoU equals the
devkit's ``+1`` IoU and the two metrics see the same overlaps.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from patchwork.evaluation.vid import concatenate_frames


def inclusive_to_coco_xywh(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) inclusive xyxy pixel boxes -> (N, 4) COCO ``[x, y, w, h]`` with ``w = x2 - x1 + 1``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2] + 1.0], axis=1)


def coco_ap50(
    detections: Sequence[Mapping[str, Any]],
    ground_truth: Sequence[Mapping[str, Any]],
    num_classes: int,
) -> float:
    """COCO AP at IoU 0.5 (area "all", 100 detections per frame), averaged over classes.

    Args:
        detections: one dict per frame with ``boxes`` (N, 4) xyxy inclusive pixel
            coordinates, ``scores`` (N,), ``labels`` (N,) in ``0..num_classes-1``;
            numpy arrays or tensors.
        ground_truth: one dict per frame with ``boxes`` (M, 4) and ``labels`` (M,).
        num_classes: number of classes.

    Returns:
        AP50 in [0, 1]. Classes without ground truth are left out of the mean (as
        pycocotools does); NaN when there is no ground truth at all; 0.0 when there
        are no detections.
    """
    if len(detections) != len(ground_truth):
        raise ValueError(f"{len(detections)} detection frames but {len(ground_truth)} ground-truth frames")
    det = concatenate_frames(detections, with_scores=True)
    gt = concatenate_frames(ground_truth, with_scores=False)
    if len(gt.labels) == 0:
        return float("nan")
    if len(det.labels) == 0:
        return 0.0

    gt_xywh = inclusive_to_coco_xywh(gt.boxes)
    dataset = {
        "images": [{"id": i + 1} for i in range(len(ground_truth))],
        "categories": [{"id": c + 1} for c in range(num_classes)],
        "annotations": [
            {
                "id": k + 1,
                "image_id": int(gt.frame[k]) + 1,
                "category_id": int(gt.labels[k]) + 1,
                "bbox": gt_xywh[k].tolist(),
                "area": float(gt_xywh[k, 2] * gt_xywh[k, 3]),
                "iscrowd": 0,
            }
            for k in range(len(gt.labels))
        ],
    }
    det_xywh = inclusive_to_coco_xywh(det.boxes)
    results = [
        {
            "image_id": int(det.frame[k]) + 1,
            "category_id": int(det.labels[k]) + 1,
            "bbox": det_xywh[k].tolist(),
            "score": float(det.scores[k]),
        }
        for k in range(len(det.labels))
    ]
    # pycocotools reports progress on stdout; keep evaluation quiet.
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        # Only IoU 0.5 is needed; the rest of the protocol keeps COCO's defaults.
        evaluator.params.iouThrs = np.array([0.5])
        evaluator.evaluate()
        evaluator.accumulate()
    # precision: (iou, recall threshold, class, area range, max dets); area "all",
    # maxDets 100, as in COCOeval.summarize()'s AP@0.5 line. -1 marks classes without GT.
    precision = evaluator.eval["precision"][0, :, :, 0, -1]
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else float("nan")
