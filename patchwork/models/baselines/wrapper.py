"""What the baseline wrappers share: the wrapper base class and per-stream held outputs.

Every wrapper keeps its own bookkeeping in the :class:`~patchwork.nn.StreamState` under a
key prefix (``"keyframe."``, ``"delay."``, ``"mirrored."``), batch-first like the model's
own entries, so ``reset``/``select``/``detach`` and checkpoints treat it like any state.
A stream reset (``state.reset(streams)``) zeroes the frame counter, so the stream's next
frame is a keyframe, and forgets its held outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from patchwork.models.streaming import Description, Prediction, StepOutput, StreamingModel
from patchwork.nn import StreamState


class StreamingWrapper(StreamingModel):
    """A baseline around a streaming model that is itself a streaming model.

    The task, the action space, the policy network, the image-size check and the empty
    prediction are the wrapped model's. Subclasses implement :meth:`init_state`,
    :meth:`forward_raw` and :meth:`predict`, and say what they add to the label in
    :meth:`describe`.

    Args:
        model: the wrapped streaming model (a model or another wrapper).
    """

    def __init__(self, model: StreamingModel) -> None:
        super().__init__()
        if not isinstance(model, StreamingModel):
            raise TypeError(f"expected a StreamingModel, got {type(model).__name__}")
        self.model = model

    @property
    def task(self) -> str:  # type: ignore[override]
        return self.model.task

    @property
    def num_classes(self) -> int | None:
        """The wrapped detector's number of classes (``None`` for a segmenter): detection metrics need it."""
        return getattr(self.model, "num_classes", None)

    @property
    def action_space(self):  # type: ignore[override]
        return self.model.action_space

    @property
    def policy_network(self) -> nn.Module | None:
        return self.model.policy_network

    def policy_input(self, observation: dict[str, Tensor], frames: Tensor) -> dict[str, Tensor]:
        return self.model.policy_input(observation, frames)

    def check_image_size(self, image_size: tuple[int, int]) -> None:
        self.model.check_image_size(image_size)

    def empty_prediction(self, image_size: tuple[int, int], device: torch.device | str) -> Prediction:
        """The wrapped model's prediction of nothing."""
        return self.model.empty_prediction(image_size, device)

    def describe(self) -> Description:
        return self.model.describe()

    def action_overlay(self, actions: Tensor, image_size: tuple[int, int],
                       state: StreamState | None = None) -> dict[str, Any]:
        return self.model.action_overlay(actions, image_size, state)

    def action_statistics(self, actions: Tensor) -> dict[str, float]:
        return self.model.action_statistics(actions)

    def memory_image(self, state: StreamState) -> tuple[str, Tensor] | None:
        return self.model.memory_image(state)


def split_state(state: StreamState, prefix: str) -> tuple[StreamState, StreamState]:
    """``(entries without prefix, entries with prefix, prefix removed)``."""
    inner = StreamState({k: v for k, v in state.items() if not k.startswith(prefix)})
    own = StreamState({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    return inner, own


def check_free_prefix(state: StreamState, prefix: str, wrapper: str) -> None:
    clashes = [k for k in state if k.startswith(prefix)]
    if clashes:
        raise ValueError(f"{wrapper} keeps its state under {prefix!r} but the wrapped model already uses {clashes}")


def state_device(state: StreamState, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return next(iter(state.values())).device if state else torch.device("cpu")


def write_streams(old: Tensor | None, streams: Tensor | None, new: Tensor, batch_size: int) -> Tensor:
    """``old`` with rows ``streams`` replaced by ``new`` (all rows when ``streams`` is None); no in-place write."""
    if streams is None:
        return new
    if old is None:
        old = new.new_zeros((batch_size, *new.shape[1:]))
    return old.index_copy(0, streams, new.to(old.dtype))


class HeldOutputs:
    """Predictions and the policy observation of the last finished keyframe, held in the state.

    Predictions are lists of per-stream dicts of tensors with varying first dimension
    (``N`` boxes) or fixed shape (an ``(H, W)`` mask); each key is stored padded along its
    first dimension, ``(B, L, ...)``, with the true lengths ``(B,)``, so the held copies are
    batch-first tensors that ``select``/``reset`` handle and that are returned without
    decoding anything.
    """

    # Bool tensors are held as uint8 under their own key: StreamState.reset's
    # ``torch.where(reset, 0, value)`` would promote a bool tensor to int64.
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.ready = f"{prefix}ready"
        self.observation = f"{prefix}obs."

    def _key(self, key: str, dtype: torch.dtype) -> str:
        return f"{self.prefix}{'bool' if dtype == torch.bool else 'pred'}.{key}"

    def init(self, state: StreamState, batch_size: int, device: torch.device) -> None:
        state[self.ready] = torch.zeros(batch_size, dtype=torch.uint8, device=device)

    def write(
        self,
        state: StreamState,
        streams: Tensor | None,
        predictions: list[Prediction] | None,
        observation: dict[str, Tensor] | None,
    ) -> None:
        """Hold the predictions and policy observation of ``streams`` (LongTensor ``(n,)``, or None for
        all), in place in the dict."""
        batch = state[self.ready].shape[0]
        count = batch if streams is None else streams.shape[0]
        done = torch.ones(count, dtype=torch.uint8, device=state[self.ready].device)
        state[self.ready] = write_streams(state[self.ready], streams, done, batch)
        for key, value in (observation or {}).items():
            name = self.observation + key
            state[name] = write_streams(state.get(name), streams, value.detach().clone(), batch)
        if predictions is None:
            return
        for key in predictions[0] if predictions else ():
            values = [p[key] for p in predictions]
            if any(v.dim() == 0 for v in values):
                raise ValueError(f"prediction {key!r} is a scalar; held predictions need at least one dimension")
            lengths = torch.tensor([v.shape[0] for v in values], device=values[0].device)
            name = self._key(key, values[0].dtype)
            padded = pad_sequence(values, batch_first=True)
            padded = padded.to(torch.uint8) if padded.dtype == torch.bool else padded
            old = state.get(name)
            if streams is not None and old is not None and old.shape[1] != padded.shape[1]:
                width = max(old.shape[1], padded.shape[1])
                old, padded = pad_dim1(old, width), pad_dim1(padded, width)
            state[name] = write_streams(old, streams, padded, batch)
            state[f"{self.prefix}len.{key}"] = write_streams(
                state.get(f"{self.prefix}len.{key}"), streams, lengths, batch
            )

    def read(self, state: StreamState, empty: Callable[[], Prediction]) -> list[Prediction]:
        """The held predictions per stream; ``empty()`` for streams with none yet."""
        held = {}  # key -> (B, L, ...) values as predicted
        for name, value in state.items():
            if name.startswith(self.observation):
                continue
            for kind, dtype in (("pred.", None), ("bool.", torch.bool)):
                if name.startswith(self.prefix + kind):
                    held[name[len(self.prefix + kind) :]] = value if dtype is None else value.to(dtype)
        lengths = {key: state[f"{self.prefix}len.{key}"].tolist() for key in held}
        ready = state[self.ready].tolist()
        return [
            {key: values[b, : lengths[key][b]] for key, values in held.items()} if ready[b] else empty()
            for b in range(len(ready))
        ]

    def held_observation(self, state: StreamState) -> dict[str, Tensor] | None:
        """The policy observation of each stream's last finished keyframe (``None`` before any)."""
        held = {k[len(self.observation):]: v for k, v in state.items() if k.startswith(self.observation)}
        return held or None


def pad_dim1(padded: Tensor, width: int) -> Tensor:
    if padded.shape[1] == width:
        return padded
    extra = padded.new_zeros((padded.shape[0], width - padded.shape[1], *padded.shape[2:]))
    return torch.cat((padded, extra), dim=1)


class KeyframeWrapper(StreamingWrapper):
    """What the keyframe baselines share: a per-stream frame counter (``COUNTER``) and the held
    outputs of the last finished keyframe, which every other frame predicts and observes."""

    COUNTER: str
    PREFIX: str

    def __init__(self, model: StreamingModel) -> None:
        super().__init__(model)
        self.held = HeldOutputs(self.PREFIX)

    def init_state(
        self, batch_size: int, image_size: tuple[int, int], device: torch.device | str | None = None
    ) -> StreamState:
        """The wrapped model's state plus the frame counter and the held outputs."""
        state = self.model.init_state(batch_size, image_size, device)
        check_free_prefix(state, self.PREFIX, type(self).__name__)
        device = state_device(state, device)
        state[self.COUNTER] = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.held.init(state, batch_size, device)
        return state

    def observe(self, out: StepOutput) -> dict[str, Tensor] | None:
        """The policy observation of each stream's last finished keyframe."""
        return self.held.held_observation(out.state)

    def predict(self, out: StepOutput, min_score: float | None = None) -> list[Prediction]:
        """The held predictions of each stream's last finished keyframe (copies, not recomputed)."""
        device = out.state[self.COUNTER].device
        return self.held.read(out.state, lambda: self.model.empty_prediction(out.raw["image_size"], device))

