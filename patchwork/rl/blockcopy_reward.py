"""BlockCopy's per-block reward (Verelst and Tuytelaars, ICCV 2021, Sec. 3.5, Eq. 8-12).

``R_b = s_b * (IG_b + gamma * (tau - M_t))`` with ``s_b = +1`` for an executed block and
``-1`` otherwise: executing is rewarded where the information gain is high and while the
running cost ``M_t`` is below the target ``tau``; skipping is rewarded in the opposite
cases. ``C_t`` is the executed fraction of frame ``t`` (Eq. 10) and
``M_t = (1 - mu) C_t + mu M_{t-1}`` its moving average (Eq. 11 writes ``C_{t-1}``; the
authors' code averages ``M``, as here).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

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
