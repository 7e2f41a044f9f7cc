"""The policy interface: the next action of every stream, from the policy network's scores.

A policy maps per-stream scores (Q-values, logits) to actions of the model's action space,
in one batched call::

    actions = policy.select(scores, steps, generator)   # scores (B, ...) or None, steps (B,)

``steps[b]`` is stream ``b``'s frame index (each stream has its own clock); ``generator``
makes any randomness reproducible. A policy that does not read scores
(``needs_scores = False``: random, scanning, fixed, fixed interleaving) is called with
``scores=None``, so the caller can skip the policy network altogether. ``label`` is the
policy's name in tables (Chai 2019, Tab. 1: "DQN", "Random", "Scanning").

The three methods' policies all fit: Patchwork's greedy / epsilon-greedy on Q-values
``(B, A)`` and the hand-designed baselines; Looking Fast and Slow's fixed interleaving (a
periodic function of ``steps``) and greedy on its ``(B, 2)`` Q-values; BlockCopy's
Bernoulli sampling of per-block logits ``(B, h, w)``
(:class:`~patchwork.policies.stochastic.BernoulliPolicy`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Policy(Protocol):
    """Chooses the next action of ``B`` streams at once.

    Attributes:
        needs_scores: whether :meth:`select` reads ``scores``; when False the caller may
            pass ``None`` and skip computing them.
        label: the policy's name in tables.
    """

    needs_scores: bool
    label: str

    def select(self, scores: Tensor | None, steps: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Pick one action per stream.

        Args:
            scores: the policy network's output, ``(B, ...)`` (``None`` if ``needs_scores`` is False).
            steps: LongTensor ``(B,)``, each stream's frame index.
            generator: RNG for stochastic policies (``None``: torch's global CPU RNG).
        Returns:
            Actions ``(B, *action_shape)`` on the device of ``scores`` (or of ``steps``).
        """
        ...


def rng_device(generator: torch.Generator | None) -> torch.device:
    """Device to draw random numbers on: the generator's, else the CPU's global RNG.

    Drawing on the generator's device and moving the result keeps a seeded run's choices
    identical whether the model runs on CPU or GPU.
    """
    return generator.device if generator is not None else torch.device("cpu")
