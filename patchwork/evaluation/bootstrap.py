"""95% bootstrap intervals over videos, paired across methods (Efron and Tibshirani 1993, ch. 13).

Every method is evaluated on the same validation videos, so one set of resamples (drawn from
the number of videos and a seed alone) serves every row: resample ``r`` weighs video ``v`` by
how often it was drawn, ``weights[r, v]``. Differences between two rows are then paired:
:func:`ordering` compares two rows' metric on the same resamples, which separates methods
that differ consistently over videos even when their intervals overlap.

Detection: matching never crosses frames, so a detection's true/false-positive flag is the
same in every resample and each resample's mAP is a weighted AP
(:func:`~patchwork.evaluation.vid.class_average_precision`). Segmentation: DAVIS averages
per-sequence statistics, so each resample's J (F) is the weighted mean of the sequences' J (F).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from patchwork.evaluation.vid import class_average_precision, match_vid

#: Resamples per row: enough for stable 2.5% / 97.5% percentiles of a mean (a few tenths of a point).
RESAMPLES = 500
LEVEL = 0.95


def resample_weights(num_videos: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """``(resamples, num_videos)`` counts: how often each video is drawn in each resample (each row sums to ``num_videos``)."""
    if num_videos < 1:
        raise ValueError("bootstrapping needs at least one video")
    rng = np.random.default_rng(seed)
    return rng.multinomial(num_videos, np.full(num_videos, 1.0 / num_videos), size=resamples).astype(np.float64)


def detection_bootstrap(
    detections: Sequence[Mapping[str, Any]], ground_truth: Sequence[Mapping[str, Any]], frame_video: np.ndarray,
    num_classes: int, weights: np.ndarray,
) -> np.ndarray:
    """VID mAP of each resample.

    Args:
        detections, ground_truth: per frame, as :func:`~patchwork.evaluation.vid.evaluate_vid` takes them.
        frame_video: ``(F,)`` the video index of each frame.
        weights: ``(R, V)`` from :func:`resample_weights`.
    Returns:
        ``(R,)`` mAP in ``[0, 1]`` (classes without ground truth in a resample left out of its mean).
    """
    det, gt, tp = match_vid(detections, ground_truth, num_classes)
    frame_video = np.asarray(frame_video, np.int64)
    samples = np.empty(len(weights))
    for r, w in enumerate(weights):
        ap = class_average_precision(det.labels, det.scores, tp, gt.labels, num_classes,
                                     w[frame_video[det.frame]], w[frame_video[gt.frame]])
        samples[r] = np.nanmean(ap) if not np.isnan(ap).all() else np.nan
    return samples


def mean_bootstrap(per_video: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``(R,)`` weighted means of a per-video statistic ``(V,)`` (DAVIS J and F Mean)."""
    return weights @ np.asarray(per_video, np.float64) / weights.sum(axis=1)


def interval(samples: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval ``(low, high)`` holding ``level`` of the samples."""
    values = np.asarray(samples, np.float64)
    tail = (1.0 - level) / 2 * 100
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Ordering:
    """Whether ``a > b + margin`` on a metric, from paired resamples.

    Attributes:
        verdict: ``"holds"`` (the interval of ``a - b - margin`` lies above 0), ``"does not hold"``
            (below 0) or ``"not separable"`` (it contains 0).
        difference: ``a - b`` on the full set of videos (metric units).
        low, high: the interval of ``a - b`` over the resamples.
    """

    verdict: str
    difference: float
    low: float
    high: float


def ordering(a: float, a_samples: Sequence[float], b: float, b_samples: Sequence[float], margin: float = 0.0,
             level: float = LEVEL) -> Ordering:
    """Compare two rows' metric (values and their paired bootstrap samples) on ``a > b + margin``."""
    a_samples, b_samples = np.asarray(a_samples, np.float64), np.asarray(b_samples, np.float64)
    if a_samples.shape != b_samples.shape:
        raise ValueError(f"paired samples must have one shape, got {a_samples.shape} and {b_samples.shape}")
    low, high = interval(a_samples - b_samples, level)
    verdict = "holds" if low > margin else "does not hold" if high < margin else "not separable"
    return Ordering(verdict, float(a - b), low, high)
