"""FLOPs per frame, counted as executed (a leaf: every layer may count cost).

FLOPs are ``2 x multiply-adds``, as the three papers count them, measured by
``torch.utils.flop_counter.FlopCounterMode`` on the operations a call really runs
(convolutions and matrix products; element-wise ops, BatchNorm in inference and memory
copies count zero). A streaming method's cost depends on the frame (a keyframe baseline
computes only every K-th frame, LFS runs f0 or f1, BlockCopy executes some blocks), so
cost is reported as the **max** and the **average** over the frames of a stream
(Chai 2019, Sec. 4).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch.utils.flop_counter import FlopCounterMode


def count_flops(run: Callable[[], object]) -> int:
    """FLOPs (2 x multiply-adds) of everything ``run()`` computes."""
    with FlopCounterMode(display=False) as counter:
        run()
    return int(counter.get_total_flops())


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
    """
    return FrameCost.from_frames([count_flops(lambda t=t: step(t)) for t in range(num_frames)])
