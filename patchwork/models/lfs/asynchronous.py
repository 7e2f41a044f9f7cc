"""Asynchronous inference of Looking Fast and Slow (Liu et al. 2019, Sec. 3.5, Fig. 5).

"f1 is run at each step and exclusively used to generate detections, while f0 continues
to be run every tau frames and updates the memory when it completes." The per-frame
latency is then the f1 path alone; f0 runs beside it (another core, thread or device).

Here f0 is launched on a stream's frames ``0, tau + 1, 2 (tau + 1), ...`` (the fixed
interleaving schedule), from the memory at that moment, and its LSTM update replaces the
memory when it completes. Two modes:

* :class:`SimulatedAsynchronousInference` (deterministic): f0's update lands ``delay``
  frames late. In synchronous interleaved inference the update of f0 at frame ``t`` is in
  effect from frame ``t`` on (frame ``t``'s detections are f0's own); here it is in
  effect from frame ``t + delay`` on, and frames ``t .. t + delay - 1`` are detected by f1
  with the older memory. ``delay = 0`` is synchronous interleaved inference.
* :class:`ThreadedAsynchronousInference` (real): f0 runs in a worker thread with its own
  torch thread count; its update is merged at the first frame after it finishes.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import torch
from torch import Tensor

from patchwork.models.lfs.detector import C, F0, F1, H, LookingFastSlowDetector
from patchwork.models.streaming import StepOutput
from patchwork.nn import StreamState

#: Simulated mode's state: f0's update in flight and the frames until it lands (0: none).
PENDING_C, PENDING_H, PENDING_FRAMES = "lfs.async.c", "lfs.async.h", "lfs.async.frames_left"
_PENDING_KEYS = (PENDING_C, PENDING_H, PENDING_FRAMES)


def keyframes(steps: Tensor, tau: int) -> Tensor:
    """BoolTensor ``(B,)``: the streams whose frame ``steps[b]`` launches f0 (``steps % (tau + 1) == 0``)."""
    return torch.remainder(steps.long(), tau + 1) == 0


def _f1_step(model: LookingFastSlowDetector, frames: Tensor, state: StreamState) -> StepOutput:
    """f1 on every stream from the current memory (which it does not change); detections in eval mode."""
    x = model.normalize(frames)
    actions = torch.full((frames.shape[0],), F1, dtype=torch.long, device=frames.device)
    memory_output, new_state = model.remember(x, actions, state)
    raw = model.detect(memory_output, frames.shape[-2:])
    raw["actions"] = actions
    out = StepOutput(raw=raw, state=new_state)
    if not model.training:
        out.predictions = model.predict(out)
    return out


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


class SimulatedAsynchronousInference:
    """Asynchronous mode with f0's memory update landing exactly ``delay`` frames late.

    Args:
        model: the interleaved detector.
        tau: f0 is launched every ``tau + 1`` frames of a stream (9 in the paper).
        delay: frames until f0's update is in effect, ``0 <= delay <= tau + 1`` (so that one
            update at most is in flight per stream).

    Use::

        state = runner.init_state(B)
        out = runner.step(frames, steps, state)   # steps (B,): each stream's frame index
    """

    def __init__(self, model: LookingFastSlowDetector, tau: int, delay: int) -> None:
        if tau < 0 or not 0 <= delay <= tau + 1:
            raise ValueError(f"need tau >= 0 and 0 <= delay <= tau + 1, got tau={tau}, delay={delay}")
        self.model, self.tau, self.delay = model, int(tau), int(delay)

    def init_state(
        self, batch_size: int, image_size: tuple[int, int] | None = None, device: torch.device | str | None = None
    ) -> StreamState:
        """The model's state plus the update in flight: ``lfs.async.c``, ``lfs.async.h`` and
        ``lfs.async.frames_left`` ``(B,)`` (0: nothing in flight; a reset stream has none)."""
        state = self.model.init_state(batch_size, image_size, device)
        state[PENDING_C] = torch.zeros_like(state[C])
        state[PENDING_H] = torch.zeros_like(state[H])
        state[PENDING_FRAMES] = torch.zeros(batch_size, dtype=torch.long, device=state[C].device)
        return state

    def step(self, frames: Tensor, steps: Tensor, state: StreamState) -> StepOutput:
        """One frame of ``B`` streams: ``frames (B, 3, H, W)`` in ``[0, 1]``, ``steps (B,)`` -> detections of f1
        (of f0 on keyframes when ``delay = 0``) and the new state."""
        launch = keyframes(steps.to(frames.device), self.tau)
        memory = StreamState({k: v for k, v in state.items() if k not in _PENDING_KEYS})
        pending = {k: state[k] for k in _PENDING_KEYS}
        if self.delay == 0:
            out = self.model(frames, torch.where(launch, F0, F1).long(), memory)
        else:
            # Updates launched `delay` frames ago land before this frame is detected.
            landing = torch.nonzero(pending[PENDING_FRAMES] == 1).squeeze(1)
            memory = _with_memory(memory, landing, pending[PENDING_C][landing], pending[PENDING_H][landing])
            frames_left = (pending[PENDING_FRAMES] - 1).clamp(min=0)
            out = _f1_step(self.model, frames, memory)
            streams = torch.nonzero(launch).squeeze(1)
            if streams.numel() > 0:
                c, h = _f0_update(self.model, frames[streams], memory.select(streams))
                pending[PENDING_C] = pending[PENDING_C].index_copy(0, streams, c)
                pending[PENDING_H] = pending[PENDING_H].index_copy(0, streams, h)
                frames_left = frames_left.index_fill(0, streams, self.delay)
            pending[PENDING_FRAMES] = frames_left
        out.state.update(pending)
        return out


class ThreadedAsynchronousInference:
    """Real asynchronous mode: f1 on the calling thread every frame, f0 in a worker thread.

    At a keyframe of some streams f0 is submitted for them with a snapshot of their memory;
    at every later frame, a finished update is merged into the memory before f1 runs. If
    the next keyframe comes while f0 is still running, the step waits for it first (one
    f0 in flight). The object holds the update in flight, so one runner serves one batch
    of streams; call :meth:`flush` before resetting or reading the final memory.

    Args:
        model: the interleaved detector (eval mode; calls run under ``torch.no_grad``).
        tau: f0 is launched every ``tau + 1`` frames of a stream.
        worker_threads: torch intra-op threads of the worker (set in the worker thread).
    """

    def __init__(self, model: LookingFastSlowDetector, tau: int, worker_threads: int = 1) -> None:
        if tau < 0:
            raise ValueError(f"tau must be non-negative, got {tau}")
        self.model, self.tau = model, int(tau)
        self._executor = ThreadPoolExecutor(max_workers=1, initializer=torch.set_num_threads, initargs=(worker_threads,))
        self._pending: tuple[Tensor, Future[tuple[Tensor, Tensor]]] | None = None

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
    def step(self, frames: Tensor, steps: Tensor, state: StreamState) -> StepOutput:
        """One frame: merge a finished f0 update, detect with f1, launch f0 on keyframe streams."""
        state = self._merge(state, wait=False)
        out = _f1_step(self.model, frames, state)
        streams = torch.nonzero(keyframes(steps.to(frames.device), self.tau)).squeeze(1)
        if streams.numel() > 0:
            out.state = self._merge(out.state, wait=True)
            snapshot = out.state.select(streams)
            self._pending = (streams, self._executor.submit(self._run_f0, frames[streams], snapshot))
        return out

    def close(self) -> None:
        """Stop the worker (waits for f0 in flight)."""
        self._executor.shutdown(wait=True)

    def __enter__(self) -> "ThreadedAsynchronousInference":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
