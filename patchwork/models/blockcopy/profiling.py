"""Where a BlockCopy frame's time goes, split as the paper's Tab. 3 does.

Parts: the sparse-execution overhead (splitting frames into blocks, reading halos, converting
dense per-stream values to blocks, finding the executed blocks), the feature transfer
(writing executed blocks into the memories that keep the previous features), the policy
network, the information gain, and the task network's ops themselves (the rest).
:class:`~patchwork.models.blockcopy.network.BlockCopyNetwork` marks the first two with
``torch.profiler`` ranges; a caller marks its policy and information gain with
:data:`POLICY_RANGE` and :data:`INFORMATION_GAIN_RANGE` (``record_function``).
"""

from __future__ import annotations

from collections.abc import Callable

from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

from patchwork.models.blockcopy.network import OVERHEAD_RANGE, TRANSFER_RANGE

POLICY_RANGE = "blockcopy.policy"
INFORMATION_GAIN_RANGE = "blockcopy.information_gain"
_FRAME_RANGE = "blockcopy.frame"

#: Tab. 3's parts, in its column order, and the profiler range of each (``ops`` is the rest).
PARTS = {"overhead": OVERHEAD_RANGE, "transfer": TRANSFER_RANGE, "policy": POLICY_RANGE, "information_gain": INFORMATION_GAIN_RANGE}


def frame_time_split(run: Callable[[], object]) -> dict[str, float]:
    """Profile one call of ``run()`` (one frame) on the CPU and split its time.

    Returns:
        ``{"total", "overhead", "transfer", "policy", "information_gain", "ops"}`` as
        fractions of the profiled frame time (``total`` = 1.0; ``ops`` is what the marked
        parts leave). The profiler slows every op a little; apply the fractions to a frame
        time measured without it.
    """
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        with record_function(_FRAME_RANGE):
            run()
    times = {event.key: event.cpu_time_total for event in profiler.key_averages()}
    total = times[_FRAME_RANGE]
    split = {part: times.get(name, 0.0) / total for part, name in PARTS.items()}
    return {"total": 1.0, **split, "ops": 1.0 - sum(split.values())}
