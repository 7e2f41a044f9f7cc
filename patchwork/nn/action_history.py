"""Exponentially decaying action history (Sec. 3.1, Eq. 1)."""

from __future__ import annotations

import torch
from torch import Tensor


class ActionHistory:
    """``F_t = min(alpha * F_{t-1} + onehot(A_t), 1)``, one vector per stream.

    The history tells the attention network which windows it looked at recently,
    which encourages diversity among actions (Sec. 3.1). It is pure tensor maths with
    no parameters; the vectors live in the caller's state so they batch, reset and
    checkpoint with the rest of it.

    Args:
        num_actions: size of the action space (``WindowGrid.num_windows``).
        alpha: the decay factor ``alpha`` in ``[0, 1]``.
    """

    def __init__(self, num_actions: int, alpha: float) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        self.num_actions = int(num_actions)
        self.alpha = float(alpha)

    def init(self, batch_size: int, device: torch.device | str | None = None) -> Tensor:
        """``F_0``: zeros ``(B, num_actions)``, no action taken yet."""
        return torch.zeros(batch_size, self.num_actions, device=device)

    def update(self, history: Tensor, actions: Tensor) -> Tensor:
        """One step of Eq. 1.

        Args:
            history: ``F_{t-1}``, ``(B, num_actions)``.
            actions: ``A_t``, LongTensor ``(B,)``.
        Returns:
            ``F_t``, ``(B, num_actions)``, every entry in ``[0, 1]``.
        """
        onehot = torch.nn.functional.one_hot(actions.long(), self.num_actions).to(history.dtype)
        return torch.clamp(self.alpha * history + onehot, max=1.0)
