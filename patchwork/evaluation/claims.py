"""The papers' findings as checkable orderings between table rows, each with a paired interval.

A :class:`Claim` names two rows by their ``method`` labels and says ``a > b + margin`` on the
task's main metric (mAP; J for segmentation), optionally with a cost condition (``a`` at most
``max_cost_ratio`` of ``b``'s average MFLOPs). :func:`check_claims` gives each claim a verdict
from the rows' paired bootstrap resamples (:func:`~patchwork.evaluation.bootstrap.ordering`):
``holds``, ``does not hold`` or ``not separable`` (the interval of the difference contains the
margin); ``not run`` when a row is missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from patchwork.evaluation.bootstrap import ordering


@dataclass(frozen=True)
class Claim:
    """``a > b + margin`` on the main metric (and ``a``'s average MFLOPs at most ``max_cost_ratio`` of ``b``'s).

    Attributes:
        source: where the finding comes from (e.g. ``"Chai 2019, Tab. 1"``).
        a, b: the rows' ``method`` labels.
        margin: metric points (``-2.0``: ``a`` within 2 points of ``b`` or above).
        max_cost_ratio: the cost condition, or ``None``.
    """

    source: str
    a: str
    b: str
    margin: float = 0.0
    max_cost_ratio: float | None = None

    @property
    def text(self) -> str:
        """The claim in words, e.g. ``"Patchwork M=4, N=2 > SF interval=4"``, ``"LFS interleaved tau=9 > LFS f0 only - 3"``."""
        margin = "" if self.margin == 0 else f" {'-' if self.margin < 0 else '+'} {abs(self.margin):g}"
        cost = f", at <= {self.max_cost_ratio:.0%} of its MFLOPs" if self.max_cost_ratio is not None else ""
        return f"{self.a} > {self.b}{margin}{cost}"


def check_claims(claims: Sequence[Claim], rows: Sequence[Mapping[str, Any]], metric: str) -> list[dict[str, Any]]:
    """One result per claim: ``source``, ``claim``, ``metric``, ``difference`` (a - b, points),
    ``low``, ``high`` (its 95% paired interval), ``cost_ratio`` and ``verdict``."""
    by_method = {row["method"]: row for row in rows}
    results = []
    for claim in claims:
        result: dict[str, Any] = {"source": claim.source, "claim": claim.text, "metric": metric}
        a, b = by_method.get(claim.a), by_method.get(claim.b)
        if a is None or b is None:
            results.append({**result, "verdict": "not run"})
            continue
        if "bootstrap" not in a or "bootstrap" not in b:
            raise ValueError(f"claim {claim.text!r} needs both rows' bootstrap resamples")
        order = ordering(a[metric], a["bootstrap"][metric], b[metric], b["bootstrap"][metric], claim.margin)
        verdict = order.verdict
        cost_ratio = a["mflops_avg"] / b["mflops_avg"] if b["mflops_avg"] else float("inf")
        if claim.max_cost_ratio is not None and cost_ratio > claim.max_cost_ratio:
            verdict = "does not hold (cost)"
        results.append({**result, "difference": order.difference, "low": order.low, "high": order.high,
                        "cost_ratio": cost_ratio, "verdict": verdict})
    return results
