"""What the Patchwork detector and segmenter share: the window grid as an action space, the
action history, the attention Q-network's observation, normalisation and naming (Chai 2019).

The Markov decision process of Sec. 3.3: after frame ``t`` the attention network reads
``S_t`` = (the restored full-frame memory, the action history ``F_t`` of Eq. 1) and its
Q-values choose ``A_{t+1}``, the window of frame ``t + 1``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from patchwork.models.streaming import (
    Description,
    Stages,
    StepOutput,
    StreamingModel,
)
from patchwork.models.stateful_mobilenet import OUTPUT_MEMORY, StatefulMobileNetV2
from patchwork.nn import ActionHistory, StreamState, WindowGrid
from patchwork.nn.spaces import Discrete

ACTION_HISTORY = "action_history"


class PatchworkModel(StreamingModel):
    """Base class of the Patchwork task models: one window of the grid per frame.

    Subclasses implement :meth:`init_model_state` and :meth:`window_stages` (the step on
    normalised frames) plus the task parts (predict, loss, mirror_raw, empty_prediction).

    Args:
        backbone: the stateful MobileNetV2; its grid is the model's.
        attention: the attention Q-network on the restored memory, or ``None``.
        history_alpha: the action history's decay ``alpha`` (Eq. 1).
        width_mult: the backbone's width multiplier (the tables' ``depth``), for labels.
    """

    def __init__(
        self,
        backbone: StatefulMobileNetV2,
        attention: nn.Module | None = None,
        history_alpha: float = 0.5,
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        self.grid: WindowGrid = backbone.grid
        self.attention = attention
        self.width_mult = float(width_mult)
        self.history = ActionHistory(self.grid.num_windows, history_alpha)
        per_axis = self.grid.positions_per_axis
        self.action_space = None if self.grid.is_full_frame else Discrete(
            self.grid.num_windows, first="random", layout=(per_axis, per_axis)
        )
        self.register_imagenet_normalization()


    def check_image_size(self, image_size: tuple[int, int]) -> None:
        """Sides must be divisible by ``M * 32`` (every window aligned to the stride-32 grid)."""
        self.grid.check_image_size(image_size)

    def init_state(
        self, batch_size: int, image_size: tuple[int, int], device: torch.device | str | None = None
    ) -> StreamState:
        """Empty memories and action history for ``batch_size`` streams."""
        self.grid.check_image_size(image_size)
        device = self.pixel_mean.device if device is None else device
        state = self.init_model_state(batch_size, image_size, device)
        state[ACTION_HISTORY] = self.history.init(batch_size, device)
        return state

    def init_model_state(self, batch_size: int, image_size: tuple[int, int], device: torch.device | str) -> StreamState:
        raise NotImplementedError

    def step_stages(self, frames: Tensor, actions: Tensor | None, state: StreamState) -> Stages[StepOutput]:
        """One step on frames in ``[0, 1]``: the window ``actions`` (``None``: the full frame, a keyframe),
        then the action history (Eq. 1; a full-frame pass keeps it)."""
        if actions is not None:
            actions = actions.to(device=frames.device, dtype=torch.long)
        normalized = self.normalize(frames)
        out = yield from self.window_stages(normalized, actions, state)
        if actions is not None:
            out.state[ACTION_HISTORY] = self.history.update(out.state[ACTION_HISTORY], actions)
        return out

    def window_stages(self, frames: Tensor, actions: Tensor | None, state: StreamState) -> Stages[StepOutput]:
        """Model-specific step on normalised frames; yields between layers."""
        raise NotImplementedError

    def observe(self, out: StepOutput) -> dict[str, Tensor] | None:
        """``S_t`` (Sec. 3.3): ``{"memory": restored full-frame map, "history": F_t (B, A)}``."""
        if self.attention is None:
            return None
        return {"memory": self.backbone.memory(out.state, OUTPUT_MEMORY), "history": out.state[ACTION_HISTORY]}

    @property
    def policy_network(self) -> nn.Module | None:
        """The attention Q-network (Fig. 3): observation -> Q-values ``(B, A)``."""
        return self.attention

    def memory_image(self, state: StreamState) -> tuple[str, Tensor] | None:
        """The first cell's memory: the patchwork of remembered windows (Fig. 2)."""
        names = [name for name, _ in self.backbone.named_memories()]
        return names[0], self.backbone.memory(state, names[0])

    def mirror_actions(self, actions: Tensor) -> Tensor:
        """The horizontally mirrored window of each window (the ``flip`` baseline)."""
        return self.grid.mirror(actions)

    def describe(self) -> Description:
        """``"SF depth=0.5"`` or ``"Patchwork M=4, N=2, depth=0.5"`` (and ``cells=none`` for Tab. 2)."""
        depth = () if self.width_mult == 1.0 else (f"depth={self.width_mult:g}",)
        cells = self.backbone.cells
        fields = {"M": self.grid.slices, "N": self.grid.span, "cells": cells, "depth": self.width_mult}
        if self.grid.is_full_frame:
            return Description("SF", depth, {**fields, "cells": "none"})
        extra = () if cells == "all" else (f"cells={cells}",)
        grid = f"M={self.grid.slices}, N={self.grid.span}"
        return Description("Patchwork", (grid, *depth, *extra), {**fields, "grid": grid})

    def action_overlay(self, actions: Tensor, image_size: tuple[int, int],
                       state: StreamState | None = None) -> dict[str, object]:
        """The attention window as ``{"box": (x1, y1, x2, y2)}`` in pixels (x2, y2 exclusive)."""
        box = self.grid.boxes(image_size)[int(actions)]
        return {"box": tuple(float(v) for v in box)}
