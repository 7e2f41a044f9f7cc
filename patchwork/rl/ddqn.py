"""Double DQN for the attention network (Sec. 3.3, Eq. 4 and 5; van Hasselt et al. 2016).

Eq. 4 moves the online weights ``Theta`` towards the target
``Y_t = R_{t+1} + gamma * Q(S_{t+1}, argmax_a Q(S_{t+1}, a; Theta); Theta')`` (Eq. 5): the
online network *picks* the next action, the delayed copy ``Theta'`` *evaluates* it. Splitting
selection from evaluation removes the overestimation of vanilla DQN's
``max_a Q(S_{t+1}, a; Theta')``, which the paper calls making Q-learning "less overly
confident".

Transition convention (shared with :class:`~patchwork.rl.replay_buffer.ReplayBuffer`):
``S_t`` is the observation after frame ``t`` (restored memory + action history),
``A_t`` the window chosen for frame ``t + 1``, ``R_{t+1}`` the reward of Eq. 2 on frame
``t + 1`` and ``done`` marks a terminal ``S_{t+1}`` whose future value is 0. A clip cut
short for training is not terminal (the video goes on); pass ``done=False`` there.

The Q-network is any ``nn.Module`` mapping an observation dict ``{name: (N, ...)}`` to
Q-values ``(N, A)``. :func:`ddqn_loss` builds the loss alone (stage 3 adds it to the task
loss); :func:`ddqn_update` is a complete stage-2 optimisation step.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def double_dqn_targets(
    rewards: Tensor, dones: Tensor, next_q_online: Tensor, next_q_target: Tensor, gamma: float
) -> Tensor:
    """Eq. 5: ``Y = R + gamma * (1 - done) * Q_target(S', argmax_a Q_online(S', a))``.

    Args:
        rewards: ``(B,)`` ``R_{t+1}``.
        dones: ``(B,)`` bool, True where ``S_{t+1}`` is terminal (no bootstrap).
        next_q_online: ``(B, A)`` ``Q(S_{t+1}, . ; Theta)``, used only to pick the action.
        next_q_target: ``(B, A)`` ``Q(S_{t+1}, . ; Theta')``, used only to evaluate it.
        gamma: discount factor in ``[0, 1]``.
    Returns:
        ``(B,)`` targets, detached (Eq. 4 treats ``Y`` as a constant).
    """
    next_actions = next_q_online.argmax(dim=-1, keepdim=True)  # (B, 1)
    next_values = next_q_target.gather(-1, next_actions).squeeze(-1)  # (B,)
    not_done = (~dones.bool()).to(next_values.dtype)  # (B,)
    return (rewards.to(next_values.dtype) + gamma * not_done * next_values).detach()


def td_loss(q: Tensor, actions: Tensor, targets: Tensor, kind: Literal["huber", "mse"] = "huber") -> Tensor:
    """Mean TD error of the taken actions, ``l(Q(S_t, A_t) - Y_t)``.

    Args:
        q: ``(B, A)`` online Q-values ``Q(S_t, . ; Theta)``.
        actions: LongTensor ``(B,)``, ``A_t``.
        targets: ``(B,)`` ``Y_t`` from :func:`double_dqn_targets`.
        kind: ``"huber"`` (smooth L1 with ``beta = 1``: quadratic below 1, linear above,
            so rare large rewards cannot blow up the gradient; the DQN default) or ``"mse"``
            (squared error, the literal Eq. 4).
    Returns:
        Scalar loss.
    """
    q_taken = q.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)  # (B,)
    if kind == "huber":
        return F.smooth_l1_loss(q_taken, targets, beta=1.0)
    if kind == "mse":
        return F.mse_loss(q_taken, targets)
    raise ValueError(f"td_loss kind must be 'huber' or 'mse', got {kind!r}")


def _state_tensors(module: nn.Module) -> Iterator[tuple[str, Tensor]]:
    yield from module.named_parameters()
    yield from module.named_buffers()


@torch.no_grad()
def hard_update(target: nn.Module, online: nn.Module) -> None:
    """``Theta' <- Theta``: copy every parameter and buffer of ``online`` into ``target`` exactly."""
    polyak_update(target, online, tau=1.0)


@torch.no_grad()
def polyak_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """``Theta' <- (1 - tau) * Theta' + tau * Theta``, in place.

    Floating parameters and buffers (e.g. BatchNorm running statistics) are interpolated;
    integer buffers (``num_batches_tracked``) are copied. ``tau = 1`` is an exact copy
    (``torch.lerp`` is exact at its end points), ``tau = 0`` leaves the target unchanged.

    Args:
        target: the delayed network ``Theta'``.
        online: the network being trained ``Theta``; same architecture.
        tau: interpolation weight in ``[0, 1]``.
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must lie in [0, 1], got {tau}")
    target_tensors, online_tensors = dict(_state_tensors(target)), dict(_state_tensors(online))
    if target_tensors.keys() != online_tensors.keys():
        raise ValueError(
            f"target and online networks differ in tensors: {sorted(target_tensors.keys() ^ online_tensors.keys())}"
        )
    for name, target_tensor in target_tensors.items():
        online_tensor = online_tensors[name]
        if target_tensor.shape != online_tensor.shape:
            raise ValueError(
                f"target and online networks differ at {name!r}: {tuple(target_tensor.shape)} vs "
                f"{tuple(online_tensor.shape)}"
            )
        if target_tensor.is_floating_point():
            target_tensor.lerp_(online_tensor, tau)
        else:
            target_tensor.copy_(online_tensor)


@dataclass(frozen=True)
class LinearEpsilon:
    """Exploration rate falling linearly from ``start`` to ``end`` over ``steps`` steps, then constant.

    ``epsilon(step) = start + (end - start) * min(step / steps, 1)``, exactly ``start`` at
    step 0 and exactly ``end`` from step ``steps`` on. Pure function of the
    step, so it needs no checkpointing beyond its config.

    Args:
        start: epsilon at step 0.
        end: epsilon from step ``steps`` on.
        steps: length of the decay in training steps (0: ``end`` from the start).
    """

    start: float = 1.0
    end: float = 0.05
    steps: int = 10_000

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"steps must be non-negative, got {self.steps}")

    def __call__(self, step: int) -> float:
        # The end points are returned as given, not via the float interpolation.
        if step >= self.steps:
            return float(self.end)
        if step <= 0:
            return float(self.start)
        return float(self.start + (self.end - self.start) * (step / self.steps))


def ddqn_loss(
    q_network: nn.Module,
    target_network: nn.Module,
    batch: Mapping,
    gamma: float,
    loss_kind: Literal["huber", "mse"] = "huber",
) -> tuple[Tensor, dict[str, Tensor]]:
    """The DDQN loss on a replay batch, plus detached statistics for logging.

    Args:
        q_network: online ``Theta``: observation dict -> ``(N, A)``.
        target_network: delayed ``Theta'``, same signature.
        batch: a :meth:`ReplayBuffer.sample` dict (``obs``, ``actions``, ``rewards``,
            ``next_obs``, ``dones``).
        gamma: discount factor.
        loss_kind: see :func:`td_loss`.
    Returns:
        The scalar loss (with graph) and ``{"q/mean", "q/max", "q/target_mean"}``.
    """
    with torch.no_grad():
        next_q_online = q_network(batch["next_obs"])  # (N, A) picks a' (Eq. 5, inner argmax)
        next_q_target = target_network(batch["next_obs"])  # (N, A) evaluates a' (Eq. 5, Theta')
        targets = double_dqn_targets(
            batch["rewards"], batch["dones"], next_q_online, next_q_target, gamma
        )  # (N,)
    q = q_network(batch["obs"])  # (N, A)
    loss = td_loss(q, batch["actions"], targets, loss_kind)  # ()
    q_taken = q.detach().gather(-1, batch["actions"].long().unsqueeze(-1)).squeeze(-1)  # (N,)
    stats = {
        "q/mean": q_taken.mean(),
        "q/max": q.detach().max(dim=-1).values.mean(),
        "q/target_mean": targets.mean(),
    }
    return loss, stats


def ddqn_update(
    q_network: nn.Module,
    target_network: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Mapping,
    gamma: float,
    max_grad_norm: float | None = 10.0,
    loss_kind: Literal["huber", "mse"] = "huber",
) -> dict[str, Tensor]:
    """One gradient step of Eq. 4 on a replay batch (stage 2 of Sec. 3.4).

    Targets under ``no_grad`` -> TD loss -> backward -> clip the gradient norm ->
    optimiser step. The target network is not touched; call :func:`hard_update` or
    :func:`polyak_update` on the training loop's schedule.

    Args:
        q_network, target_network, batch, gamma, loss_kind: see :func:`ddqn_loss`.
        optimizer: optimiser over ``q_network``'s parameters.
        max_grad_norm: clip the global gradient L2 norm to this value (``None``: no clipping).
    Returns:
        Detached 0-dim tensors ``losses/td``, ``losses/grad_norm`` (before clipping),
        ``q/mean``, ``q/max``, ``q/target_mean``; left on the device so a step costs no
        synchronisation; ``float()`` them when logging.
    """
    loss, stats = ddqn_loss(q_network, target_network, batch, gamma, loss_kind)  # (), {...}
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    # An infinite limit measures the norm without changing the gradients (scale factor 1).
    limit = float("inf") if max_grad_norm is None else max_grad_norm
    grad_norm = torch.nn.utils.clip_grad_norm_(q_network.parameters(), limit)  # ()
    optimizer.step()
    return {"losses/td": loss.detach(), "losses/grad_norm": grad_norm.detach(), **stats}
