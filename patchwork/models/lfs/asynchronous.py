"""Asynchronous inference of Looking Fast and Slow (Liu et al. 2019, Sec. 3.5, Fig. 5).

"f1 is run at each step and exclusively used to generate detections, while f0 continues
to be run every tau frames and updates the memory when it completes." The per-frame
latency is then the f1 path alone; f0 runs beside it (another core, thread or device).

Both modes are :class:`~patchwork.models.baselines.StreamingWrapper` s of the interleaved
detector, so the harness streams, costs and times them like any method. They keep its
action space and read an action as *when to launch f0*: under
:class:`~patchwork.policies.FixedInterleavingPolicy` (tau) f0 is launched on a stream's frames
``0, tau + 1, 2 (tau + 1), ...``, from the memory at that moment, and its LSTM update replaces
the memory when it completes; every frame's detections are f1's. Two modes:

* :class:`SimulatedAsynchronousInference` (deterministic, for accuracy): f0's update lands
  ``delay`` frames late. In synchronous interleaved inference the update of f0 at frame ``t``
  is in effect from frame ``t`` on (frame ``t``'s detections are f0's own); here it is in
  effect from frame ``t + delay`` on, and frames ``t .. t + delay - 1`` are detected by f1
  with the older memory. ``delay = 0`` is synchronous interleaved inference. Its FLOPs:
  f0's update is counted :func:`~patchwork.nn.flops.beside_the_frame` (in the average, not
  in the frame's max), as LFS Tab. 2's "84 (190)".
* :class:`ThreadedAsynchronousInference` (real, for latency): f0 runs in a worker thread
  with its own torch thread count; its update is merged at the first frame after it finishes.

If a stream launches f0 while its previous update is still in flight (a policy that launches
more often than the delay allows), that update is merged first, before the new one starts
from the memory: one update in flight per stream in both modes.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor

from patchwork.models.baselines.wrapper import StreamingWrapper, check_free_prefix
from patchwork.models.lfs.detector import C, F0, F1, H, LookingFastSlowDetector
from patchwork.models.streaming import Description, Prediction, StepOutput
from patchwork.nn import StreamState
from patchwork.nn.flops import beside_the_frame

#: Simulated mode's state: f0's update in flight and the frames until it lands (0: none).
PENDING_C, PENDING_H, PENDING_FRAMES = "lfs.async.c", "lfs.async.h", "lfs.async.frames_left"
_PENDING_KEYS = (PENDING_C, PENDING_H, PENDING_FRAMES)


def keyframes(steps: Tensor, tau: int) -> Tensor:
    """BoolTensor ``(B,)``: the streams whose frame ``steps[b]`` launches f0 (``steps % (tau + 1) == 0``)."""
    return torch.remainder(steps.long(), tau + 1) == 0


def _f1_step(model: LookingFastSlowDetector, frames: Tensor, state: StreamState) -> StepOutput:
    """f1 on every stream from the current memory (which it does not change); raw outputs, not decoded."""
    actions = torch.full((frames.shape[0],), F1, dtype=torch.long, device=frames.device)
    return model.forward_raw(frames, actions, state)


def _f0_update(model: LookingFastSlowDetector, frames: Tensor, state: StreamState) -> tuple[Tensor, Tensor]:
    """f0 and the LSTM on ``frames`` (B', 3, H, W) from ``state``: the new memory ``(c, h)``, each ``(B', S, h, w)``."""
    actions = torch.full((frames.shape[0],), F0, dtype=torch.long, device=frames.device)
    _, new_state = model.remember(model.normalize(frames), actions, state)
    return new_state[C], new_state[H]


def _with_memory(state: StreamState, streams: Tensor, c: Tensor, h: Tensor) -> StreamState:
    """``state`` with the memory of ``streams`` (LongTensor ``(B',)``) replaced by ``c, h`` ``(B', S, h, w)``."""
    merged = StreamState(state)
    merged[C] = state[C].index_copy(0, streams, c)
    merged[H] = state[H].index_copy(0, streams, h)
    return merged


def _launches(actions: Tensor | None, frames: Tensor) -> Tensor:
    """BoolTensor ``(B,)``: the streams that launch f0 (action F0; ``None``: all, as the detector runs f0)."""
    if actions is None:
        return torch.ones(frames.shape[0], dtype=torch.bool, device=frames.device)
    return actions.to(frames.device) == F0


class _AsynchronousWrapper(StreamingWrapper):
    """What both modes share: the wrapped detector's roles, f1's detections, the label."""

    model: LookingFastSlowDetector

    def __init__(self, model: LookingFastSlowDetector, tau: int) -> None:
        super().__init__(model)
        if tau < 0:
            raise ValueError(f"tau must be non-negative, got {tau}")
        self.tau = int(tau)
        self.train(model.training)

    def step(self, frames: Tensor, steps: Tensor, state: StreamState) -> StepOutput:
        """One frame under the fixed schedule: ``frames (B, 3, H, W)`` in ``[0, 1]``, ``steps (B,)`` each
        stream's frame index; f0 launched where :func:`keyframes`."""
        launch = keyframes(steps.to(frames.device), self.tau)
        return self(frames, torch.where(launch, F0, F1).long(), state)

    def observe(self, out: StepOutput) -> dict[str, Tensor]:
        """The detector's policy observation of the memory in effect."""
        return self.model.observe(out)

    def predict(self, out: StepOutput, min_score: float | None = None) -> list[Prediction]:
        """The detector's decoding of the frame's (f1's) raw outputs."""
        return self.model.predict(out, min_score)

    def describe(self) -> Description:
        """``"LFS async"`` (the policy adds ``"interleaved tau=9"``) with ``tau`` and the mode's fields."""
        return self.model.describe().with_options(after=("async",), tau=self.tau)


class SimulatedAsynchronousInference(_AsynchronousWrapper):
    """Asynchronous mode with f0's memory update landing exactly ``delay`` frames late.

    Args:
        model: the interleaved detector.
        tau: the schedule: f0 is launched every ``tau + 1`` frames of a stream (9 in the paper).
        delay: frames until f0's update is in effect, ``0 <= delay <= tau + 1`` (so that one
            update at most is in flight per stream under the schedule).

    Use as a streaming model under ``FixedInterleavingPolicy(tau)`` (evaluation, cost), or::

        state = runner.init_state(B)
        out = runner.step(frames, steps, state)   # steps (B,): each stream's frame index
    """

    def __init__(self, model: LookingFastSlowDetector, tau: int, delay: int) -> None:
        if tau < 0 or not 0 <= delay <= tau + 1:
            raise ValueError(f"need tau >= 0 and 0 <= delay <= tau + 1, got tau={tau}, delay={delay}")
        super().__init__(model, tau)
        self.delay = int(delay)

    def describe(self) -> Description:
        return super().describe().with_options(delay=self.delay)

    def init_state(
        self, batch_size: int, image_size: tuple[int, int] | None = None, device: torch.device | str | None = None
    ) -> StreamState:
        """The model's state plus the update in flight: ``lfs.async.c``, ``lfs.async.h`` and
        ``lfs.async.frames_left`` ``(B,)`` (0: nothing in flight; a reset stream has none)."""
        state = self.model.init_state(batch_size, image_size, device)
        check_free_prefix(state, "lfs.async.", type(self).__name__)
        state[PENDING_C] = torch.zeros_like(state[C])
        state[PENDING_H] = torch.zeros_like(state[H])
        state[PENDING_FRAMES] = torch.zeros(batch_size, dtype=torch.long, device=state[C].device)
        return state

    def forward_raw(self, frames: Tensor, actions: Tensor | None, state: StreamState) -> StepOutput:
        """One frame of ``B`` streams: f1's raw outputs (f0's on launching streams when ``delay = 0``)."""
        launch = _launches(actions, frames)
        memory = StreamState({k: v for k, v in state.items() if k not in _PENDING_KEYS})
        pending = {k: state[k] for k in _PENDING_KEYS}
        if self.delay == 0:
            out = self.model.forward_raw(frames, torch.where(launch, F0, F1).long(), memory)
        else:
            # Updates launched `delay` frames ago land before this frame is detected.
            landing = torch.nonzero(pending[PENDING_FRAMES] == 1).squeeze(1)
            memory = _with_memory(memory, landing, pending[PENDING_C][landing], pending[PENDING_H][landing])
            frames_left = (pending[PENDING_FRAMES] - 1).clamp(min=0)
            out = _f1_step(self.model, frames, memory)
            streams = torch.nonzero(launch).squeeze(1)
            if streams.numel() > 0:
                # An update still in flight lands before the next one starts (one in flight per stream).
                early = streams[frames_left[streams] > 0]
                out.state = _with_memory(out.state, early, pending[PENDING_C][early], pending[PENDING_H][early])
                with beside_the_frame():
                    c, h = _f0_update(self.model, frames[streams], out.state.select(streams))
                pending[PENDING_C] = pending[PENDING_C].index_copy(0, streams, c)
                pending[PENDING_H] = pending[PENDING_H].index_copy(0, streams, h)
                frames_left = frames_left.index_fill(0, streams, self.delay)
            pending[PENDING_FRAMES] = frames_left
        out.state.update(pending)
        return out


class ThreadedAsynchronousInference(_AsynchronousWrapper):
    """Real asynchronous mode: f1 on the calling thread every frame, f0 in a worker thread.

    At a launch (action F0) of some streams f0 is submitted for them with a snapshot of their
    memory; at every later frame, a finished update is merged into the memory before f1 runs.
    If the next launch comes while f0 is still running, the step waits for it first (one f0
    in flight). The object holds the update in flight, so one runner serves one batch of
    streams (:meth:`init_state` discards an update in flight); call :meth:`flush` before
    reading the final memory. A copy (``copy.deepcopy``, as latency measurement makes) has
    nothing in flight and starts its own worker.

    Args:
        model: the interleaved detector (eval mode; calls run under ``torch.no_grad``).
        tau: the schedule of :meth:`step`: f0 is launched every ``tau + 1`` frames of a stream.
        worker_threads: torch intra-op threads of the worker (set in the worker thread).
    """

    def __init__(self, model: LookingFastSlowDetector, tau: int, worker_threads: int = 1) -> None:
        super().__init__(model, tau)
        self.worker_threads = int(worker_threads)
        self._executor: ThreadPoolExecutor | None = None
        self._pending: tuple[Tensor, Future[tuple[Tensor, Tensor]]] | None = None

    def describe(self) -> Description:
        return super().describe().with_options(delay="threaded")

    def __getstate__(self) -> dict[str, Any]:
        # Threads and futures are not copied: a copy starts idle.
        state = self.__dict__.copy()
        state["_executor"], state["_pending"] = None, None
        return state

    def init_state(
        self, batch_size: int, image_size: tuple[int, int] | None = None, device: torch.device | str | None = None
    ) -> StreamState:
        """The model's state (nothing is in flight at the start)."""
        self.flush(None)
        return self.model.init_state(batch_size, image_size, device)

    def _run_f0(self, frames: Tensor, state: StreamState) -> tuple[Tensor, Tensor]:
        with torch.no_grad():  # grad mode is per thread
            return _f0_update(self.model, frames, state)

    def _merge(self, state: StreamState | None, wait: bool) -> StreamState | None:
        if self._pending is None or (not wait and not self._pending[1].done()):
            return state
        streams, future = self._pending
        self._pending = None
        c, h = future.result()
        return None if state is None else _with_memory(state, streams, c, h)

    def flush(self, state: StreamState | None) -> StreamState | None:
        """Wait for f0 in flight and merge its update into ``state`` (``None``: discard it)."""
        return self._merge(state, wait=True)

    @torch.no_grad()
    def forward_raw(self, frames: Tensor, actions: Tensor | None, state: StreamState) -> StepOutput:
        """One frame: merge a finished f0 update, detect with f1, launch f0 on the launching streams."""
        state = self._merge(state, wait=False)
        out = _f1_step(self.model, frames, state)
        streams = torch.nonzero(_launches(actions, frames)).squeeze(1)
        if streams.numel() > 0:
            out.state = self._merge(out.state, wait=True)
            snapshot = out.state.select(streams)
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, initializer=torch.set_num_threads,
                                                    initargs=(self.worker_threads,))
            self._pending = (streams, self._executor.submit(self._run_f0, frames[streams], snapshot))
        return out

    def close(self) -> None:
        """Stop the worker (waits for f0 in flight)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self._pending = None

    def __del__(self) -> None:
        if getattr(self, "_executor", None) is not None:
            self._executor.shutdown(wait=False)

    def __enter__(self) -> "ThreadedAsynchronousInference":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
