"""Stochastic policies on a policy network's logits, with the log-probabilities policy gradients need.

* :class:`CategoricalPolicy`: one of ``A`` actions per stream, ``softmax`` of ``(B, A)`` logits.
* :class:`BernoulliPolicy`: an independent binary decision per element of ``(B, *shape)``
  logits, ``sigmoid`` of each (BlockCopy's per-block execution decisions, Verelst and
  Tuytelaars 2021, Sec. 3.3: "actions sampled from Bernoulli distributions").

Sampling draws from the given generator on its own device, so a seeded run chooses the same
actions on CPU and GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from patchwork.policies.policy import rng_device


class CategoricalPolicy:
    """``A ~ Categorical(softmax(logits))`` per stream; ``greedy=True`` takes the argmax instead."""

    needs_scores = True
    label = "Categorical"

    def __init__(self, greedy: bool = False) -> None:
        self.greedy = bool(greedy)

    def select(self, scores: Tensor | None, steps: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``scores (B, A)`` logits -> LongTensor ``(B,)``."""
        if scores is None:
            raise ValueError("CategoricalPolicy needs logits")
        if self.greedy:
            return scores.argmax(dim=-1)
        probabilities = torch.softmax(scores.detach().float(), dim=-1).to(rng_device(generator))
        return torch.multinomial(probabilities, 1, generator=generator).squeeze(-1).to(scores.device)

    @staticmethod
    def log_prob(scores: Tensor, actions: Tensor) -> Tensor:
        """``log pi(actions | scores)``, ``(B,)``, differentiable in ``scores``."""
        return torch.log_softmax(scores, dim=-1).gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def __repr__(self) -> str:
        return f"CategoricalPolicy(greedy={self.greedy})"


class BernoulliPolicy:
    """``a ~ Bernoulli(sigmoid(logit))`` per decision; ``threshold`` given: ``sigmoid(logit) > threshold``."""

    needs_scores = True
    label = "Bernoulli"

    def __init__(self, threshold: float | None = None) -> None:
        self.threshold = threshold

    def select(self, scores: Tensor | None, steps: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``scores (B, *shape)`` logits -> BoolTensor ``(B, *shape)``."""
        if scores is None:
            raise ValueError("BernoulliPolicy needs logits")
        probabilities = torch.sigmoid(scores.detach().float())
        if self.threshold is not None:
            return probabilities > self.threshold
        coins = torch.rand(probabilities.shape, generator=generator, device=rng_device(generator))
        return coins.to(probabilities.device) < probabilities

    @staticmethod
    def log_prob(scores: Tensor, actions: Tensor) -> Tensor:
        """``log pi(a | logit)`` per decision, same shape as ``scores``, differentiable in ``scores``."""
        return -F.binary_cross_entropy_with_logits(scores, actions.to(scores.dtype), reduction="none")

    def __repr__(self) -> str:
        return f"BernoulliPolicy(threshold={self.threshold})"
