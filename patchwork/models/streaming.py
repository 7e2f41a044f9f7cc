"""The one streaming interface every model implements (Patchwork, baselines, peer methods).

A streaming model processes ``B`` independent video streams one frame at a time::

    state = model.init_state(B, (H, W))
    out = model(frames, actions, state)   # frames (B, 3, H, W) float, actions (B,) LongTensor
    out.predictions   # eval mode: one prediction per stream, for the full frame
    out.q_values      # (B, A): the attention network's values for the next action, or None
    out.state         # the new state; the old one is consumed
    losses = model.loss(out, targets)     # training: dict of scalar task losses

``actions[b]`` is the window stream ``b`` looks at in this frame (chosen from the previous
step's ``q_values`` by a policy); a single-frame model has one action, 0. Policies,
training and evaluation only ever see this interface, so they never care which model
runs. Looking Fast and Slow would read ``actions`` as "which extractor" and keep its LSTM
state in ``state``; BlockCopy would take per-block actions ``(B, num_blocks)``.

Frames are float images in ``[0, 1]``; each model normalises them itself.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from patchwork.nn import ActionHistory, StreamState, WindowGrid

#: ImageNet statistics, as torchvision's MobileNetV2 weights expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ACTION_HISTORY = "action_history"

T = TypeVar("T")

#: A computation that yields between its layers and returns its result: ``step_stages``
#: lets the ``delay`` baseline spread one keyframe's computation over several frames.
Stages = Generator[None, None, T]


def run_stages(stages: Stages[T]) -> T:
    """Run a staged computation to the end and return its result."""
    while True:
        try:
            next(stages)
        except StopIteration as finished:
            return finished.value


@dataclass
class StepOutput:
    """What one step of a streaming model returns.

    Attributes:
        raw: model-specific head outputs of this step (what :meth:`StreamingModel.loss`
            and :meth:`StreamingModel.predict` read).
        state: the new state of the ``B`` streams.
        q_values: ``(B, A)`` attention Q-values for the next action, or ``None`` for a
            model without an attention network.
        predictions: the full-frame predictions per stream (filled in eval mode).
    """

    raw: dict[str, Any]
    state: StreamState
    q_values: Tensor | None = None
    predictions: list[dict[str, Tensor]] | None = field(default=None)


class StreamingModel(nn.Module):
    """Base class: normalisation, the action history and the step contract.

    Subclasses implement :meth:`init_model_state`, :meth:`step_stages`,
    :meth:`attention_input`, :meth:`predict`, :meth:`loss` and :meth:`mirror_raw`. ``attention`` (optional) maps
    ``(restored memory, action history)`` to Q-values.

    Args:
        grid: the window grid (``WindowGrid(1, 1)`` for a single-frame model).
        attention: the attention Q-network, or ``None``.
        history_alpha: the action history's decay ``alpha`` (Eq. 1).
    """

    def __init__(self, grid: WindowGrid, attention: nn.Module | None = None, history_alpha: float = 0.5) -> None:
        super().__init__()
        self.grid = grid
        self.attention = attention
        self.history = ActionHistory(grid.num_windows, history_alpha)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def num_actions(self) -> int:
        """Size of the action space."""
        return self.grid.num_windows

    def normalize(self, frames: Tensor) -> Tensor:
        """``(B, 3, H, W)`` images in ``[0, 1]`` (or uint8) to ImageNet-normalised floats."""
        if frames.dtype == torch.uint8:
            frames = frames.float() / 255.0
        return (frames - self.pixel_mean) / self.pixel_std

    def init_state(
        self, batch_size: int, image_size: tuple[int, int], device: torch.device | str | None = None
    ) -> StreamState:
        """Empty state for ``batch_size`` streams of ``image_size = (H, W)`` pixels."""
        self.grid.check_image_size(image_size)
        device = self.pixel_mean.device if device is None else device
        state = self.init_model_state(batch_size, image_size, device)
        state[ACTION_HISTORY] = self.history.init(batch_size, device)
        return state

    def init_model_state(self, batch_size: int, image_size: tuple[int, int], device: torch.device | str) -> StreamState:
        raise NotImplementedError

    def forward(self, frames: Tensor, actions: Tensor | None, state: StreamState) -> StepOutput:
        """One step on full frames ``(B, 3, H, W)``: the model looks at window ``actions`` of each.

        ``actions=None`` is a full-frame pass (a keyframe): the whole frame is processed
        and every memory rewritten, at single-frame cost; the action history is kept.
        In eval mode the output carries the decoded ``predictions``.
        """
        out = self.forward_raw(frames, actions, state)
        if not self.training:
            out.predictions = self.predict(out)
        return out

    def forward_raw(self, frames: Tensor, actions: Tensor | None, state: StreamState) -> StepOutput:
        """:meth:`forward` without decoding predictions (wrappers decode once, from combined outputs)."""
        if actions is not None:
            actions = actions.to(device=frames.device, dtype=torch.long)
        return self.finish_step(self.step(self.normalize(frames), actions, state), actions)

    def finish_step(self, out: StepOutput, actions: Tensor | None) -> StepOutput:
        """After :meth:`step`: the action history (Eq. 1) and the Q-values for the next action."""
        if actions is not None:
            out.state[ACTION_HISTORY] = self.history.update(out.state[ACTION_HISTORY], actions)
        if self.attention is not None and self.grid.num_windows > 1:
            out.q_values = self.attention(self.attention_input(out), out.state[ACTION_HISTORY])
        return out

    def step(self, frames: Tensor, actions: Tensor | None, state: StreamState) -> StepOutput:
        """Model-specific step on normalised frames (``actions=None``: full frame); returns ``raw`` and the new state."""
        return run_stages(self.step_stages(frames, actions, state))

    def step_stages(self, frames: Tensor, actions: Tensor | None, state: StreamState) -> Stages[StepOutput]:
        """:meth:`step` as a generator that yields between layers (at least between backbone blocks)."""
        raise NotImplementedError

    def attention_input(self, out: StepOutput) -> Tensor:
        """The restored full-frame map the attention network reads (Fig. 3)."""
        raise NotImplementedError

    def predict(self, out: StepOutput) -> list[dict[str, Tensor]]:
        """Full-frame predictions per stream from a step's ``raw`` outputs."""
        raise NotImplementedError

    def reward_predictions(self, out: StepOutput) -> list[dict[str, Tensor]]:
        """The predictions the reward (Eq. 2) is computed from; a model may decode fewer than :meth:`predict`."""
        return self.predict(out)

    def loss(self, out: StepOutput, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Task losses of a step against per-stream full-frame targets."""
        raise NotImplementedError

    def mirror_raw(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Map ``raw`` outputs computed on horizontally mirrored frames back to the original
        frames, so that the ``flip`` baseline can average them with the unmirrored ones."""
        raise NotImplementedError

    def empty_prediction(self, image_size: tuple[int, int], device: torch.device | str) -> dict[str, Tensor]:
        """What a stream predicts before it has any output (e.g. while a delayed keyframe runs)."""
        raise NotImplementedError
