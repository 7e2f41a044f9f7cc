"""``interval=K, delay=D``: a keyframe every ``K`` frames, spread over ``D + 1`` frames (Chai 2019, Sec. 4).

Cost: with a keyframe FLOPs count ``F``, ``interval=K, delay=D`` costs about ``F / (D + 1)``
on the ``D + 1`` frames after each keyframe and 0 on the others (max ``~F / (D + 1)``, avg
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

import torch
from torch import Tensor

from patchwork.models.baselines.wrapper import KeyframeWrapper, split_state, state_device
from patchwork.models.inference import evaluation_mode
from patchwork.models.streaming import ROW_BAND, Description, Stages, StepOutput, StreamingModel, row_bands
from patchwork.nn import StreamState
from patchwork.nn.flops import count_flops

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
    requests: list[int]
    done: int = 0


class KeyframeDelay(KeyframeWrapper):
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
        pieces_per_frame: a layer-stage above ``budget / pieces_per_frame`` (``budget`` = keyframe /
            ``(D + 1)``) runs in bands of at most that, by output rows and, past one row, output
            channels. Finer pieces bring each frame's FLOPs closer to the budget at one eager op
            call each (the main job's 128x128 detection row: p95 116.6 ms with 64 pieces, 21.4 ms with 8).

    ``raw`` of a step: ``{"finished": the model's StepOutput when the keyframe computation
    finished at this frame else None, "image_size": (H, W)}``.
    """

    #: Default ``pieces_per_frame``: the largest group of Tab. 5's interval=16, delay=15 within 0.5% of the
    #: budget at 384x384 (32 left 1.5%, 8 left 2-4%).
    PIECES_PER_FRAME = 64
    COUNTER = "delay.counter"
    TICKET = "delay.ticket"
    PREFIX = "delay."

    def __init__(self, model: StreamingModel, interval: int, delay: int, pieces_per_frame: int = PIECES_PER_FRAME) -> None:
        super().__init__(model)
        if interval < 1 or delay < 0:
            raise ValueError(f"need interval >= 1 and delay >= 0, got interval={interval}, delay={delay}")
        if pieces_per_frame < 1:
            raise ValueError(f"pieces_per_frame must be at least 1, got {pieces_per_frame}")
        if delay + 1 > interval:
            raise ValueError(
                f"delay + 1 = {delay + 1} exceeds interval = {interval}: the next keyframe needs the state "
                "the current one returns, so one keyframe's computation must finish within the interval"
            )
        self.interval = int(interval)
        self.delay = int(delay)
        self.pieces_per_frame = int(pieces_per_frame)
        self._in_flight: _InFlight | None = None
        self._last_ticket = 0
        self._stage_flops: dict[tuple[int, int], list[int]] = {}
        self._requests: dict[tuple[int, int], list[int]] = {}

    def init_state(
        self, batch_size: int, image_size: tuple[int, int], device: torch.device | str | None = None
    ) -> StreamState:
        state = super().init_state(batch_size, image_size, device)
        state[self.TICKET] = torch.zeros_like(state[self.COUNTER])
        # Measured here, outside the frames whose cost is counted.
        self.stage_flops(image_size, state[self.COUNTER].device)
        return state

    def stage_flops(self, image_size: tuple[int, int], device: torch.device | str | None = None) -> list[int]:
        """FLOPs of each stage of one keyframe (batch of one), in order, as it runs delayed; cached per image size.

        First the model's stages are measured whole; a layer-stage above a piece of the per-frame
        budget (``piece`` = keyframe / ``(D + 1)`` / ``pieces_per_frame``) is then asked to run in
        ``ceil(cost / piece)`` bands (of output rows, then channels: :func:`~patchwork.models.streaming.row_bands`), and the
        stages are measured again as they will run: one entry per band. The last stage
        includes what ends the step (decoding), as it runs in the frame the computation finishes.
        """
        key = (int(image_size[0]), int(image_size[1]))
        if key not in self._stage_flops:
            whole, _ = self._measure(key, device, None)
            # Small pieces let contiguous groups come close to the budget.
            piece = sum(whole) / (self.delay + 1) / self.pieces_per_frame
            plan = [math.ceil(cost / piece) if cost > piece else 1 for cost in whole]
            if self.delay > 0 and any(bands > 1 for bands in plan):
                self._stage_flops[key], self._requests[key] = self._measure(key, device, plan)
            else:
                self._stage_flops[key], self._requests[key] = whole, [1] * len(whole)
        return self._stage_flops[key]

    def _measure(
        self, image_size: tuple[int, int], device: torch.device | str | None, plan: list[int] | None
    ) -> tuple[list[int], list[int]]:
        """FLOPs per stage of one keyframe, asking stage ``i`` for ``plan[i]`` row bands (``None``: none);
        also the band request each stage is resumed with."""
        with evaluation_mode(self.model):
            state = self.model.init_state(1, image_size, device)
            device = state_device(state, device)
            space = self.model.action_space
            actions = None if space is None else torch.zeros((1, *space.shape(image_size)), dtype=space.dtype, device=device)
            frames = torch.zeros(1, 3, *image_size, device=device)
            stages = self.model.step_stages(frames, actions, state)
            flops: list[int] = []
            requests: list[int] = []
            finished, layer, starts_layer = False, 0, True

            def advance() -> None:
                nonlocal finished, layer, starts_layer
                try:
                    with row_bands(requests[-1]):
                        yielded = next(stages)
                except StopIteration as result:
                    finished = True
                    self.model.predict(result.value)
                    return
                starts_layer = yielded != ROW_BAND
                layer += starts_layer

            while not finished:
                requests.append(plan[layer] if plan is not None and starts_layer and layer < len(plan) else 1)
                flops.append(count_flops(advance))
        return flops, requests

    def stage_groups(self, image_size: tuple[int, int]) -> list[range]:
        """The ``D + 1`` groups of stage indices, group ``p`` run at frame ``k + p`` after keyframe ``k``."""
        return balanced_partition(self.stage_flops(image_size), self.delay + 1)

    def forward_raw(self, frames: Tensor, actions: Tensor | None, state: StreamState) -> StepOutput:
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
            inner, _ = split_state(state, self.PREFIX)
            self._last_ticket += 1
            ticket = self._last_ticket
            stages = self.model.step_stages(frames, actions, inner)
            self._in_flight = _InFlight(ticket, stages, self._requests_for(image_size))
            new_state[self.TICKET] = torch.full_like(state[self.TICKET], ticket)
        if phase <= self.delay:
            finished = self._advance(new_state, len(self.stage_groups(image_size)[phase]), last=phase == self.delay)
        new_state[self.COUNTER] = counter + 1
        raw = {"finished": finished, "image_size": image_size}
        return StepOutput(raw, new_state)

    def _requests_for(self, image_size: tuple[int, int]) -> list[int]:
        self.stage_flops(image_size)
        return self._requests[image_size]

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
                # Each stage is resumed with the row-band request it was measured with.
                with row_bands(job.requests[job.done]):
                    job.done += 1
                    next(job.stages)
            except StopIteration as result:
                if not (last and index == num_stages - 1):
                    raise RuntimeError("the model's step_stages yielded fewer times than when it was measured")
                self._in_flight = None
                out = result.value
                state.update(out.state)
                predictions = None if self.training else self.model.predict(out)
                self.held.write(state, None, predictions, self.model.observe(out))
                return out
        if last:
            raise RuntimeError("the model's step_stages yielded more times than when it was measured")
        return None

    def loss(self, out: StepOutput, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        raise NotImplementedError(
            "KeyframeDelay outputs belong to a frame D steps back; train the wrapped model and wrap it afterwards"
        )

    def describe(self) -> Description:
        options = (f"interval={self.interval}", f"delay={self.delay}")
        return self.model.describe().with_options(before=options, interval=self.interval, delay=self.delay)
