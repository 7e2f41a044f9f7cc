"""Policies that act on the attention network's Q-values (Sec. 3.1, 3.3)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from patchwork.policies.policy import rng_device


class GreedyPolicy:
    """``A_t = argmax_a Q(S_t, a)``: the learned policy at evaluation time.

    Reduces over the last dimension, so ``(B, A)`` Q-values give ``(B,)`` actions (and
    ``(B, K, A)`` give ``(B, K)``, e.g. per-block decisions). Ties go to the lowest index.
    """

    needs_scores = True
    label = "DQN"

    def select(self, q_values: Tensor | None, steps: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``q_values (B, A)`` -> LongTensor ``(B,)``; ``steps`` and ``generator`` are unused."""
        if q_values is None:
            raise ValueError("GreedyPolicy needs Q-values")
        return q_values.argmax(dim=-1)

    def __repr__(self) -> str:
        return "GreedyPolicy()"


class EpsilonGreedyPolicy:
    """Exploration during Q-learning: with probability epsilon a uniformly random action, else greedy.

    Each stream explores independently (one coin per decision). Both the coins and the
    random actions are drawn on every call, whatever the outcome, so the RNG advances by
    the same amount each step and a seeded run is reproducible.

    Args:
        epsilon: a constant in ``[0, 1]``, or a schedule ``training step -> epsilon`` such
            as :class:`patchwork.rl.LinearEpsilon`. The schedule is evaluated at
            :attr:`global_step`, which the training loop sets (``policy.global_step = step``)
            so the policy holds no state of its own to checkpoint; ``steps`` passed to
            :meth:`select` are per-stream frame indices, not training steps.
    """

    needs_scores = True
    label = "epsilon-greedy"

    def __init__(self, epsilon: float | Callable[[int], float]) -> None:
        self.epsilon = epsilon
        self.global_step = 0

    @property
    def current_epsilon(self) -> float:
        """Epsilon at :attr:`global_step`."""
        value = float(self.epsilon(self.global_step)) if callable(self.epsilon) else float(self.epsilon)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"epsilon must lie in [0, 1], got {value}")
        return value

    def select(self, q_values: Tensor | None, steps: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``q_values (B, A)`` -> LongTensor ``(B,)``; ``steps`` is unused."""
        if q_values is None:
            raise ValueError("EpsilonGreedyPolicy needs Q-values")
        shape, num_actions = q_values.shape[:-1], q_values.shape[-1]
        device = rng_device(generator)
        coins = torch.rand(shape, generator=generator, device=device).to(q_values.device)  # (B,)
        random_actions = torch.randint(0, num_actions, shape, generator=generator, device=device)
        # rand is in [0, 1): epsilon = 0 never explores, epsilon = 1 always does.
        explore = coins < self.current_epsilon  # (B,)
        return torch.where(explore, random_actions.to(q_values.device), q_values.argmax(dim=-1))

    def __repr__(self) -> str:
        return f"EpsilonGreedyPolicy(epsilon={self.epsilon!r})"
