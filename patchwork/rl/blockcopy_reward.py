"""BlockCopy's per-block reward (Verelst and Tuytelaars, ICCV 2021, Sec. 3.5, Eq. 8-12).

``R_b = s_b * (IG_b + gamma * (tau - M_t))`` with ``s_b = +1`` for an executed block and
``-1`` otherwise: executing is rewarded where the information gain is high and while the
running cost ``M_t`` is below the target ``tau``; skipping is rewarded in the opposite
cases. ``C_t`` is the executed fraction of frame ``t`` (Eq. 10) and
``M_t = (1 - mu) C_t + mu M_{t-1}`` its moving average (Eq. 11 writes ``C_{t-1}``; the
authors' code averages ``M``, as here).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from patchwork.rl.information_gain import (
    block_information_gain,
    detection_information_gain,
    segmentation_information_gain,
)
from patchwork.rl.rewards import detection_quality_batch, segmentation_quality
from patchwork.rl.roles import RewardResult

#: Sec. 4, "BlockCopy configuration": the balance gamma between the reward terms and the
#: cost momentum mu.
GAMMA = 5.0
COST_MOMENTUM = 0.9


def execution_cost(actions: Tensor) -> Tensor:
    """Eq. 10: ``C_t``, the executed fraction of each stream's blocks.

    Args:
        actions: ``(B, h, w)`` bool or 0/1, True = executed.
    Returns:
        ``(B,)`` float in ``[0, 1]``.
    """
    return actions.float().flatten(1).mean(dim=1)


def running_cost(cost: Tensor, previous: Tensor | None = None, momentum: float = COST_MOMENTUM) -> Tensor:
    """Eq. 11: ``M_t = (1 - mu) C_t + mu M_{t-1}``; ``M`` starts at the first frame's ``C``.

    Args:
        cost: ``C_t``, ``(B,)``.
        previous: ``M_{t-1}``, ``(B,)``, or ``None`` before the first frame.
        momentum: ``mu`` in ``[0, 1)``.
    Returns:
        ``M_t``, ``(B,)``. (The authors' code keeps one average over all clips, first frames
        included: pass the previous clip's ``M`` on rather than ``None`` at a new clip.)
    """
    if previous is None:
        return cost
    return (1 - momentum) * cost + momentum * previous


def blockcopy_rewards(
    information_gain: Tensor,
    actions: Tensor,
    cost_average: Tensor,
    target: float,
    gamma: float = GAMMA,
    cost_term: Literal["linear", "signed_square"] = "linear",
) -> Tensor:
    """Eq. 8, 9, 12: ``R_b = s_b * (IG_b + gamma * (tau - M_t))`` per block.

    Args:
        information_gain: ``IG_b``, ``(B, h, w)`` (:func:`~patchwork.rl.information_gain.block_information_gain`).
        actions: ``(B, h, w)`` bool or 0/1, True = executed (``s_b = +1``), else ``s_b = -1``.
        cost_average: ``M_t``, ``(B,)``.
        target: ``tau`` in ``[0, 1]``, the desired executed fraction.
        gamma: the weight of the cost reward.
        cost_term: ``"linear"``, the paper's ``tau - M``; ``"signed_square"``, the authors'
            code's ``(tau - M) |tau - M|``.
    Returns:
        ``(B, h, w)`` rewards (constants for the policy gradient: no gradient flows through them).
    """
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target cost tau must lie in [0, 1], got {target}")
    gap = target - cost_average
    if cost_term == "signed_square":
        gap = gap * gap.abs()
    elif cost_term != "linear":
        raise ValueError(f"cost_term must be 'linear' or 'signed_square', got {cost_term!r}")
    sign = actions.to(information_gain.dtype) * 2 - 1
    return (sign * (information_gain + gamma * gap.view(-1, 1, 1))).detach()


class InformationGainReward:
    """BlockCopy's reward object (Eq. 8-12) for the policy-learning stage and online evaluation.

    Per frame: the information gain of the frame's predictions over the previous frame's
    (Algorithm 1 for detections, the per-pixel KL divergence for a binary segmenter's ``[1 - p, p]``),
    its maximum per block (Eq. 1), the executed fraction ``C_t`` and the running cost ``M_t``, and
    the per-block rewards ``s_b (IG_b + gamma (tau - M_t))``. No ground truth is read for the
    reward (the policy learns online, Sec. 3.2); with targets the frame's task quality is reported
    for logging and validation (Patchwork's ``f``, :mod:`patchwork.rl.rewards`).

    ``M_t`` is kept here, one per stream, carried from clip to clip as the authors' code keeps one
    average (first frames, which execute every block, count in it: it is the cost as run); when the
    number of streams changes the streams continue from the mean. :meth:`state_dict` checkpoints it.

    Args:
        target: ``tau``, the executed fraction to aim for (the model's ``target_cost``).
        gamma, momentum: the cost reward's weight and ``mu``.
        cost_term: ``"linear"`` (the paper) or ``"signed_square"`` (the authors' code).
        min_score: detections looked at (scores below count as absent).
    """

    def __init__(self, target: float, gamma: float = GAMMA, momentum: float = COST_MOMENTUM,
                 cost_term: Literal["linear", "signed_square"] = "linear", min_score: float | None = 0.3) -> None:
        if not 0.0 <= target <= 1.0:
            raise ValueError(f"target cost tau must lie in [0, 1], got {target}")
        self.target = float(target)
        self.gamma = float(gamma)
        self.momentum = float(momentum)
        self.cost_term = cost_term
        self.min_score = min_score
        self.cost_average: Tensor | None = None

    def information_gain(self, context: Any) -> Tensor:
        """``(B, H, W)`` per-pixel information gain of the frame's predictions over the previous ones."""
        size = tuple(context.frames.shape[-2:])
        if context.model.task == "segmentation":
            probs = torch.stack([p["scores"] for p in context.predictions]).float()
            prev = torch.stack([p["scores"] for p in context.previous]).float().to(probs.device)
            return segmentation_information_gain(torch.stack((1 - probs, probs), 1), torch.stack((1 - prev, prev), 1))
        threshold = self.min_score or 0.0
        maps = []
        for now, before in zip(context.predictions, context.previous):
            keep, kept = now["scores"] >= threshold, before["scores"] >= threshold
            maps.append(detection_information_gain(now["boxes"][keep], now["scores"][keep],
                                                   before["boxes"][kept].to(now["boxes"].device),
                                                   before["scores"][kept].to(now["scores"].device), size))
        return torch.stack(maps)

    def __call__(self, context: Any) -> RewardResult:
        actions = context.actions.bool()
        block_size = context.frames.shape[-1] // actions.shape[-1]
        gain = block_information_gain(self.information_gain(context), block_size).to(actions.device)
        cost = execution_cost(actions)
        previous = self.cost_average
        if previous is not None and previous.shape != cost.shape:
            previous = previous.mean().expand_as(cost)
        self.cost_average = running_cost(cost, None if previous is None else previous.to(cost.device), self.momentum)
        rewards = blockcopy_rewards(gain, actions, self.cost_average, self.target, self.gamma, self.cost_term)
        return RewardResult(rewards, self._quality(context, actions.shape[0], actions.device))

    @staticmethod
    def _quality(context: Any, batch: int, device: torch.device) -> Tensor:
        if not context.targets:
            return torch.zeros(batch, device=device)
        if context.model.task == "segmentation":
            masks = torch.stack([p["mask"] for p in context.predictions])
            return segmentation_quality(masks, torch.stack([t["mask"] for t in context.targets]).to(masks.device))
        return detection_quality_batch([p["boxes"] for p in context.predictions],
                                       [p["scores"] for p in context.predictions],
                                       [t["boxes"] for t in context.targets])

    def state_dict(self) -> dict[str, Any]:
        """The running cost ``M`` per stream (``None`` before the first frame)."""
        return {"cost_average": None if self.cost_average is None else self.cost_average.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cost_average = state["cost_average"]

    def __repr__(self) -> str:
        return f"InformationGainReward(target={self.target:g}, gamma={self.gamma:g}, cost_term={self.cost_term!r})"
