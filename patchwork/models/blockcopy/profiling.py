"""Where a BlockCopy frame's time goes, split as the paper's Tab. 3 does.

Parts: the sparse-execution overhead (finding the executed blocks, splitting frames into
blocks, reading halos, converting dense per-stream values to blocks), the feature transfer
(writing executed blocks into the memories that keep the previous features), the policy
network, the information gain, the policy's backward pass and update (online learning), and the
task network's ops themselves (the rest).
:class:`~patchwork.models.blockcopy.network.BlockCopyNetwork` marks the first two with
:class:`part`, :class:`~patchwork.models.blockcopy.model.BlockCopyModel` its policy network;
the shared roles (a reward, a learner) know nothing of BlockCopy, so whoever builds them marks
their calls (:func:`timed`, e.g. ``learner.update = timed(learner.update, UPDATE)``).

Times are wall-clock (``time.perf_counter``) accumulated while :func:`frame_time_split` runs:
a profiler's per-op bookkeeping would inflate the many small copies of the overhead far more
than the few large convolutions. While ``torch.profiler`` is recording, each part is also a
``record_function`` range named ``"blockcopy.<part>"``.
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch.autograd.profiler import record_function

OVERHEAD = "overhead"
TRANSFER = "transfer"
POLICY = "policy"
INFORMATION_GAIN = "information_gain"
#: The policy's backward pass and optimiser step (REINFORCE: only on the frames that update).
UPDATE = "update"
#: Tab. 3's parts in its column order (``ops`` is the rest of the frame).
PARTS = (OVERHEAD, TRANSFER, POLICY, INFORMATION_GAIN, UPDATE)

_T = TypeVar("_T")

_accumulators: list[defaultdict[str, float]] = []


class part:  # noqa: N801 - used like a function: ``with part(OVERHEAD): ...``
    """Time spent inside counts towards ``name`` while :func:`frame_time_split` runs (parts must not nest)."""

    __slots__ = ("name", "_start", "_range")

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> "part":
        self._range = record_function(f"blockcopy.{self.name}") if torch.autograd._profiler_enabled() else None
        if self._range is not None:
            self._range.__enter__()
        self._start = time.perf_counter() if _accumulators else None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._start is not None:
            _accumulators[-1][self.name] += time.perf_counter() - self._start
        if self._range is not None:
            self._range.__exit__(*exc)


def timed(function: Callable[..., _T], name: str) -> Callable[..., _T]:
    """``function`` with each call inside ``part(name)`` (it must not call marked code itself)."""

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> _T:
        with part(name):
            return function(*args, **kwargs)

    return call


def frame_time_split(run: Callable[[], object]) -> dict[str, float]:
    """Run ``run()`` (one frame) and split its wall-clock time into Tab. 3's parts.

    Returns:
        Milliseconds ``{"total", "overhead", "transfer", "policy", "information_gain", "update", "ops"}``;
        ``ops`` is what the marked parts leave of ``total``.
    """
    times: defaultdict[str, float] = defaultdict(float)
    _accumulators.append(times)
    start = time.perf_counter()
    try:
        run()
    finally:
        total = time.perf_counter() - start
        _accumulators.pop()
    split = {name: 1e3 * times[name] for name in PARTS}
    return {"total": 1e3 * total, **split, "ops": 1e3 * total - sum(split.values())}
