"""The baseline variants of Tables 4 and 5 as streaming-model wrappers (Sec. 4 "Model variants").

Each wrapper takes a streaming model (usually the single-frame model, ``WindowGrid(1, 1)``)
and is itself a streaming model with the same contract (``init_state``, ``forward``,
``predict``, ``loss``, ``num_actions``, ``grid``), so policies, the engine and the cost
table run any row of the tables alike::

    KeyframeInterval(model, interval=4)            # "SF interval=4"
    KeyframeDelay(model, interval=4, delay=3)      # "SF interval=4, delay=3"
    Flip(model)                                    # "... flip"
    Resolution(model, area=0.25)                   # "SF resolution=0.25"

``depth`` (the width multiplier) is a builder parameter of the model itself, not a wrapper.

Every wrapper keeps its own bookkeeping in the :class:`~patchwork.nn.StreamState` under a
key prefix (``"keyframe."``, ``"delay."``, ``"mirrored."``), batch-first like the model's
own entries, so ``reset``/``select``/``detach`` and checkpoints treat it like any state.
A stream reset (``state.reset(streams)``) zeroes the frame counter, so the stream's next
frame is a keyframe, and forgets its held predictions.

Cost (``patchwork.evaluation.cost.stream_cost``) is measured as the wrappers run: with a
keyframe FLOPs count ``F``, ``interval=K`` costs ``F`` on keyframes and 0 in between
(max ``F``, avg ``F / K``); ``interval=K, delay=D`` costs about ``F / (D + 1)`` on the
``D + 1`` frames after each keyframe and 0 on the others (max ``~F / (D + 1)``, avg
``F / K``: the delay moves work, it does not remove it, as Sec. 4 says: "the delay has no
impact on the average latency"). The paper's avg column for the delay rows (e.g. 512/128
for ``interval=4, delay=3`` with ``F = 2047``) is max / K, i.e. divides by K twice; we
report what the computation really costs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from patchwork.evaluation.cost import count_flops
from patchwork.models.inference import evaluation_mode
from patchwork.models.streaming import Stages, StepOutput, StreamingModel
from patchwork.nn import StreamState, WindowGrid

Prediction = dict[str, Tensor]


# --------------------------------------------------------------------------- common parts
class StreamingWrapper(nn.Module):
    """A baseline around a streaming model that is itself a streaming model.

    Subclasses implement :meth:`init_state`, :meth:`forward_raw` (one step without
    decoding predictions) and :meth:`predict`; :meth:`forward` adds the predictions in
    eval mode, like :meth:`StreamingModel.forward`.

    Args:
        model: the wrapped streaming model (a :class:`StreamingModel` or another wrapper).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def grid(self) -> WindowGrid:
        """The wrapped model's window grid (windows are relative to the frame)."""
        return self.model.grid

    @property
    def num_actions(self) -> int:
        """Size of the action space, the wrapped model's."""
        return self.model.num_actions

    def init_state(
        self, batch_size: int, image_size: tuple[int, int], device: torch.device | str | None = None
    ) -> StreamState:
        """Empty state for ``batch_size`` streams of ``image_size = (H, W)`` pixels."""
        raise NotImplementedError

    def forward(self, frames: Tensor, actions: Tensor, state: StreamState) -> StepOutput:
        """One step on frames ``(B, 3, H, W)`` in ``[0, 1]`` with windows ``actions`` ``(B,)``."""
        out = self.forward_raw(frames, actions, state)
        if not self.training:
            out.predictions = self.predict(out)
        return out

    def forward_raw(self, frames: Tensor, actions: Tensor, state: StreamState) -> StepOutput:
        """:meth:`forward` without decoding predictions (what an enclosing wrapper calls)."""
        raise NotImplementedError

    def predict(self, out: StepOutput) -> list[Prediction]:
        """Full-frame predictions per stream of a step of this wrapper."""
        raise NotImplementedError

    def loss(self, out: StepOutput, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Task losses of a step against per-stream full-frame targets."""
        raise NotImplementedError(f"{type(self).__name__} has no training loss; train the wrapped model")

    def mirror_raw(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Map ``raw`` outputs of mirrored frames back to the original frames (for :class:`Flip`)."""
        raise NotImplementedError(f"{type(self).__name__} outputs cannot be mirrored")

    def empty_prediction(self, image_size: tuple[int, int], device: torch.device | str) -> Prediction:
        """The wrapped model's prediction of nothing."""
        return self.model.empty_prediction(image_size, device)


def step_without_predictions(model: nn.Module, frames: Tensor, actions: Tensor, state: StreamState) -> StepOutput:
    """One step of ``model`` with ``raw``, ``state`` and ``q_values`` but no decoded predictions.

    :class:`Flip` and :class:`Resolution` decode once, from the combined raw outputs.
    """
    if not isinstance(model, (StreamingWrapper, StreamingModel)):
        raise TypeError(f"expected a StreamingModel or a baseline wrapper, got {type(model).__name__}")
    return model.forward_raw(frames, actions, state)


def _split_state(state: StreamState, prefix: str) -> tuple[StreamState, StreamState]:
    """``(entries without prefix, entries with prefix, prefix removed)``."""
    inner = StreamState({k: v for k, v in state.items() if not k.startswith(prefix)})
    own = StreamState({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    return inner, own


def _check_free_prefix(state: StreamState, prefix: str, wrapper: str) -> None:
    clashes = [k for k in state if k.startswith(prefix)]
    if clashes:
        raise ValueError(f"{wrapper} keeps its state under {prefix!r} but the wrapped model already uses {clashes}")


def _state_device(state: StreamState, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return next(iter(state.values())).device if state else torch.device("cpu")


def _write_streams(old: Tensor | None, streams: Tensor | None, new: Tensor, batch_size: int) -> Tensor:
    """``old`` with rows ``streams`` replaced by ``new`` (all rows when ``streams`` is None); no in-place write."""
    if streams is None:
        return new
    if old is None:
        old = new.new_zeros((batch_size, *new.shape[1:]))
    return old.index_copy(0, streams, new.to(old.dtype))


class _HeldOutputs:
    """Predictions and Q-values of the last finished keyframe, held in the state.

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
        self.q_values = f"{prefix}q_values"

    def _key(self, key: str, dtype: torch.dtype) -> str:
        return f"{self.prefix}{'bool' if dtype == torch.bool else 'pred'}.{key}"

    def init(self, state: StreamState, batch_size: int, device: torch.device) -> None:
        state[self.ready] = torch.zeros(batch_size, dtype=torch.uint8, device=device)

    def write(
        self,
        state: StreamState,
        streams: Tensor | None,
        predictions: list[Prediction] | None,
        q_values: Tensor | None,
    ) -> None:
        """Hold the outputs of ``streams`` (LongTensor ``(n,)``, or None for all), in place in the dict."""
        batch = state[self.ready].shape[0]
        count = batch if streams is None else streams.shape[0]
        done = torch.ones(count, dtype=torch.uint8, device=state[self.ready].device)
        state[self.ready] = _write_streams(state[self.ready], streams, done, batch)
        if q_values is not None:
            state[self.q_values] = _write_streams(state.get(self.q_values), streams, q_values, batch)
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
                old, padded = _pad_dim1(old, width), _pad_dim1(padded, width)
            state[name] = _write_streams(old, streams, padded, batch)
            state[f"{self.prefix}len.{key}"] = _write_streams(
                state.get(f"{self.prefix}len.{key}"), streams, lengths, batch
            )

    def read(self, state: StreamState, empty: Callable[[], Prediction]) -> list[Prediction]:
        """The held predictions per stream; ``empty()`` for streams with none yet."""
        held = {}  # key -> (B, L, ...) values as predicted
        for name, value in state.items():
            for kind, dtype in (("pred.", None), ("bool.", torch.bool)):
                if name.startswith(self.prefix + kind):
                    held[name[len(self.prefix + kind) :]] = value if dtype is None else value.to(dtype)
        lengths = {key: state[f"{self.prefix}len.{key}"].tolist() for key in held}
        ready = state[self.ready].tolist()
        return [
            {key: values[b, : lengths[key][b]] for key, values in held.items()} if ready[b] else empty()
            for b in range(len(ready))
        ]

    def held_q_values(self, state: StreamState) -> Tensor | None:
        return state.get(self.q_values)


def _pad_dim1(padded: Tensor, width: int) -> Tensor:
    if padded.shape[1] == width:
        return padded
    extra = padded.new_zeros((padded.shape[0], width - padded.shape[1], *padded.shape[2:]))
    return torch.cat((padded, extra), dim=1)


def _keyframe_state(
    wrapper: "KeyframeInterval | KeyframeDelay", batch_size: int, image_size: tuple[int, int],
    device: torch.device | str | None,
) -> StreamState:
    """The wrapped model's state plus a per-stream frame counter and the held outputs."""
    state = wrapper.model.init_state(batch_size, image_size, device)
    _check_free_prefix(state, wrapper.PREFIX, type(wrapper).__name__)
    device = _state_device(state, device)
    state[wrapper.COUNTER] = torch.zeros(batch_size, dtype=torch.long, device=device)
    wrapper.held.init(state, batch_size, device)
    return state


# --------------------------------------------------------------------------- interval
class KeyframeInterval(StreamingWrapper):
    """``interval=K``: run the model on every ``K``-th frame of each stream, copy its predictions in between.

    Each stream has its own frame counter ``t`` (state ``"keyframe.counter"``, ``(B,)``);
    frame ``t`` is a keyframe when ``t % K == 0``. Only the streams due for a keyframe are
    computed, as one sub-batch (streams started at different times are at different
    counters); the others are not touched: no model call, no decoding. Their predictions
    (and Q-values, for a model with attention) are the held copies of their last keyframe.

    Cost: max = the keyframe's FLOPs, avg = keyframe / ``K`` (Tab. 4/5 rows "SF interval=K").

    Args:
        model: the streaming model run on keyframes.
        interval: ``K >= 1`` (``K = 1`` is the model itself).

    ``raw`` of a step: ``{"keyframe_streams": LongTensor (n,), "keyframe": StepOutput of the
    model on those streams or None, "image_size": (H, W)}``.
    """

    COUNTER = "keyframe.counter"
    PREFIX = "keyframe."

    def __init__(self, model: nn.Module, interval: int) -> None:
        super().__init__(model)
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        self.interval = int(interval)
        self.held = _HeldOutputs(self.PREFIX)

    def init_state(
        self, batch_size: int, image_size: tuple[int, int], device: torch.device | str | None = None
    ) -> StreamState:
        return _keyframe_state(self, batch_size, image_size, device)

    def forward_raw(self, frames: Tensor, actions: Tensor, state: StreamState) -> StepOutput:
        counter = state[self.COUNTER]
        batch = counter.shape[0]
        due = counter % self.interval == 0
        streams = due.nonzero().squeeze(1)
        inner, _ = _split_state(state, self.PREFIX)
        new_state = StreamState(state)
        keyframe = None
        if streams.numel():
            # All streams due (the usual case: one video per stream, started together):
            # no sub-batch copies.
            subset = None if streams.numel() == batch else streams
            if subset is None:
                keyframe = self.model(frames, actions, inner)
            else:
                keyframe = self.model(frames[subset], actions.to(frames.device)[subset], inner.select(subset))
            for key, value in keyframe.state.items():
                new_state[key] = _write_streams(new_state.get(key), subset, value, batch)
            self.held.write(new_state, subset, keyframe.predictions, keyframe.q_values)
        new_state[self.COUNTER] = counter + 1
        raw = {"keyframe_streams": streams, "keyframe": keyframe, "image_size": tuple(frames.shape[-2:])}
        return StepOutput(raw, new_state, self.held.held_q_values(new_state))

    def predict(self, out: StepOutput) -> list[Prediction]:
        """The held predictions of each stream's last keyframe (copies made at the keyframe, not recomputed)."""
        device = out.state[self.COUNTER].device
        return self.held.read(out.state, lambda: self.model.empty_prediction(out.raw["image_size"], device))

    def loss(self, out: StepOutput, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """The model's loss on this step's keyframe streams; ``{}`` when no stream had a keyframe."""
        if out.raw["keyframe"] is None:
            return {}
        return self.model.loss(out.raw["keyframe"], [targets[b] for b in out.raw["keyframe_streams"].tolist()])


# --------------------------------------------------------------------------- delay
def balanced_partition(costs: Sequence[int], parts: int) -> list[range]:
    """Split a sequence of stage costs into ``parts`` contiguous groups of about equal cost.

    First the largest group is made as small as possible; among the splits that achieve
    it, the one with the smallest sum of squared group costs is taken, so the other groups
    are balanced too rather than left empty. Groups are empty only when there are fewer
    stages than parts, and never the last, which holds the final stage (the one that
    returns the result), so the result is ready exactly at the last part.

    Args:
        costs: FLOPs of each stage, in execution order.
        parts: number of groups, ``>= 1``.
    Returns:
        ``parts`` ranges of stage indices, covering ``range(len(costs))`` in order.
    """
    count = len(costs)
    if parts < 1 or count < 1:
        raise ValueError(f"need at least one stage and one part, got {count} stages, {parts} parts")
    prefix = list(itertools.accumulate(costs, initial=0))

    def split(score: Callable[[float, float], float], limit: float) -> tuple[float, list[range]]:
        """Dynamic programme over (groups so far, stages covered) with an associative ``score``."""
        # best[p][i]: best score of the first i stages in p groups; cut[p][i]: where group p starts.
        best = [[math.inf] * (count + 1) for _ in range(parts + 1)]
        cut = [[0] * (count + 1) for _ in range(parts + 1)]
        best[0][0] = 0
        for p in range(1, parts + 1):
            last = p == parts
            for i in range(count + 1):
                for j in range(i if last else i + 1):  # the last group is non-empty (j < i)
                    load = prefix[i] - prefix[j]
                    if load <= limit:
                        value = score(best[p - 1][j], load)
                        if value < best[p][i]:
                            best[p][i], cut[p][i] = value, j
        groups, end = [], count
        for p in range(parts, 0, -1):
            groups.append(range(cut[p][end], end))
            end = cut[p][end]
        return best[parts][count], groups[::-1]

    largest, _ = split(lambda before, load: max(before, load), math.inf)
    return split(lambda before, load: before + load * load, largest)[1]


@dataclass
class _InFlight:
    """A keyframe computation that is spread over several frames."""

    ticket: int
    stages: Stages[StepOutput]
    actions: Tensor


class KeyframeDelay(StreamingWrapper):
    """``interval=K, delay=D``: a keyframe every ``K`` frames, its computation spread over ``D + 1`` frames.

    The keyframe's staged computation (:meth:`StreamingModel.step_stages`) is split into
    ``D + 1`` contiguous groups of stages of about equal FLOPs (:func:`balanced_partition`
    of each stage's FLOPs, measured once per image size on a batch of one); frame
    ``k + p`` of a keyframe ``k`` advances the computation through group ``p``, and at
    frame ``k + D`` its predictions appear. Between, each stream shows the predictions of
    the previous keyframe; before the first keyframe finishes it predicts nothing
    (``model.empty_prediction(image_size, device)``). Frames other than keyframes are not looked at.

    ``D + 1 <= K`` is required: keyframe ``k + K`` starts from the state that keyframe
    ``k`` returns (a stateful model's memories), so the computation must have finished;
    and two computations in flight at once would stack their per-frame cost, defeating
    the point of the delay (cutting the max latency).

    All streams of a batch must be in phase (equal counters, state ``"delay.counter"``):
    one suspended computation serves the whole batch. Start every stream's video together
    (reset all streams at once). The suspended computation is a Python generator, not a
    tensor, so it lives in this wrapper (one batch of streams per wrapper at a time) and
    the state carries a ticket that identifies it.

    Cost: max ~ keyframe / ``(D + 1)`` (limited by the largest stage), avg = keyframe / ``K``.

    Args:
        model: a :class:`StreamingModel` (it needs ``step_stages``).
        interval: ``K >= 1``.
        delay: ``D >= 0``, ``D + 1 <= K``.

    ``raw`` of a step: ``{"finished": the model's StepOutput when the keyframe computation
    finished at this frame else None, "image_size": (H, W)}``.
    """

    COUNTER = "delay.counter"
    TICKET = "delay.ticket"
    PREFIX = "delay."

    def __init__(self, model: StreamingModel, interval: int, delay: int) -> None:
        super().__init__(model)
        if not isinstance(model, StreamingModel):
            raise TypeError(f"KeyframeDelay needs a StreamingModel with step_stages, got {type(model).__name__}")
        if interval < 1 or delay < 0:
            raise ValueError(f"need interval >= 1 and delay >= 0, got interval={interval}, delay={delay}")
        if delay + 1 > interval:
            raise ValueError(
                f"delay + 1 = {delay + 1} exceeds interval = {interval}: the next keyframe needs the state "
                "the current one returns, so one keyframe's computation must finish within the interval"
            )
        self.interval = int(interval)
        self.delay = int(delay)
        self.held = _HeldOutputs(self.PREFIX)
        self._in_flight: _InFlight | None = None
        self._last_ticket = 0
        self._stage_flops: dict[tuple[int, int], list[int]] = {}

    def init_state(
        self, batch_size: int, image_size: tuple[int, int], device: torch.device | str | None = None
    ) -> StreamState:
        state = _keyframe_state(self, batch_size, image_size, device)
        state[self.TICKET] = torch.zeros_like(state[self.COUNTER])
        # Measured here, outside the frames whose cost is counted.
        self.stage_flops(image_size, state[self.COUNTER].device)
        return state

    def stage_flops(self, image_size: tuple[int, int], device: torch.device | str | None = None) -> list[int]:
        """FLOPs of each stage of one keyframe (batch of one), in order; cached per image size.

        The last stage includes what ends the step (action history, attention, decoding),
        as it runs in the frame the computation finishes.
        """
        key = (int(image_size[0]), int(image_size[1]))
        if key not in self._stage_flops:
            device = self.model.pixel_mean.device if device is None else device
            with evaluation_mode(self.model):
                state = self.model.init_state(1, key, device)
                actions = torch.zeros(1, dtype=torch.long, device=device)
                frames = torch.zeros(1, 3, *key, device=device)
                stages = self.model.step_stages(self.model.normalize(frames), actions, state)
                flops: list[int] = []
                finished = False

                def advance() -> None:
                    nonlocal finished
                    try:
                        next(stages)
                    except StopIteration as result:
                        finished = True
                        self.model.predict(self.model.finish_step(result.value, actions))

                while not finished:
                    flops.append(count_flops(advance))
            self._stage_flops[key] = flops
        return self._stage_flops[key]

    def stage_groups(self, image_size: tuple[int, int]) -> list[range]:
        """The ``D + 1`` groups of stage indices, group ``p`` run at frame ``k + p`` after keyframe ``k``."""
        return balanced_partition(self.stage_flops(image_size), self.delay + 1)

    def forward_raw(self, frames: Tensor, actions: Tensor, state: StreamState) -> StepOutput:
        counter = state[self.COUNTER]
        if counter.numel() > 1 and bool((counter != counter[0]).any()):
            raise ValueError(
                f"KeyframeDelay needs all streams in phase, got frame counters {counter.tolist()}: one "
                "keyframe computation serves the whole batch, so reset all streams together"
            )
        image_size = (int(frames.shape[-2]), int(frames.shape[-1]))
        phase = int(counter[0]) % self.interval
        new_state = StreamState(state)
        finished = None
        if phase == 0:
            inner, _ = _split_state(state, self.PREFIX)
            actions = actions.to(device=frames.device, dtype=torch.long)
            self._last_ticket += 1
            ticket = self._last_ticket
            stages = self.model.step_stages(self.model.normalize(frames), actions, inner)
            self._in_flight = _InFlight(ticket, stages, actions)
            new_state[self.TICKET] = torch.full_like(state[self.TICKET], ticket)
        if phase <= self.delay:
            finished = self._advance(new_state, len(self.stage_groups(image_size)[phase]), last=phase == self.delay)
        new_state[self.COUNTER] = counter + 1
        raw = {"finished": finished, "image_size": image_size}
        return StepOutput(raw, new_state, self.held.held_q_values(new_state))

    def _advance(self, state: StreamState, num_stages: int, last: bool) -> StepOutput | None:
        """Run ``num_stages`` stages of the computation in flight; at the last group, finish it."""
        job = self._in_flight
        if job is None or job.ticket != int(state[self.TICKET][0]):
            raise RuntimeError(
                "this state's keyframe computation is not in flight in this KeyframeDelay (one wrapper "
                "serves one batch of streams at a time, and every frame of a stream must be stepped)"
            )
        for index in range(num_stages):
            try:
                next(job.stages)
            except StopIteration as result:
                if not (last and index == num_stages - 1):
                    raise RuntimeError("the model's step_stages yielded fewer times than when it was measured")
                self._in_flight = None
                out = self.model.finish_step(result.value, job.actions)
                state.update(out.state)
                predictions = None if self.training else self.model.predict(out)
                self.held.write(state, None, predictions, out.q_values)
                return out
        if last:
            raise RuntimeError("the model's step_stages yielded more times than when it was measured")
        return None

    def predict(self, out: StepOutput) -> list[Prediction]:
        """The predictions of the last keyframe that finished ``D`` frames after it started."""
        device = out.state[self.COUNTER].device
        return self.held.read(out.state, lambda: self.model.empty_prediction(out.raw["image_size"], device))

    def loss(self, out: StepOutput, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        raise NotImplementedError(
            "KeyframeDelay outputs belong to a frame D steps back; train the wrapped model and wrap it afterwards"
        )


# --------------------------------------------------------------------------- flip
def mirror_windows(grid: WindowGrid, windows: Tensor) -> Tensor:
    """Index of the horizontally mirrored window: ``(i, j) -> (i, P - 1 - j)``, ``P`` positions per axis.

    A window spanning ``[j / M, (j + N) / M)`` mirrors to ``[(M - N - j) / M, ...)``, i.e.
    grid column ``M - N - j = P - 1 - j``: the mirror of a window is itself a window.

    Args:
        windows: LongTensor of window indices, any shape.
    Returns:
        LongTensor of the same shape.
    """
    rows, cols = grid.window_rows_cols(windows)
    per_axis = grid.positions_per_axis
    return rows * per_axis + (per_axis - 1 - cols)


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
    (:func:`mirror_windows`), its raw outputs are mapped back with ``model.mirror_raw``
    and averaged with the original's (:func:`average_raw`), and its Q-values, indexed by
    mirrored windows, are mapped back to the original window indices and averaged. Twice
    the model's cost.

    Predictions are decoded once, from the averaged raw outputs (``model.predict`` sees the
    unmirrored stream's state). A model whose ``predict`` reads its state rather than
    ``raw`` (e.g. a memory of earlier masks) gets no averaging of that part.

    Args:
        model: the streaming model (with ``mirror_raw``).
    """

    PREFIX = "mirrored."

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        mirrored = mirror_windows(model.grid, torch.arange(model.grid.num_windows))
        self.register_buffer("mirror_index", mirrored, persistent=False)

    def init_state(
        self, batch_size: int, image_size: tuple[int, int], device: torch.device | str | None = None
    ) -> StreamState:
        state = self.model.init_state(batch_size, image_size, device)
        _check_free_prefix(state, self.PREFIX, type(self).__name__)
        mirrored = self.model.init_state(batch_size, image_size, device)
        state.update({self.PREFIX + k: v for k, v in mirrored.items()})
        return state

    def forward_raw(self, frames: Tensor, actions: Tensor, state: StreamState) -> StepOutput:
        own, mirrored_state = _split_state(state, self.PREFIX)
        actions = actions.to(device=frames.device, dtype=torch.long)
        index = self.mirror_index.to(frames.device)
        out = step_without_predictions(self.model, frames, actions, own)
        mirrored = step_without_predictions(self.model, frames.flip(-1), index[actions], mirrored_state)
        raw = average_raw(out.raw, self.model.mirror_raw(mirrored.raw))
        q_values = out.q_values
        if out.q_values is not None and mirrored.q_values is not None:
            # The mirrored stream's value of window m(w) is its estimate for window w.
            q_values = (out.q_values + mirrored.q_values[:, index]) / 2
        new_state = StreamState(out.state)
        new_state.update({self.PREFIX + k: v for k, v in mirrored.state.items()})
        return StepOutput(raw, new_state, q_values)

    def _unmirrored(self, out: StepOutput) -> StepOutput:
        own, _ = _split_state(out.state, self.PREFIX)
        return StepOutput(out.raw, own, out.q_values)

    def predict(self, out: StepOutput) -> list[Prediction]:
        """The model's predictions decoded from the averaged raw outputs."""
        return self.model.predict(self._unmirrored(out))

    def loss(self, out: StepOutput, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """The model's loss on the averaged raw outputs."""
        return self.model.loss(self._unmirrored(out), targets)

    def mirror_raw(self, raw: dict[str, Any]) -> dict[str, Any]:
        return self.model.mirror_raw(raw)


# --------------------------------------------------------------------------- resolution
MASK_KEYS = ("mask", "scores")


class Resolution(StreamingWrapper):
    """``resolution=area``: run the model on frames downscaled to ``area`` times the image area.

    Each side is scaled by ``sqrt(area)`` (rounded to whole pixels; e.g. ``area=0.25`` halves
    each side) with bilinear antialiased resizing. Predictions are mapped back to the
    original frame: ``"boxes"`` ``(N, 4)`` ``(x1, y1, x2, y2)`` are scaled by the per-axis
    ratio of the sizes; ``"mask"`` and ``"scores"`` maps ``(h, w)`` are upsampled (bilinear
    for floating point scores, nearest for bool/integer masks); other keys (labels,
    per-box ``(N,)`` scores) are unchanged. The downscaled size must satisfy the model's
    grid alignment.

    Args:
        model: the streaming model.
        area: image-area factor, ``> 0``.

    ``raw`` of a step: ``{"scaled": the model's raw outputs at the low resolution,
    "image_size": (H, W)}``.
    """

    def __init__(self, model: nn.Module, area: float) -> None:
        super().__init__(model)
        if not area > 0:
            raise ValueError(f"area must be > 0, got {area}")
        self.area = float(area)
        self.scale = math.sqrt(self.area)

    def scaled_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """``(h, w)`` the model runs on; raises ``ValueError`` if the model's grid rejects it."""
        height, width = int(image_size[0]), int(image_size[1])
        size = (round(height * self.scale), round(width * self.scale))
        try:
            self.model.grid.check_image_size(size)
        except ValueError as error:
            raise ValueError(
                f"Resolution(area={self.area}) scales {height}x{width} frames to {size[0]}x{size[1]} "
                f"(side scale {self.scale:.4f}), which the model cannot run on: {error}"
            ) from error
        return size

    def init_state(
        self, batch_size: int, image_size: tuple[int, int], device: torch.device | str | None = None
    ) -> StreamState:
        return self.model.init_state(batch_size, self.scaled_size(image_size), device)

    def forward_raw(self, frames: Tensor, actions: Tensor, state: StreamState) -> StepOutput:
        image_size = (int(frames.shape[-2]), int(frames.shape[-1]))
        size = self.scaled_size(image_size)
        if frames.dtype == torch.uint8:
            frames = frames.float() / 255.0
        if size != image_size:
            frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=True)
        out = step_without_predictions(self.model, frames, actions, state)
        return StepOutput({"scaled": out.raw, "image_size": image_size}, out.state, out.q_values)

    def _scaled(self, out: StepOutput) -> StepOutput:
        return StepOutput(out.raw["scaled"], out.state, out.q_values)

    def predict(self, out: StepOutput) -> list[Prediction]:
        """The model's predictions, mapped back to the original frame size."""
        image_size = out.raw["image_size"]
        size = self.scaled_size(image_size)
        return [rescale_prediction(p, size, image_size) for p in self.model.predict(self._scaled(out))]

    def loss(self, out: StepOutput, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """The model's loss against targets mapped to the low resolution (boxes scaled, masks resized nearest)."""
        image_size = out.raw["image_size"]
        size = self.scaled_size(image_size)
        return self.model.loss(self._scaled(out), [rescale_target(t, image_size, size) for t in targets])

    def mirror_raw(self, raw: dict[str, Any]) -> dict[str, Any]:
        return {"scaled": self.model.mirror_raw(raw["scaled"]), "image_size": raw["image_size"]}


def _box_factors(source: tuple[int, int], target: tuple[int, int], like: Tensor) -> Tensor:
    """``(sx, sy, sx, sy)`` mapping ``(x1, y1, x2, y2)`` pixel boxes from ``source`` to ``target`` sizes."""
    sy, sx = target[0] / source[0], target[1] / source[1]
    return torch.tensor([sx, sy, sx, sy], dtype=like.dtype, device=like.device)


def _resize_map(value: Tensor, size: tuple[int, int], nearest: bool = False) -> Tensor:
    """Resize an ``(..., h, w)`` map: bilinear for floating point, nearest for bool/integer (or if asked)."""
    lead = value.shape[:-2]
    flat = value.reshape(1, -1, *value.shape[-2:])
    if value.is_floating_point() and not nearest:
        resized = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    else:
        numeric = flat.to(torch.uint8 if value.dtype == torch.bool else torch.float32)
        resized = F.interpolate(numeric, size=size, mode="nearest").to(value.dtype)
    return resized.reshape(*lead, *size)


def rescale_prediction(prediction: Prediction, source: tuple[int, int], target: tuple[int, int]) -> Prediction:
    """Map one stream's prediction from a ``source = (h, w)`` frame to a ``target = (H, W)`` frame.

    ``"boxes"`` ``(N, 4)`` in pixels are scaled per axis; ``"mask"``/``"scores"`` maps of
    shape ``source`` are resized (see :class:`Resolution`); everything else is kept.
    """
    result = dict(prediction)
    if "boxes" in result and result["boxes"].is_floating_point():
        result["boxes"] = result["boxes"] * _box_factors(source, target, result["boxes"])
    for key in MASK_KEYS:
        value = result.get(key)
        if value is not None and value.dim() == 2 and tuple(value.shape) == tuple(source):
            result[key] = _resize_map(value, target)
    return result


def rescale_target(target: dict[str, Tensor], source: tuple[int, int], size: tuple[int, int]) -> dict[str, Tensor]:
    """Map one stream's target to a ``size = (h, w)`` frame: boxes scaled, ``"mask"``/``"masks"`` resized nearest."""
    result = dict(target)
    if "boxes" in result:
        boxes = result["boxes"].float() if not result["boxes"].is_floating_point() else result["boxes"]
        result["boxes"] = boxes * _box_factors(source, size, boxes)
    for key in ("mask", "masks"):
        value = result.get(key)
        if value is not None and value.dim() >= 2 and tuple(value.shape[-2:]) == tuple(source):
            # Nearest keeps the labels binary: a target is never blurred.
            result[key] = _resize_map(value, size, nearest=True)
    return result
