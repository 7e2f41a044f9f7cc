"""The recurrent state of a batch of video streams."""

from __future__ import annotations

import torch
from torch import Tensor


class StreamState(dict[str, Tensor]):
    """Named state tensors of ``B`` parallel streams; every tensor is batch-first ``(B, ...)``.

    Patchwork keeps one full-frame memory per cell here, keyed by the cell's module path;
    other streaming methods (Looking Fast and Slow's LSTM state, BlockCopy's cached
    features) fit the same contract, so policies, the engine and checkpoints handle any of
    them alike. A plain ``dict`` subclass: ``torch.save`` and ``torch.load`` round-trip it.
    """

    @property
    def batch_size(self) -> int:
        """``B``, the number of streams."""
        return next(iter(self.values())).shape[0]

    def reset(self, streams: Tensor) -> "StreamState":
        """Zero the state of some streams (each starts a new video); the others keep theirs.

        Args:
            streams: BoolTensor ``(B,)``, True for the streams to reset.
        Returns:
            A new state; the tensors of this one are not modified.
        """
        reset = streams.to(dtype=torch.bool)
        return StreamState(
            {name: value.masked_fill(reset.view(-1, *([1] * (value.dim() - 1))), 0) for name, value in self.items()}
        )

    def detach(self) -> "StreamState":
        """Cut the autograd history (truncated backpropagation through time)."""
        return StreamState({name: value.detach() for name, value in self.items()})

    def to(self, device: torch.device | str) -> "StreamState":
        """Move every tensor to ``device``."""
        return StreamState({name: value.to(device) for name, value in self.items()})

    def select(self, streams: Tensor) -> "StreamState":
        """The state of a subset of streams, ``streams`` a LongTensor of indices."""
        return StreamState({name: value[streams] for name, value in self.items()})
