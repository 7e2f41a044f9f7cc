"""Rewards of Sec. 3.3 on hand-drawn cases."""

import pytest
import torch

from patchwork.rl import (
    EMPTY_GT_QUALITY,
    detection_quality,
    detection_rewards,
    greedy_matched_iou_sum,
    patchwork_reward,
    segmentation_quality,
    segmentation_rewards,
)

# Two ground-truth boxes, side by side, 10x10 px each (areas 100).
GT = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0]])
# p0: top half of g0                         -> IoU(g0) = 50/100 = 1/2,  IoU(g1) = 0
# p1: almost all of g1 but score 0.3 <= 0.5  -> excluded (IoU(g1) would be 90/100)
# p2: straddles both, 20x10 px               -> IoU(g0) = 80/220 = 4/11, IoU(g1) = 20/280 = 1/14
PRED_BOXES = torch.tensor([[0.0, 0.0, 10.0, 5.0], [20.0, 0.0, 30.0, 9.0], [2.0, 0.0, 22.0, 10.0]])
PRED_SCORES = torch.tensor([0.9, 0.3, 0.7])
# Greedy: the best pair is (p0, g0) = 1/2; then p2 can only take g1 = 1/14.
# f = (1/2 + 1/14) / 2 = 2/7.
HAND_QUALITY = 2.0 / 7.0


def dets(boxes, scores):
    return {"boxes": boxes, "scores": scores, "labels": torch.ones(len(scores), dtype=torch.long)}


def test_detection_quality_hand_drawn_case():
    quality = detection_quality(PRED_BOXES, PRED_SCORES, GT)
    assert quality.shape == ()
    assert float(quality) == pytest.approx(HAND_QUALITY, abs=1e-6)


def test_below_threshold_prediction_would_change_the_result():
    # With p1 confident, greedy takes (p1, g1) = 0.9 and (p0, g0) = 0.5: f = 0.7.
    scores = torch.tensor([0.9, 0.6, 0.7])
    assert float(detection_quality(PRED_BOXES, scores, GT)) == pytest.approx(0.7, abs=1e-6)
    # The threshold is strict: a score of exactly 0.5 does not count.
    scores = torch.tensor([0.9, 0.5, 0.7])
    assert float(detection_quality(PRED_BOXES, scores, GT)) == pytest.approx(HAND_QUALITY, abs=1e-6)


def test_greedy_takes_highest_iou_pair_first_not_highest_score():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0]])
    # p0 (score 0.9) overlaps g0 by 1/2; p1 (score 0.6) is g0 exactly. Neither touches g1.
    boxes = torch.tensor([[0.0, 0.0, 10.0, 5.0], [0.0, 0.0, 10.0, 10.0]])
    scores = torch.tensor([0.9, 0.6])
    # IoU order: (p1, g0) = 1 first, p0 then has only g1 (IoU 0): f = (1 + 0) / 2.
    # (Score order would give p0 -> g0 = 1/2 and f = 1/4.)
    assert float(detection_quality(boxes, scores, gt)) == pytest.approx(0.5, abs=1e-6)


def test_labels_are_ignored_and_each_box_used_once():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    one = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    # One perfect prediction can cover only one of two identical GT boxes: f = 1/2.
    assert float(detection_quality(one, torch.tensor([0.99]), gt)) == pytest.approx(0.5)
    two = one.repeat(2, 1)
    assert float(detection_quality(two, torch.tensor([0.99, 0.98]), gt)) == pytest.approx(1.0)


def test_no_confident_predictions_and_no_ground_truth():
    assert float(detection_quality(torch.zeros(0, 4), torch.zeros(0), GT)) == 0.0
    assert float(detection_quality(PRED_BOXES, torch.full((3,), 0.1), GT)) == 0.0
    empty_gt = torch.zeros(0, 4)
    # K = 0: a constant whatever is predicted (false positives are not penalised, as for K > 0).
    assert float(detection_quality(torch.zeros(0, 4), torch.zeros(0), empty_gt)) == EMPTY_GT_QUALITY
    assert float(detection_quality(PRED_BOXES, PRED_SCORES, empty_gt)) == EMPTY_GT_QUALITY


def test_greedy_matching_on_a_padded_batch():
    # Hand-made IoU matrices; -1 marks padding. Row 0: greedy 0.9 then 0.2 (not 0.8 + 0.7 = 1.5).
    iou = torch.tensor(
        [
            [[0.9, 0.8], [0.7, 0.2], [-1.0, -1.0]],
            [[0.3, -1.0], [0.6, -1.0], [0.1, -1.0]],
        ]
    )
    assert torch.allclose(greedy_matched_iou_sum(iou), torch.tensor([1.1, 0.6]))


def test_patchwork_reward_is_clipped_difference():
    assert float(patchwork_reward(0.75, 0.5)) == 0.25
    assert float(patchwork_reward(0.5, 0.75)) == 0.0
    rewards = patchwork_reward(torch.tensor([0.5, 0.25]), torch.tensor([0.25, 0.5]))
    assert torch.equal(rewards, torch.tensor([0.25, 0.0]))


def test_detection_rewards_batched_hand_computed():
    # Stream 0: previous frame only had p0, f_prev = (1/2 + 0)/2 = 1/4; now 2/7 -> R = 1/28.
    # Stream 1: the same pair reversed, the new prediction is worse -> R = 0, not -1/28.
    # Stream 2: no ground truth -> R = 0 whatever is predicted.
    full = dets(PRED_BOXES, PRED_SCORES)
    only_p0 = dets(PRED_BOXES[:1], PRED_SCORES[:1])
    nothing = dets(torch.zeros(0, 4), torch.zeros(0))
    gt = {"boxes": GT, "labels": torch.tensor([3, 7])}
    no_gt = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    rewards = detection_rewards([full, only_p0, nothing], [only_p0, full, full], [gt, gt, no_gt])
    assert rewards.shape == (3,)
    assert torch.allclose(rewards, torch.tensor([1.0 / 28.0, 0.0, 0.0]), atol=1e-6)


def test_segmentation_quality_by_hand():
    gt = torch.zeros(4, 4, dtype=torch.bool)
    gt[1:3, 1:3] = True  # 4 pixels
    pred = torch.zeros(4, 4, dtype=torch.bool)
    pred[1:3, 0:3] = True
    pred[2, 2] = False  # 5 pixels, 3 of them on gt: J = 3 / (4 + 5 - 3) = 1/2
    assert float(segmentation_quality(pred, gt)) == pytest.approx(3 / 6)
    empty = torch.zeros(4, 4, dtype=torch.bool)
    assert float(segmentation_quality(empty, empty)) == 1.0
    assert float(segmentation_quality(pred, empty)) == 0.0
    assert float(segmentation_quality(empty, gt)) == 0.0


def test_segmentation_rewards_batched():
    gt = torch.zeros(2, 4, 4, dtype=torch.bool)
    gt[:, 0:2, 0:2] = True  # 4 pixels per stream
    now = torch.zeros_like(gt)
    prev = torch.zeros_like(gt)
    now[0, 0:2, 0:2] = True  # J = 1
    prev[0, 0:1, 0:2] = True  # J = 2/4
    now[1, 0:1, 0:1] = True  # J = 1/4
    prev[1, 0:2, 0:1] = True  # J = 2/4  -> worse now, clipped to 0
    assert torch.allclose(segmentation_quality(now, gt), torch.tensor([1.0, 0.25]))
    assert torch.equal(segmentation_rewards(now, prev, gt), torch.tensor([0.5, 0.0]))
