"""Clear failures: stop on a non-finite loss, count and log the bad samples that are skipped.

A NaN or inf loss poisons the weights (and, through the bootstrapped DDQN target of Eq. 4,
the Q-values) within a step, and every checkpoint written afterwards is useless. So the run
stops at once, naming the step, the offending value and the last checkpoint known to be good.

Under DDP check a value every rank agrees on (``ctx.all_reduce_mean(loss.detach())``):
if only one rank raised, the others would wait forever in the next gradient all-reduce.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping

import torch
from torch import Tensor

_log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite.

    Attributes:
        step: the training step at which it happened.
        value: the offending loss value (``nan``, ``inf`` or ``-inf``).
        name: which loss (e.g. ``"losses/td"``).
        last_checkpoint: path of the last good checkpoint, or ``None`` when none was written yet.
    """

    def __init__(self, step: int, value: float, last_checkpoint: str | os.PathLike | None, name: str = "loss") -> None:
        self.step = step
        self.value = value
        self.name = name
        self.last_checkpoint = None if last_checkpoint is None else str(last_checkpoint)
        resume_from = self.last_checkpoint if self.last_checkpoint is not None else "none yet"
        super().__init__(
            f"non-finite {name} {value} at step {step}; last good checkpoint: {resume_from} "
            "(try a lower learning rate or stronger gradient clipping before resuming from it)"
        )


def check_finite(
    loss: Tensor | float | Mapping[str, Tensor | float],
    step: int,
    last_checkpoint: str | os.PathLike | None,
) -> None:
    """Raise :class:`NonFiniteLossError` if any loss value is NaN or infinite.

    Args:
        loss: a scalar loss, a tensor of losses (every element is checked), or
            ``{name: loss}`` to check several and name the bad one.
        step: current training step, for the message.
        last_checkpoint: path of the last checkpoint written (``CheckpointManager.latest()``),
            or ``None``.
    A CUDA tensor is copied to the host (one synchronisation per call).
    """
    losses = loss if isinstance(loss, Mapping) else {"loss": loss}
    for name, value in losses.items():
        values = torch.as_tensor(value).detach().reshape(-1)
        bad = ~torch.isfinite(values)
        if bad.any():
            raise NonFiniteLossError(step, float(values[bad][0]), last_checkpoint, name)


class TooManySkipsError(RuntimeError):
    """More samples were skipped than the configured limit: the data, not a few files, is broken."""


class SkipCounter:
    """Counts skipped bad samples by reason and logs each one with its path.

    A corrupt JPEG or an annotation without objects should not kill a day-long run, but it must
    not vanish silently either: every skip is logged (``logging.WARNING`` with the path and the
    reason) and counted, and ``limit`` turns a systematic data problem into an error.

    Args:
        limit: raise :class:`TooManySkipsError` once more than this many samples were skipped
            in total (``None``: never).
        logger: where to log (default: this module's logger).
    Counts made inside ``DataLoader`` worker processes stay in those processes; count in the
    main process (e.g. from a ``None`` returned by the dataset) to see them here.
    """

    def __init__(self, limit: int | None = None, logger: logging.Logger | None = None) -> None:
        self.limit = limit
        self.logger = logger or _log
        self.counts: Counter[str] = Counter()

    @property
    def total(self) -> int:
        """Number of samples skipped so far, over all reasons."""
        return sum(self.counts.values())

    def skip(self, reason: str, path: str | os.PathLike, detail: str | BaseException | None = None) -> None:
        """Record one skipped sample.

        Args:
            reason: a short category, the key of :attr:`counts` (e.g. ``"unreadable image"``).
            path: the file (or ``video/frame`` id) that was skipped.
            detail: the error or extra context, appended to the log line.
        """
        self.counts[reason] += 1
        suffix = "" if detail is None else f": {detail}"
        self.logger.warning("skipped %s (%s, %d so far)%s", os.fspath(path), reason, self.counts[reason], suffix)
        if self.limit is not None and self.total > self.limit:
            raise TooManySkipsError(f"skipped {self.total} samples, more than the limit {self.limit}: {self.summary()}")

    def summary(self) -> str:
        """One line, e.g. ``"3 skipped: unreadable image 2, no objects 1"``; ``"0 skipped"`` when clean."""
        if not self.counts:
            return "0 skipped"
        parts = ", ".join(f"{reason} {count}" for reason, count in self.counts.most_common())
        return f"{self.total} skipped: {parts}"

    def state_dict(self) -> dict:
        """Counts for the checkpoint's ``extra``, so a resumed run keeps counting."""
        return {"counts": dict(self.counts)}

    def load_state_dict(self, state: Mapping) -> None:
        self.counts = Counter(state["counts"])
