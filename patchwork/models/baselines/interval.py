"""``interval=K``: the model on every ``K``-th frame, its predictions copied in between (Chai 2019, Tab. 4/5)."""

from __future__ import annotations

import torch
from torch import Tensor

from patchwork.models.baselines.wrapper import KeyframeWrapper, split_state, write_streams
from patchwork.models.streaming import Description, StepOutput, StreamingModel
from patchwork.nn import StreamState


class KeyframeInterval(KeyframeWrapper):
    """``interval=K``: run the model on every ``K``-th frame of each stream, copy its predictions in between.

    Each stream has its own frame counter ``t`` (state ``"keyframe.counter"``, ``(B,)``);
    frame ``t`` is a keyframe when ``t % K == 0``. Only the streams due for a keyframe are
    computed, as one sub-batch (streams started at different times are at different
    counters); the others are not touched: no model call, no decoding. Their predictions
    (and policy observation, for a model with a policy) are the held copies of their last keyframe.

    Cost: max = the keyframe's FLOPs, avg = keyframe / ``K`` (Tab. 4/5 rows "SF interval=K").

    Args:
        model: the streaming model run on keyframes.
        interval: ``K >= 1`` (``K = 1`` is the model itself).

    ``raw`` of a step: ``{"keyframe_streams": LongTensor (n,), "keyframe": StepOutput of the
    model on those streams or None, "image_size": (H, W)}``.
    """

    COUNTER = "keyframe.counter"
    PREFIX = "keyframe."

    def __init__(self, model: StreamingModel, interval: int) -> None:
        super().__init__(model)
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        self.interval = int(interval)

    def forward_raw(self, frames: Tensor, actions: Tensor | None, state: StreamState) -> StepOutput:
        counter = state[self.COUNTER]
        batch = counter.shape[0]
        due = counter % self.interval == 0
        streams = due.nonzero().squeeze(1)
        inner, _ = split_state(state, self.PREFIX)
        new_state = StreamState(state)
        keyframe = None
        if streams.numel():
            # All streams due (the usual case: one video per stream, started together):
            # no sub-batch copies.
            subset = None if streams.numel() == batch else streams
            if subset is None:
                keyframe = self.model(frames, actions, inner)
            else:
                sub_actions = None if actions is None else actions.to(frames.device)[subset]
                keyframe = self.model(frames[subset], sub_actions, inner.select(subset))
            for key, value in keyframe.state.items():
                new_state[key] = write_streams(new_state.get(key), subset, value, batch)
            self.held.write(new_state, subset, keyframe.predictions, self.model.observe(keyframe))
        new_state[self.COUNTER] = counter + 1
        raw = {"keyframe_streams": streams, "keyframe": keyframe, "image_size": tuple(frames.shape[-2:])}
        return StepOutput(raw, new_state)

    def loss(self, out: StepOutput, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """The model's loss on this step's keyframe streams; ``{}`` when no stream had a keyframe."""
        if out.raw["keyframe"] is None:
            return {}
        return self.model.loss(out.raw["keyframe"], [targets[b] for b in out.raw["keyframe_streams"].tolist()])

    def describe(self) -> Description:
        return self.model.describe().with_options(before=(f"interval={self.interval}",), interval=self.interval)
