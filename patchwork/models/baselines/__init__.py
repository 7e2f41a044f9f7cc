"""The baseline variants of Tables 4 and 5 as streaming-model wrappers (Chai 2019, Sec. 4 "Model variants").

Each wrapper takes a streaming model (usually a single-frame model) and is itself a
:class:`~patchwork.models.streaming.StreamingModel`, so policies, the engine and the cost
table run any row of the tables alike::

    KeyframeInterval(model, interval=4)            # "SF interval=4"
    KeyframeDelay(model, interval=4, delay=3)      # "SF interval=4, delay=3"
    Flip(model)                                    # "... flip"
    Resolution(model, area=0.25)                   # "SF resolution=0.25"

``depth`` (the width multiplier) is a builder parameter of the model itself, not a wrapper.
One module per wrapper; :mod:`~patchwork.models.baselines.wrapper` holds what they share.
"""

from patchwork.models.baselines.delay import KeyframeDelay, balanced_partition
from patchwork.models.baselines.flip import Flip, average_raw
from patchwork.models.baselines.interval import KeyframeInterval
from patchwork.models.baselines.resolution import Resolution, rescale_prediction, rescale_target
from patchwork.models.baselines.compose import wrap_baselines
from patchwork.models.baselines.wrapper import StreamingWrapper

__all__ = [
    "Flip",
    "KeyframeDelay",
    "KeyframeInterval",
    "Resolution",
    "StreamingWrapper",
    "average_raw",
    "balanced_partition",
    "rescale_prediction",
    "rescale_target",
    "wrap_baselines",
]
