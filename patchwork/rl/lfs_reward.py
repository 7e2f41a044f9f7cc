"""The reward of Looking Fast and Slow's adaptive interleaving policy (Liu et al. 2019, Sec. 3.4, Eq. 2).

``R(a) = min_i L(D^i) - L(D^a) + gamma * [a = 1]``: an accuracy term, how much worse the
chosen extractor's detections are than the best extractor's on this frame (0 when the
choice was the best, negative otherwise), plus a speed bonus ``gamma`` for running the
small extractor f1. ``gamma`` sets how often f0 runs (the paper sweeps 1.5 ... 0.1).
During policy training every extractor runs on each frame (Algorithm 1), so all the
losses ``L(D^i)`` are known.
"""

from __future__ import annotations

import torch
from torch import Tensor

from patchwork.rl.rewards import SCORE_THRESHOLD, detection_quality_batch
from patchwork.rl.roles import RewardContext, RewardResult


def lfs_reward(losses: Tensor, actions: Tensor, gamma: float) -> Tensor:
    """LFS Eq. 2 for ``B`` streams.

    Args:
        losses: ``(B, m)`` detection loss of each extractor's detections, ``L(D^i)``
            (``m = 2``: column 0 for f0, column 1 for f1).
        actions: LongTensor ``(B,)``, the extractor that ran (0 = f0, 1 = f1).
        gamma: the speed reward for running f1 (action 1).
    Returns:
        ``(B,)`` rewards, on ``losses``' device and dtype.
    """
    if losses.dim() != 2 or actions.shape != losses.shape[:1]:
        raise ValueError(f"expected losses (B, m) and actions (B,), got {tuple(losses.shape)} and {tuple(actions.shape)}")
    actions = actions.to(device=losses.device, dtype=torch.long)
    chosen = losses.gather(1, actions.unsqueeze(1)).squeeze(1)
    return losses.min(dim=1).values - chosen + gamma * (actions == 1).to(losses.dtype)


class LossDifferenceReward:
    """LFS Eq. 2 as the policy stage's reward: every extractor is run on the frame from the state
    the frame started from (Algorithm 1), each stream's detection loss ``L(D^i)`` taken, and
    :func:`lfs_reward` paid for the extractor that ran.

    The model must offer ``loss_per_stream(out, targets) -> (B,)``
    (:class:`~patchwork.models.lfs.LookingFastSlowDetector` does). The logged quality is the
    detection quality ``f`` of Patchwork's Eq. 3 on the predictions made.

    Args:
        gamma: the speed bonus of f1 (the paper sweeps 1.5 ... 0.1).
    """

    min_score: float | None = SCORE_THRESHOLD
    task = "detection"

    def __init__(self, gamma: float = 0.5) -> None:
        self.gamma = float(gamma)

    def __call__(self, context: RewardContext) -> RewardResult:
        model, frames, batch = context.model, context.frames, context.frames.shape[0]
        with torch.no_grad():
            losses = torch.stack([
                model.loss_per_stream(
                    model.forward_raw(frames, torch.full((batch,), action, dtype=torch.long, device=frames.device),
                                      context.state_before),
                    context.targets,
                )
                for action in range(model.action_space.n)
            ], dim=1)  # (B, m)
        quality = detection_quality_batch([p["boxes"] for p in context.predictions],
                                          [p["scores"] for p in context.predictions],
                                          [t["boxes"] for t in context.targets])
        return RewardResult(lfs_reward(losses, context.actions, self.gamma), quality)

    def __repr__(self) -> str:
        return f"LossDifferenceReward(gamma={self.gamma})"
