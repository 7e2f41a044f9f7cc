"""Bootstrap intervals: weighted AP equals AP of the list with copies; pairing; verdicts."""

import numpy as np
import pytest
import torch

from patchwork.evaluation.bootstrap import (detection_bootstrap, interval, mean_bootstrap, ordering,
                                            resample_weights)
from patchwork.evaluation.vid import evaluate_vid


def _frame(boxes, labels, scores=None):
    frame = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels)}
    if scores is not None:
        frame["scores"] = torch.tensor(scores)
    return frame


def _videos():
    """Three one- or two-frame videos, two classes, true and false positives at mixed scores."""
    det = [_frame([[0, 0, 20, 20], [50, 50, 70, 70]], [0, 0], [0.9, 0.8]),       # video 0: tp, fp
           _frame([[0, 0, 20, 20]], [1], [0.3]),                                 # video 0: tp
           _frame([[10, 10, 30, 30], [0, 0, 20, 20]], [0, 1], [0.7, 0.95]),      # video 1: fp, fp
           _frame([[5, 5, 25, 25]], [0], [0.6])]                                 # video 2: tp
    gt = [_frame([[0, 0, 20, 20]], [0]), _frame([[0, 0, 20, 20]], [1]),
          _frame([[60, 60, 80, 80]], [0]), _frame([[5, 5, 25, 25]], [0])]
    return det, gt, np.array([0, 0, 1, 2])


def test_unit_weights_give_the_plain_map():
    det, gt, frame_video = _videos()
    samples = detection_bootstrap(det, gt, frame_video, 2, np.ones((1, 3)))
    assert samples[0] == pytest.approx(evaluate_vid(det, gt, 2)["mAP"], abs=1e-12)


def test_weights_equal_duplicated_videos():
    det, gt, frame_video = _videos()
    # Video 0 twice, video 1 dropped, video 2 once: the same as evaluating that list of frames.
    weights = np.array([[2.0, 0.0, 1.0]])
    frames = [0, 1, 0, 1, 3]
    expected = evaluate_vid([det[f] for f in frames], [gt[f] for f in frames], 2)["mAP"]
    assert detection_bootstrap(det, gt, frame_video, 2, weights)[0] == pytest.approx(expected, abs=1e-12)


def test_resamples_are_paired_and_reproducible():
    a, b = resample_weights(5, 50, seed=3), resample_weights(5, 50, seed=3)
    assert np.array_equal(a, b) and (a.sum(axis=1) == 5).all()
    assert not np.array_equal(a, resample_weights(5, 50, seed=4))


def test_mean_bootstrap_and_interval():
    weights = np.array([[1.0, 1.0, 1.0], [3.0, 0.0, 0.0], [0.0, 1.0, 2.0]])
    means = mean_bootstrap(np.array([0.3, 0.6, 0.9]), weights)
    assert means == pytest.approx([0.6, 0.3, 0.8])
    assert interval(np.arange(101.0), level=0.9) == pytest.approx((5.0, 95.0))


def test_ordering_verdicts_use_paired_differences():
    rng = np.random.default_rng(0)
    shared = rng.normal(50, 5, 400)  # a video effect both methods share: their intervals overlap widely
    better = ordering(52.0, shared + 2 + rng.normal(0, 0.2, 400), 50.0, shared)
    assert better.verdict == "holds" and better.difference == 2.0 and 1.0 < better.low < better.high < 3.0
    assert ordering(50.0, shared, 52.0, shared + 2).verdict == "does not hold"
    assert ordering(50.0, shared + rng.normal(0, 1, 400), 50.0, shared).verdict == "not separable"
    # "within 2 points": a > b - 2.
    assert ordering(49.0, shared - 1, 50.0, shared, margin=-2.0).verdict == "holds"


def test_claims_verdicts_cost_condition_and_missing_rows():
    from patchwork.evaluation.claims import Claim, check_claims
    from patchwork.evaluation.report import claims_table

    shared = np.linspace(40, 60, 200)
    rows = [{"method": "A", "mAP": 52.0, "mflops_avg": 50.0, "bootstrap": {"mAP": list(shared + 2)}},
            {"method": "B", "mAP": 50.0, "mflops_avg": 100.0, "bootstrap": {"mAP": list(shared)}}]
    results = check_claims([Claim("t", "A", "B"), Claim("t", "B", "A"), Claim("t", "A", "B", max_cost_ratio=0.4),
                            Claim("t", "A", "C")], rows, "mAP")
    assert [r["verdict"] for r in results] == ["holds", "does not hold", "does not hold (cost)", "not run"]
    assert results[0]["difference"] == 2.0 and results[0]["low"] == pytest.approx(2.0)
    assert results[2]["cost_ratio"] == 0.5
    table = claims_table(results)
    assert table.rows[0]["Claim"] == "A > B" and table.rows[3]["Difference"] == "-"
