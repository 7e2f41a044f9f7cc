"""FLOPs per frame, counted as executed (a leaf: every layer may count cost).

FLOPs are ``2 x multiply-adds``, as the three papers count them, measured with PyTorch's own
per-operator formulas (``torch.utils.flop_counter``'s registry, what ``FlopCounterMode`` counts)
on the operations a call really runs (convolutions and matrix products; element-wise ops,
BatchNorm in inference and memory copies count zero). The counting mode is a bare dispatch mode:
``FlopCounterMode`` also tracks which module each operation ran in, which made a counted
evaluation of BlockCopy about 3.2x as long as an uncounted one, against about 1.8x without it.

A streaming method's cost depends on the frame (a keyframe baseline computes only every K-th
frame, LFS runs f0 or f1, BlockCopy executes some blocks), so cost is reported as the **max** and the **average** over the frames of a stream
(Chai 2019, Sec. 4).

Work that a method runs *beside* the frame, on another core, which the frame does not wait
for (LFS's asynchronous f0, Liu et al. 2019, Sec. 3.5), is marked with :func:`beside_the_frame`:
it counts in the average (it is still computed) but not in the frame's max (the per-frame
cost a deadline sees), as LFS Tab. 2 reports "84 (190)" for its asynchronous row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from typing import Any

from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry


#: FLOPs counted inside :func:`beside_the_frame` during the innermost :func:`count_frame_flops`
#: (``None``: no frame is being counted, so marking costs nothing).
_beside: list[int] | None = None


class _FlopCount(TorchDispatchMode):
    """Sums the registered FLOPs of every operation run inside it (nested counts see them too)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def count_flops(run: Callable[[], object]) -> int:
    """FLOPs (2 x multiply-adds) of everything ``run()`` computes (beside the frame or not)."""
    with _FlopCount() as counter:
        run()
    return int(counter.total)


@contextmanager
def beside_the_frame() -> Iterator[None]:
    """Mark work that runs beside the frame (another core): :func:`count_frame_flops` counts it apart."""
    if _beside is None:
        yield
        return
    # A nested counter sees the same operations as the frame's (both count them).
    with _FlopCount() as counter:
        yield
    _beside.append(int(counter.total))


def count_frame_flops(run: Callable[[], object]) -> tuple[int, int]:
    """``(all FLOPs, FLOPs beside the frame)`` of ``run()``; the frame waits for ``all - beside``."""
    global _beside
    outer, _beside = _beside, []
    try:
        total = count_flops(run)
        beside = sum(_beside)
    finally:
        _beside = outer
    return total, beside


@dataclass(frozen=True)
class FrameCost:
    """Max and average FLOPs per frame over a stream, in MFLOPs (10**6 FLOPs)."""

    mflops_max: float
    mflops_avg: float

    @classmethod
    def from_frames(cls, flops_per_frame: Sequence[int]) -> "FrameCost":
        """Summarise per-frame FLOPs counts (at least one frame)."""
        if not flops_per_frame:
            raise ValueError("FrameCost needs at least one frame")
        return cls(max(flops_per_frame) / 1e6, sum(flops_per_frame) / len(flops_per_frame) / 1e6)


def stream_cost(step: Callable[[int], object], num_frames: int) -> FrameCost:
    """Cost of ``num_frames`` consecutive calls ``step(t)``, each counted as one frame.

    ``step`` runs whatever the method computes at frame ``t`` under the actions its
    policy takes, so frame-dependent schedules are measured as they run, not assumed.
    The max is over what each frame waits for (work :func:`beside_the_frame` excluded), the
    average over all the work.
    """
    if num_frames < 1:
        raise ValueError("stream_cost needs at least one frame")
    counts = [count_frame_flops(lambda t=t: step(t)) for t in range(num_frames)]
    waited = max(total - beside for total, beside in counts)
    return FrameCost(waited / 1e6, sum(total for total, _ in counts) / num_frames / 1e6)
