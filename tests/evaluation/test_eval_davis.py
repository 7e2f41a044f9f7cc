"""Tests for the DAVIS J and F measures (patchwork.evaluation.davis)."""

import numpy as np
import pytest
import torch

from patchwork.evaluation.davis import (
    boundary_tolerance,
    db_eval_boundary,
    db_eval_iou,
    db_statistics,
    dilate,
    disk,
    evaluate_davis,
    evaluate_davis_sequence,
    seg2bmap,
)


def square(top, left, size=5, shape=(20, 20)):
    m = np.zeros(shape, dtype=bool)
    m[top : top + size, left : left + size] = True
    return m


EMPTY = np.zeros((20, 20), dtype=bool)


def test_j_hand_computed_and_both_empty():
    a, b = square(5, 5), square(5, 6)  # 25 pixels each, 20 shared
    assert db_eval_iou(a, b) == pytest.approx(20 / 30)
    assert db_eval_iou(EMPTY, EMPTY) == 1.0
    assert db_eval_iou(a, EMPTY) == 0.0
    # 0/255 tensors are accepted.
    assert db_eval_iou(torch.from_numpy(a.astype(np.uint8) * 255), torch.from_numpy(b)) == pytest.approx(2 / 3)


def test_seg2bmap_outline_is_offset_towards_origin():
    b = seg2bmap(square(5, 5))  # rows/cols 5..9 -> outline of rows/cols 4..9
    expected = np.zeros((20, 20), dtype=bool)
    expected[4:10, 4:10] = True
    expected[5:9, 5:9] = False
    np.testing.assert_array_equal(b, expected)
    assert not seg2bmap(np.ones((6, 6), dtype=bool)).any()  # the reference's full-frame quirk


def test_disk_and_dilation():
    np.testing.assert_array_equal(disk(1), [[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    assert disk(2).sum() == 13
    point = np.zeros((1, 7, 7), dtype=bool)
    point[0, 0, 0] = True  # at the corner: the image border is background
    np.testing.assert_array_equal(dilate(point, 2)[0, :3, :3], disk(2)[2:, 2:])
    assert dilate(point, 2).sum() == 6
    assert boundary_tolerance((480, 854), 0.008) == 8
    assert boundary_tolerance((20, 20), 0.008) == 1
    assert boundary_tolerance((20, 20), 3) == 3


def test_f_edge_cases():
    gt = square(5, 5)
    assert db_eval_boundary(gt, EMPTY) == 0.0  # empty prediction
    assert db_eval_boundary(EMPTY, gt) == 0.0  # empty ground truth
    assert db_eval_boundary(EMPTY, EMPTY) == 1.0  # both empty
    assert db_eval_boundary(gt, gt) == 1.0


def test_f_shifted_square_against_tolerance():
    gt = square(5, 5)
    # Tolerance ceil(0.008 * 28.3) = 1 pixel: a one-pixel shift is fully matched.
    assert db_eval_boundary(gt, square(5, 6)) == 1.0
    # No tolerance: the two 20-pixel outlines share their top and bottom rows'
    # 5 common pixels each, so P = R = 10 / 20 and F = 0.5.
    assert db_eval_boundary(gt, square(5, 6), bound_th=0) == pytest.approx(0.5)
    # Two-pixel shift, 1-pixel tolerance: of the prediction's 20 outline pixels, 5 in
    # the top row, 5 in the bottom row and the 2 ends of its left side (next to the
    # ground truth's top/bottom rows) match; by symmetry P = R = 12 / 20.
    assert db_eval_boundary(gt, square(5, 7)) == pytest.approx(0.6)
    # ... and a 2-pixel tolerance matches everything again.
    assert db_eval_boundary(gt, square(5, 7), bound_th=2) == 1.0


def test_f_precision_recall_asymmetry():
    # Prediction = ground truth plus a far blob: recall 1, precision 20 / 40 -> F = 2/3.
    gt = square(2, 2)
    pred = gt | square(12, 12)
    assert db_eval_boundary(gt, pred) == pytest.approx(2 * 0.5 * 1 / 1.5)


def test_statistics_on_hand_made_series():
    # 8 frames: reference bins are frames [0..2], [2..4], [4..5], [5..7].
    x = np.array([1.0, 1, 1, 0.6, 0.5, 0, 0, 0])
    stats = db_statistics(x)
    assert stats["mean"] == pytest.approx(4.1 / 8)
    assert stats["recall"] == pytest.approx(4 / 8)  # 0.5 itself is not "> 0.5"
    assert stats["decay"] == pytest.approx(1.0 - 0.0)
    ramp = np.arange(8.0)  # first bin 0,1,2 (mean 1), last 5,6,7 (mean 6)
    assert db_statistics(ramp)["decay"] == pytest.approx(-5.0)  # np.array_split would give -6
    five = np.array([4.0, 2, 9, 9, 0])  # 5 frames: bins [0..1] and [3..4]
    assert db_statistics(five)["decay"] == pytest.approx(3.0 - 4.5)
    assert db_statistics([0.7])["decay"] == 0.0


def test_first_and_last_frames_are_excluded_by_default():
    gt = [square(5, 5)] * 5
    pred = [EMPTY, square(5, 5), square(5, 5), square(5, 5), EMPTY]
    kept = evaluate_davis_sequence(gt, pred)
    assert kept["J"]["mean"] == 1.0 and kept["F"]["mean"] == 1.0
    assert len(kept["J"]["per_frame"]) == 3
    every = evaluate_davis_sequence(gt, pred, exclude_first_last=False)
    np.testing.assert_allclose(every["J"]["per_frame"], [0, 1, 1, 1, 0])
    assert every["J"]["mean"] == pytest.approx(0.6)
    assert every["F"]["recall"] == pytest.approx(0.6)
    with pytest.raises(ValueError):
        evaluate_davis_sequence(gt[:2], pred[:2])


def test_dataset_averages_over_sequences():
    good = ([square(5, 5)] * 4, [square(5, 5)] * 4)
    bad = ([square(5, 5)] * 10, [EMPTY] * 10)
    out = evaluate_davis({"good": good, "bad": bad})
    assert out["J"]["mean"] == pytest.approx(0.5)  # per-sequence means 1 and 0, unweighted
    assert out["F"]["recall"] == pytest.approx(0.5)
    assert out["J&F"] == pytest.approx(0.5)
    assert set(out["per_sequence"]) == {"good", "bad"}
    assert out["per_sequence"]["bad"]["F"]["mean"] == 0.0
    # A (T, H, W) tensor works as a sequence too.
    stacked = torch.from_numpy(np.stack(good[0]))
    assert evaluate_davis_sequence(stacked, stacked)["J"]["mean"] == 1.0


def brute_force_f(gt, pred, radius):
    """F by explicit distances between boundary pixels (no dilation)."""
    gt_pts, pred_pts = np.argwhere(seg2bmap(gt)), np.argwhere(seg2bmap(pred))
    if len(gt_pts) == 0 or len(pred_pts) == 0:
        return float(len(gt_pts) == len(pred_pts))
    d2 = ((gt_pts[:, None, :] - pred_pts[None, :, :]) ** 2).sum(-1)
    recall = (d2.min(1) <= radius**2).mean()
    precision = (d2.min(0) <= radius**2).mean()
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


@pytest.mark.parametrize("radius", [1, 2, 4])
def test_f_matches_brute_force_on_random_blobs(radius):
    rng = np.random.default_rng(radius)
    for _ in range(5):
        masks = []
        for _ in range(2):
            m = np.zeros((24, 32), dtype=bool)
            for _ in range(3):
                y, x = rng.integers(0, 24), rng.integers(0, 32)
                m[y : y + rng.integers(2, 10), x : x + rng.integers(2, 12)] = True
            masks.append(m)
        assert db_eval_boundary(*masks, bound_th=radius) == pytest.approx(brute_force_f(*masks, radius))
