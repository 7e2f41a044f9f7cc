"""Hand-designed interleaving policies of Looking Fast and Slow (Liu et al. 2019, Sec. 3.1, 3.3).

The action is which feature extractor runs on a stream's frame: 0 = the large f0, 1 = the
small f1. Like the other hand-designed policies these read no scores
(``needs_scores = False``) and return a LongTensor ``(B,)``; ``steps (B,)`` is each
stream's own frame index. The learned adaptive policy is
:class:`~patchwork.policies.q_learned.GreedyPolicy` (or epsilon-greedy) on the Q-values of
:class:`~patchwork.models.lfs.AdaptiveInterleavingQNetwork`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from patchwork.models.lfs.detector import F0, F1
from patchwork.policies.policy import rng_device


class FixedInterleavingPolicy:
    """Sec. 3.1: f0 runs once, then f1 ``tau`` times, and again: f0 exactly on frames
    ``0, tau + 1, 2 (tau + 1), ...`` of each stream (so always on a video's first frame).

    Args:
        tau: the interleave ratio (9 in the paper's Tab. 2); ``tau = 0`` is f0 only.
    """

    needs_scores = False

    def __init__(self, tau: int) -> None:
        if tau < 0:
            raise ValueError(f"tau must be non-negative, got {tau}")
        self.tau = int(tau)
        #: Frames of one cycle of the schedule (what a cost average must cover).
        self.period = self.tau + 1
        #: The method's name in Tab. 2 of the paper: "LFS interleaved tau=9".
        self.label = f"interleaved tau={self.tau}"

    def select(self, scores: Tensor | None, steps: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``steps (B,)`` -> LongTensor ``(B,)``: 0 where ``steps % (tau + 1) == 0``, else 1."""
        return torch.where(torch.remainder(steps.long(), self.tau + 1) == 0, F0, F1).long()

    def __repr__(self) -> str:
        return f"FixedInterleavingPolicy(tau={self.tau})"


class RandomInterleavingPolicy:
    """Each stream runs f0 with probability ``p_f0`` and f1 otherwise, independently per frame.

    ``p_f0 = 0.5`` is the paper's training schedule ("uniformly select a random feature
    extractor", Sec. 3.3); ``p_f0 = 1 / (tau + 1)`` runs f0 as often as the fixed policy.

    Args:
        p_f0: probability of f0, in ``[0, 1]``.
        f0_on_first_frame: always f0 on a stream's frame 0 (the memory starts empty; the
            authors' release does the same in training).
    """

    needs_scores = False
    label = "random interleaving"

    def __init__(self, p_f0: float = 0.5, f0_on_first_frame: bool = True) -> None:
        if not 0.0 <= p_f0 <= 1.0:
            raise ValueError(f"p_f0 must lie in [0, 1], got {p_f0}")
        self.p_f0 = float(p_f0)
        self.f0_on_first_frame = bool(f0_on_first_frame)

    def select(self, scores: Tensor | None, steps: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``steps (B,)`` -> LongTensor ``(B,)`` of 0 (probability ``p_f0``) and 1, on ``steps``' device."""
        draws = torch.rand(steps.shape, generator=generator, device=rng_device(generator)).to(steps.device)
        actions = (draws >= self.p_f0).long()
        if self.f0_on_first_frame:
            actions = torch.where(steps == 0, F0, actions).long()
        return actions

    def __repr__(self) -> str:
        return f"RandomInterleavingPolicy(p_f0={self.p_f0}, f0_on_first_frame={self.f0_on_first_frame})"
