"""Per-frame cost summaries for the paper's tables (Sec. 4; supplementary Tables 4 and 5).

The paper reports each cost "max and average per frame". Theoretical cost (FLOPs)
is deterministic per frame, so its max is the true maximum. Measured latency is
noisy, so its "max" is a high percentile (95th and 99th) and its "avg" is the
mean with the standard deviation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from patchwork.evaluation.vid import as_numpy


def summarize_latency(times_ms: Any) -> dict[str, float | int]:
    """Summary of per-frame wall-clock times.

    Args:
        times_ms: (T,) per-frame latencies in milliseconds (list, array or tensor).

    Returns:
        ``{"p95", "p99", "median", "mean", "std", "max", "count"}`` in milliseconds
        (``count`` is T). Percentiles use numpy's default ``"linear"`` method
        (Hyndman-Fan type 7: the value at fractional rank ``q/100 * (T-1)`` of the
        sorted times, interpolated between its neighbours); ``std`` is the
        population standard deviation (``ddof=0``).
    """
    t = as_numpy(times_ms, np.float64).reshape(-1)
    if t.size == 0:
        raise ValueError("summarize_latency needs at least one time")
    p95, p99, median = np.percentile(t, [95, 99, 50], method="linear")
    return {
        "p95": float(p95),
        "p99": float(p99),
        "median": float(median),
        "mean": float(t.mean()),
        "std": float(t.std()),
        "max": float(t.max()),
        "count": int(t.size),
    }


def summarize_flops(per_frame_flops: Any) -> dict[str, float]:
    """Max and average of per-frame FLOPs (or any deterministic per-frame cost).

    Args:
        per_frame_flops: (T,) per-frame cost, e.g. in MFLOPs (FLOPs = 2 x multiply-adds).

    Returns:
        ``{"max", "avg"}`` in the input's unit. Keyframe baselines, say, have a
        max well above their average; Patchwork's max equals its average.
    """
    f = as_numpy(per_frame_flops, np.float64).reshape(-1)
    if f.size == 0:
        raise ValueError("summarize_flops needs at least one frame")
    return {"max": float(f.max()), "avg": float(f.mean())}
