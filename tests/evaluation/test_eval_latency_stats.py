"""Tests for the per-frame cost summaries (patchwork.evaluation.latency_stats)."""

import math

import numpy as np
import pytest
import torch

from patchwork.evaluation.latency_stats import summarize_flops, summarize_latency


def test_latency_percentiles_on_hand_made_list():
    # 21 times 0, 1, ..., 19 ms plus one 100 ms outlier.
    times = list(range(20)) + [100]
    s = summarize_latency(times)
    # Linear interpolation at rank q/100 * 20: p95 -> rank 19 -> 19; p99 -> rank 19.8 -> 19 + 0.8 * 81.
    assert s["p95"] == pytest.approx(19.0)
    assert s["p99"] == pytest.approx(19 + 0.8 * 81)
    assert s["median"] == 10.0
    assert s["mean"] == pytest.approx((190 + 100) / 21)
    expected_std = math.sqrt(sum((t - s["mean"]) ** 2 for t in times) / 21)
    assert s["std"] == pytest.approx(expected_std)
    assert s["max"] == 100.0
    assert s["count"] == 21


def test_latency_accepts_tensors_and_small_inputs():
    s = summarize_latency(torch.tensor([4.0, 2.0]))
    # Two values: p95 at rank 0.95 between 2 and 4.
    assert s["p95"] == pytest.approx(2 + 0.95 * 2)
    assert s["median"] == 3.0 and s["std"] == 1.0
    single = summarize_latency(np.array([7.5]))
    assert single["p99"] == single["mean"] == 7.5 and single["std"] == 0.0
    with pytest.raises(ValueError):
        summarize_latency([])


def test_flops_max_and_average():
    # A keyframe baseline with interval 4: one full pass then three copies.
    assert summarize_flops([2047, 0, 0, 0, 2047, 0, 0, 0]) == {"max": 2047.0, "avg": 2047 / 4}
    assert summarize_flops(np.full(5, 543.0)) == {"max": 543.0, "avg": 543.0}
    with pytest.raises(ValueError):
        summarize_flops([])
