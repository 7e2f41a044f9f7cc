"""``flip``: the mirrored frame too, raw outputs averaged (Chai 2019, Sec. 4, Tab. 4 "flip")."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from patchwork.models.baselines.wrapper import StreamingWrapper, check_free_prefix, split_state
from patchwork.models.streaming import Description, Prediction, StepOutput, StreamingModel
from patchwork.nn import StreamState
from patchwork.nn.spaces import Discrete


class MirrorAveragedScores(nn.Module):
    """Scores of a flipped method: the mean of the policy network's scores on the stream and on
    its mirror, the mirror's mapped back (its value of action ``m(a)`` is its estimate for ``a``).

    Args:
        network: the model's policy network.
        mirror_index: LongTensor ``(A,)``, ``m(a)`` for every action ``a``.
        prefix: the key prefix of the mirrored stream's observation entries.
    """

    def __init__(self, network: nn.Module, mirror_index: Tensor, prefix: str) -> None:
        super().__init__()
        self.network = network
        self.mirror_index = mirror_index
        self.prefix = prefix

    def forward(self, observation: dict[str, Tensor]) -> Tensor:
        """``(B, A)`` averaged scores."""
        own = {k: v for k, v in observation.items() if not k.startswith(self.prefix)}
        mirrored = {k[len(self.prefix):]: v for k, v in observation.items() if k.startswith(self.prefix)}
        index = self.mirror_index.to(next(iter(own.values())).device)
        return (self.network(own) + self.network(mirrored)[:, index]) / 2


def average_raw(raw: Any, mirrored: Any) -> Any:
    """Average two raw outputs of the same structure (the second mapped back from mirrored frames).

    Floating-point (and complex) tensors are averaged ``(a + b) / 2``; dicts, lists and
    tuples are averaged entry by entry (keys of the first); anything else (integer or bool
    tensors such as indices, non-tensor values, entries only the first has) is taken from
    the first, the unmirrored pass.
    """
    if isinstance(raw, Tensor) and isinstance(mirrored, Tensor) and (raw.is_floating_point() or raw.is_complex()):
        if raw.shape != mirrored.shape:
            raise ValueError(f"cannot average raw outputs of shapes {tuple(raw.shape)} and {tuple(mirrored.shape)}")
        return (raw + mirrored) / 2
    if isinstance(raw, dict) and isinstance(mirrored, dict):
        return {k: average_raw(v, mirrored[k]) if k in mirrored else v for k, v in raw.items()}
    if isinstance(raw, (list, tuple)) and isinstance(mirrored, (list, tuple)) and len(raw) == len(mirrored):
        return type(raw)(average_raw(a, b) for a, b in zip(raw, mirrored))
    return raw


class Flip(StreamingWrapper):
    """``flip``: also run the horizontally mirrored frame and average the raw outputs (Sec. 4).

    The mirrored stream is a second run of the same model with its own state, stored in
    the same :class:`StreamState` under ``"mirrored."``; it looks at the mirrored window
    (``model.mirror_actions``), its raw outputs are mapped back with ``model.mirror_raw``
    and averaged with the original's (:func:`average_raw`), and its policy scores, indexed
    by mirrored actions, are mapped back and averaged (:class:`MirrorAveragedScores`).
    Twice the model's cost.

    Predictions are decoded once, from the averaged raw outputs (``model.predict`` sees the
    unmirrored stream's state). A model whose ``predict`` reads its state rather than
    ``raw`` (e.g. a memory of earlier masks) gets no averaging of that part.

    Args:
        model: the streaming model (with ``mirror_raw``, and ``mirror_actions`` when it has a
            ``Discrete`` action space).
    """

    PREFIX = "mirrored."

    def __init__(self, model: StreamingModel) -> None:
        super().__init__(model)
        if not hasattr(model, "mirror_raw"):
            raise TypeError(f"Flip needs a model whose outputs can be mirrored (mirror_raw); {type(model).__name__} has none")
        space = model.action_space
        if space is not None and not isinstance(space, Discrete):
            raise TypeError(f"Flip mirrors discrete actions only, got {space}")
        index = torch.zeros(0, dtype=torch.long) if space is None else model.mirror_actions(torch.arange(space.n))
        self.register_buffer("mirror_index", index, persistent=False)

    def init_state(
        self, batch_size: int, image_size: tuple[int, int], device: torch.device | str | None = None
    ) -> StreamState:
        state = self.model.init_state(batch_size, image_size, device)
        check_free_prefix(state, self.PREFIX, type(self).__name__)
        mirrored = self.model.init_state(batch_size, image_size, device)
        state.update({self.PREFIX + k: v for k, v in mirrored.items()})
        return state

    def forward_raw(self, frames: Tensor, actions: Tensor | None, state: StreamState) -> StepOutput:
        own, mirrored_state = split_state(state, self.PREFIX)
        mirrored_actions = actions  # no action space: nothing to mirror
        if actions is not None and self.model.action_space is not None:
            actions = actions.to(device=frames.device, dtype=torch.long)
            mirrored_actions = self.mirror_index.to(frames.device)[actions]
        out = self.model.forward_raw(frames, actions, own)
        mirrored = self.model.forward_raw(frames.flip(-1), mirrored_actions, mirrored_state)
        raw = average_raw(out.raw, self.model.mirror_raw(mirrored.raw))
        new_state = StreamState(out.state)
        new_state.update({self.PREFIX + k: v for k, v in mirrored.state.items()})
        return StepOutput(raw, new_state)

    def _unmirrored(self, out: StepOutput) -> StepOutput:
        own, _ = split_state(out.state, self.PREFIX)
        return StepOutput(out.raw, own)

    def _mirrored(self, out: StepOutput) -> StepOutput:
        _, mirrored = split_state(out.state, self.PREFIX)
        return StepOutput(out.raw, mirrored)

    def observe(self, out: StepOutput) -> dict[str, Tensor] | None:
        """Both streams' observations, the mirrored one's keys prefixed with ``"mirrored."``."""
        own = self.model.observe(self._unmirrored(out))
        if own is None:
            return None
        mirrored = self.model.observe(self._mirrored(out)) or {}
        return {**own, **{self.PREFIX + k: v for k, v in mirrored.items()}}

    @property
    def policy_network(self) -> nn.Module | None:
        network = self.model.policy_network
        return None if network is None else MirrorAveragedScores(network, self.mirror_index, self.PREFIX)

    def predict(self, out: StepOutput, min_score: float | None = None) -> list[Prediction]:
        """The model's predictions decoded from the averaged raw outputs."""
        return self.model.predict(self._unmirrored(out), min_score)

    def loss(self, out: StepOutput, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """The model's loss on the averaged raw outputs."""
        return self.model.loss(self._unmirrored(out), targets)

    def mirror_raw(self, raw: dict[str, Any]) -> dict[str, Any]:
        return self.model.mirror_raw(raw)

    def describe(self) -> Description:
        return self.model.describe().with_options(after=("flip",), flip=True)
