"""The attention policy interface: which window each stream looks at next (Sec. 3.1).

A policy maps per-stream scores to one discrete action per stream, in one batched call::

    actions = policy.select(q_values, steps, generator)   # (B, A) or None, (B,) -> (B,)

``steps[b]`` is stream ``b``'s frame index (streams start and end independently, so each
has its own clock); ``generator`` makes any randomness reproducible. A policy that does not
look at Q-values (``needs_q_values = False``) is called with ``q_values=None``, so the
caller can skip the attention network altogether.

Beyond Patchwork. The interface only assumes "scores in, discrete choices out", with the
choices over the last dimension of the scores, so the peer methods fit without changes to
it:

- Looking Fast and Slow (adaptive interleaving policy): the action is which feature
  extractor runs on the next frame, ``A = 2``; its Q-network reads the LSTM state and
  returns ``(B, 2)``, and :class:`~patchwork.policies.q_learned.GreedyPolicy` /
  :class:`~patchwork.policies.q_learned.EpsilonGreedyPolicy` apply as they are (it is
  trained with DDQN too). Its fixed interleaving (the large extractor once every ``tau + 1``
  frames) is a periodic function of ``steps``, like
  :class:`~patchwork.policies.hand_designed.ScanningPolicy`.
- BlockCopy: one execute/transfer decision per block. Scores shaped ``(B, num_blocks, 2)``
  give actions ``(B, num_blocks)``: the Q-value policies here already reduce over the last
  dimension and explore per decision. BlockCopy's own policy samples Bernoulli execution
  probabilities ``(B, num_blocks)``; that is a further class with the same ``select``
  signature, its ``generator`` driving the sampling.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Policy(Protocol):
    """Chooses the next action of ``B`` streams at once.

    Attributes:
        needs_q_values: whether :meth:`select` reads ``q_values``; when False the caller
            may pass ``None`` and skip computing them.
    """

    needs_q_values: bool

    def select(self, q_values: Tensor | None, steps: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Pick one action per stream.

        Args:
            q_values: ``(B, A)`` scores per action (``None`` if ``needs_q_values`` is False).
            steps: LongTensor ``(B,)``, each stream's frame index.
            generator: RNG for stochastic policies (``None``: torch's global CPU RNG).
        Returns:
            LongTensor ``(B,)`` of actions (window indices for Patchwork), on the device
            of ``q_values`` (or of ``steps`` when ``q_values`` is not used).
        """
        ...


def rng_device(generator: torch.Generator | None) -> torch.device:
    """Device to draw random numbers on: the generator's, else the CPU's global RNG.

    Drawing on the generator's device and moving the result keeps a seeded run's choices
    identical whether the model runs on CPU or GPU.
    """
    return generator.device if generator is not None else torch.device("cpu")
