"""Tests for the ImageNet VID devkit mAP (patchwork.evaluation.vid)."""

import math

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from patchwork.evaluation.vid import (
    average_precision,
    concatenate_frames,
    evaluate_vid,
    inclusive_box_iou,
    match_detections,
    object_iou_thresholds,
)


def frame(boxes, labels, scores=None):
    out = {"boxes": np.asarray(boxes, dtype=np.float64).reshape(-1, 4), "labels": np.asarray(labels, dtype=np.int64)}
    if scores is not None:
        out["scores"] = np.asarray(scores, dtype=np.float64)
    return out


def test_inclusive_iou_uses_plus_one():
    a = np.array([[0.0, 0, 9, 9]])  # 10 x 10 = 100 pixels
    b = np.array([[5.0, 5, 14, 14]])  # 100 pixels, overlap 5 x 5 = 25
    assert inclusive_box_iou(a, b)[0] == pytest.approx(25 / 175)
    # Same as torchvision's exclusive convention on (x1, y1, x2 + 1, y2 + 1).
    shift = torch.tensor([0.0, 0, 1, 1])
    ref = box_iou(torch.as_tensor(a) + shift, torch.as_tensor(b) + shift)[0, 0].item()
    assert inclusive_box_iou(a, b)[0] == pytest.approx(ref)
    # Touching boxes share a pixel column; disjoint ones give 0.
    assert inclusive_box_iou(a, np.array([[9.0, 0, 18, 9]]))[0] == pytest.approx(10 / 190)
    assert inclusive_box_iou(a, np.array([[10.0, 0, 19, 9]]))[0] == 0.0


def test_object_thresholds():
    boxes = np.array([[0.0, 0, 9, 9], [0, 0, 19, 19], [0, 0, 99, 99], [0, 0, 9, 99]])
    expected = [100 / 400, 400 / 900, 0.5, min(0.5, 1000 / (20 * 110))]
    np.testing.assert_allclose(object_iou_thresholds(boxes), expected)
    np.testing.assert_allclose(object_iou_thresholds(boxes, pixel_tolerance=0), 0.5)


def test_small_object_threshold_accepts_iou_0_3():
    # 10 x 10 object: threshold 100 / 400 = 0.25; the 10 x 3 detection has IoU 30 / 100 = 0.3.
    small = evaluate_vid([frame([[0, 0, 9, 2]], [0], [0.9])], [frame([[0, 0, 9, 9]], [0])], 1)
    assert small["mAP"] == 1.0
    # 100 x 100 object: threshold 0.5; the 100 x 30 detection also has IoU 0.3 -> false positive.
    large = evaluate_vid([frame([[0, 0, 99, 29]], [0], [0.9])], [frame([[0, 0, 99, 99]], [0])], 1)
    assert large["mAP"] == 0.0
    # With a fixed 0.5 threshold (the MEGA-style deviation) the small object is missed too.
    fixed = evaluate_vid([frame([[0, 0, 9, 2]], [0], [0.9])], [frame([[0, 0, 9, 9]], [0])], 1, pixel_tolerance=0)
    assert fixed["mAP"] == 0.0


def test_duplicate_detection_is_false_positive():
    gt = [frame([[0, 0, 49, 49]], [0]), frame([[10, 10, 59, 59]], [0])]
    dets = [
        frame([[0, 0, 49, 49], [1, 1, 49, 49]], [0, 0], [0.9, 0.8]),  # the second is a duplicate
        frame([[10, 10, 59, 59]], [0], [0.7]),
    ]
    matched = match_detections(
        concatenate_frames(dets, True), concatenate_frames(gt, False), np.array([0.5, 0.5]), 1
    )
    np.testing.assert_array_equal(matched, [0, -1, 1])
    # Ranked TP, FP, TP over 2 objects: recall .5 .5 1, precision 1 .5 2/3 -> AP = .5 + .5 * 2/3.
    assert evaluate_vid(dets, gt, 1)["mAP"] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_higher_score_wins_regardless_of_input_order():
    gt = [frame([[0, 0, 49, 49]], [0])]
    dets = [frame([[2, 2, 49, 49], [0, 0, 49, 49]], [0, 0], [0.5, 0.9])]
    matched = match_detections(concatenate_frames(dets, True), concatenate_frames(gt, False), np.array([0.5]), 1)
    np.testing.assert_array_equal(matched, [-1, 0])


def test_detection_takes_best_iou_among_objects_passing_their_own_threshold():
    # The detection (10 x 6 pixels) overlaps two same-class objects: IoU 0.6 with
    # object 0 (10 x 10) and 0.3 with object 1 (10 x 20). Only objects whose IoU
    # reaches their *own* threshold compete, then the highest IoU wins, as in the
    # devkit's ``if ov >= gt_thr(k) && ov > ovmax``.
    gt = concatenate_frames([frame([[0, 0, 9, 9], [0, 0, 9, 19]], [0, 0])], False)
    det = concatenate_frames([frame([[0, 0, 9, 5]], [0], [1.0])], True)
    assert match_detections(det, gt, np.array([0.7, 0.25]), 1).tolist() == [1]
    assert match_detections(det, gt, np.array([0.5, 0.25]), 1).tolist() == [0]
    # Both pass, the better one listed second: IoU decides, not the listing order.
    swapped = concatenate_frames([frame([[0, 0, 9, 19], [0, 0, 9, 9]], [0, 0])], False)
    assert match_detections(det, swapped, np.array([0.25, 0.5]), 1).tolist() == [1]
    assert match_detections(det, gt, np.array([0.7, 0.5]), 1).tolist() == [-1]
    # Equal IoU: the object listed first.
    twins = concatenate_frames([frame([[0, 0, 9, 9], [0, 0, 9, 9]], [0, 0])], False)
    assert match_detections(det, twins, np.array([0.5, 0.5]), 1).tolist() == [0]
    # A different class is never matched.
    other = concatenate_frames([frame([[0, 0, 9, 5]], [1])], False)
    assert match_detections(det, other, np.array([0.5]), 2).tolist() == [-1]


def test_class_without_detections_counts_as_zero_and_class_without_gt_is_excluded():
    gt = [frame([[0, 0, 49, 49], [100, 100, 149, 149]], [0, 1])]
    dets = [frame([[0, 0, 49, 49], [200, 200, 249, 249]], [0, 2], [0.9, 0.8])]
    out = evaluate_vid(dets, gt, 3)
    assert out["AP"][0] == 1.0
    assert out["AP"][1] == 0.0  # ground truth, no detections
    assert math.isnan(out["AP"][2])  # detections, no ground truth: excluded
    assert out["mAP"] == 0.5
    np.testing.assert_array_equal(out["num_gt"], [1, 1, 0])


def test_hand_computed_precision_recall_curve():
    # recall .25 .25 .5 .5 .75, precision 1 1/2 2/3 1/2 3/5
    # envelope 1 2/3 2/3 3/5 3/5 -> AP = .25 * (1 + 2/3 + 3/5) = 17/30.
    recall = np.array([0.25, 0.25, 0.5, 0.5, 0.75])
    precision = np.array([1, 1 / 2, 2 / 3, 1 / 2, 3 / 5])
    assert average_precision(recall, precision) == pytest.approx(17 / 30)
    assert average_precision(np.zeros(0), np.zeros(0)) == 0.0

    # The same curve from detections: 4 objects in 4 frames, hits at ranks 1, 3, 5.
    gt = [frame([[0, 0, 29, 29]], [0]) for _ in range(4)]
    miss = [[100, 100, 129, 129]]
    hit = [[0, 0, 29, 29]]
    dets = [
        frame(hit + miss, [0, 0], [0.9, 0.8]),
        frame(hit + miss, [0, 0], [0.7, 0.6]),
        frame(hit, [0], [0.5]),
        frame(np.zeros((0, 4)), []),
    ]
    dets[3]["scores"] = np.zeros(0)
    assert evaluate_vid(dets, gt, 1)["mAP"] == pytest.approx(17 / 30)


def test_tensors_and_empty_frames():
    gt = [frame([[0, 0, 9, 9]], [0]), frame(np.zeros((0, 4)), [])]
    dets = [frame([[0, 0, 9, 9]], [0], [0.9]), frame([[5, 5, 20, 20]], [0], [0.95])]
    as_tensors = [{k: torch.as_tensor(v) for k, v in d.items()} for d in dets]
    gt_tensors = [{k: torch.as_tensor(v) for k, v in d.items()} for d in gt]
    ref = evaluate_vid(dets, gt, 1)
    # FP (0.95) then TP: precision 1/2 at recall 1.
    assert ref["mAP"] == pytest.approx(0.5)
    assert evaluate_vid(as_tensors, gt_tensors, 1)["mAP"] == ref["mAP"]
    with pytest.raises(ValueError):
        evaluate_vid(dets, gt[:1], 1)
    with pytest.raises(ValueError):
        evaluate_vid(dets, gt, 0)


def devkit_reference(dets, gts, num_classes):
    """Straight loop transliteration of the devkit (``eval_vid_detection.m``, FGFA ``vid_eval``)."""
    tps, labels_all, scores_all = [], [], []
    npos = np.zeros(num_classes)
    for det, gt in zip(dets, gts):
        gb, gl = gt["boxes"], gt["labels"]
        for lab in gl:
            npos[lab] += 1
        w, h = gb[:, 2] - gb[:, 0] + 1, gb[:, 3] - gb[:, 1] + 1
        thr = np.minimum(w * h / ((w + 10) * (h + 10)), 0.5)
        detected = np.zeros(len(gl))
        order = np.argsort(-det["scores"], kind="stable")
        for j in order:
            bb = det["boxes"][j]
            ovmax, kmax = -1.0, -1
            for k in range(len(gl)):
                if det["labels"][j] != gl[k] or detected[k] > 0:
                    continue
                bg = gb[k]
                iw = min(bb[2], bg[2]) - max(bb[0], bg[0]) + 1
                ih = min(bb[3], bg[3]) - max(bb[1], bg[1]) + 1
                if iw > 0 and ih > 0:
                    ua = (bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1) + w[k] * h[k] - iw * ih
                    ov = iw * ih / ua
                    if ov >= thr[k] and ov > ovmax:
                        ovmax, kmax = ov, k
            if kmax >= 0:
                detected[kmax] = 1
            tps.append(kmax >= 0)
            labels_all.append(det["labels"][j])
            scores_all.append(det["scores"][j])
    tps, labels_all, scores_all = np.array(tps), np.array(labels_all), np.array(scores_all)
    order = np.argsort(-scores_all, kind="stable")
    tps, labels_all = tps[order], labels_all[order]
    ap = np.full(num_classes, np.nan)
    for c in range(num_classes):
        if npos[c] == 0:
            continue
        tp = np.cumsum(tps[labels_all == c])
        fp = np.cumsum(~tps[labels_all == c])
        rec = tp / npos[c]
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        mrec = np.concatenate(([0.0], rec, [1.0]))
        mpre = np.concatenate(([0.0], prec, [0.0]))
        for i in range(len(mpre) - 1, 0, -1):
            mpre[i - 1] = max(mpre[i - 1], mpre[i])
        i = np.where(mrec[1:] != mrec[:-1])[0]
        ap[c] = np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])
    return ap


def test_matches_loop_reference_on_random_crowded_frames():
    rng = np.random.default_rng(0)
    num_classes, dets, gts = 4, [], []
    for _ in range(200):
        n_gt = int(rng.integers(0, 5))
        xy = rng.integers(0, 15, (n_gt, 2))  # clustered: detections often reach two objects
        wh = rng.integers(3, 40, (n_gt, 2))
        gt_boxes = np.concatenate([xy, xy + wh], 1).astype(np.float64)
        gt_labels = rng.integers(0, 2, n_gt)  # few classes -> many same-class neighbours
        n_det = int(rng.integers(0, 12))
        if n_gt:
            src = rng.integers(0, n_gt, n_det)
            boxes = np.round(gt_boxes[src] + rng.normal(0, 4, (n_det, 4)))
            labels = np.where(rng.random(n_det) < 0.8, gt_labels[src], rng.integers(0, num_classes, n_det))
        else:
            xy = rng.integers(0, 60, (n_det, 2))
            boxes = np.concatenate([xy, xy + rng.integers(3, 40, (n_det, 2))], 1).astype(np.float64)
            labels = rng.integers(0, num_classes, n_det)
        dets.append({"boxes": boxes.reshape(-1, 4), "labels": labels, "scores": rng.random(n_det)})
        gts.append({"boxes": gt_boxes.reshape(-1, 4), "labels": gt_labels})
    out = evaluate_vid(dets, gts, num_classes)
    ref = devkit_reference(dets, gts, num_classes)
    np.testing.assert_allclose(out["AP"], ref, rtol=0, atol=1e-12)
    assert 0.0 < out["mAP"] < 1.0
