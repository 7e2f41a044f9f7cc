"""Wrapping a model as one row of Tab. 4/5 says (Chai 2019, Sec. 4 "Model variants")."""

from __future__ import annotations

from patchwork.models.baselines.delay import KeyframeDelay
from patchwork.models.baselines.flip import Flip
from patchwork.models.baselines.interval import KeyframeInterval
from patchwork.models.baselines.resolution import Resolution
from patchwork.models.streaming import StreamingModel


def wrap_baselines(
    model: StreamingModel, interval: int = 1, delay: int = 0, area: float = 1.0, flip: bool = False,
    pieces_per_frame: int = KeyframeDelay.PIECES_PER_FRAME,
) -> StreamingModel:
    """``resolution`` innermost (the model runs on downscaled frames), then ``flip`` (both passes
    at that resolution), then the keyframe schedule (``delay > 0``: :class:`KeyframeDelay`, with
    ``pieces_per_frame``; else ``interval > 1``: :class:`KeyframeInterval`) outermost."""
    if area != 1.0:
        model = Resolution(model, area)
    if flip:
        model = Flip(model)
    if delay:
        model = KeyframeDelay(model, interval, delay, pieces_per_frame)
    elif interval > 1:
        model = KeyframeInterval(model, interval)
    return model
