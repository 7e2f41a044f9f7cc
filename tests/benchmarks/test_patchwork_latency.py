"""The interleaved latency table's structure (its figures are machine timings, never asserted)."""

import math

import pytest

from patchwork.benchmarks.patchwork_latency import speed_table

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_speed_table_has_every_task_and_kind_per_grid_with_ratios_to_single_frame():
    rows = speed_table(image_size=(64, 64), width=0.25, grids=((1, 1), (2, 1)), frames=1, warmup=0)
    keys = [(r["task"], r["kind"], r["grid"]) for r in rows]
    assert keys == [
        ("backbone", "window pass", "single-frame"),
        ("detection", "forward (no decoding)", "single-frame"),
        ("detection", "whole step", "single-frame"),
        ("segmentation", "whole step", "single-frame"),
        ("backbone", "window pass", "M=2, N=1"),
        ("backbone", "plain torchvision on the crop", "M=2, N=1"),
        ("detection", "forward (no decoding)", "M=2, N=1"),
        ("detection", "whole step", "M=2, N=1"),
        ("segmentation", "whole step", "M=2, N=1"),
    ]
    by_key = {key: row for key, row in zip(keys, rows)}
    assert all(row["speedup"] == 1.0 for key, row in by_key.items() if key[2] == "single-frame")
    window = by_key[("backbone", "window pass", "M=2, N=1")]
    plain = by_key[("backbone", "plain torchvision on the crop", "M=2, N=1")]
    assert window["vs_plain"] == pytest.approx(window["median_ms"] / plain["median_ms"])
    assert math.isnan(plain["vs_plain"]) and math.isnan(by_key[("detection", "whole step", "M=2, N=1")]["vs_plain"])
