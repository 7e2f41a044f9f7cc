"""Double DQN with experience replay as a learner (van Hasselt et al. 2016; Chai 2019, Sec. 3.3, Eq. 4-5;
Liu et al. 2019, Sec. 3.4 and Algorithm 1).

Every frame's transition goes into the replay buffer and is followed by one gradient step on
a uniformly sampled batch, once ``warmup`` transitions are stored; the target network follows
the online one by hard copies every ``target_every`` training steps or by Polyak averaging.
The policy network may be any ``observation dict -> (N, A)`` module of a ``Discrete`` action space.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import nn

from patchwork.policies import EpsilonGreedyPolicy, GreedyPolicy
from patchwork.rl.ddqn import ddqn_loss, hard_update, polyak_update
from patchwork.rl.replay_buffer import ReplayBuffer
from patchwork.rl.roles import Transition

GradientReduction = Callable[[list[nn.Parameter]], None]


def apply_gradients(
    optimizer: torch.optim.Optimizer,
    parameters: list[nn.Parameter],
    max_grad_norm: float | None,
    reduce_gradients: GradientReduction | None,
) -> torch.Tensor:
    """After ``backward``: reduce the gradients across processes, clip their norm, step; returns
    the norm before clipping (an infinite limit measures it without changing the gradients)."""
    if reduce_gradients is not None:
        reduce_gradients(parameters)
    limit = float("inf") if max_grad_norm is None else max_grad_norm
    grad_norm = torch.nn.utils.clip_grad_norm_(parameters, limit)
    optimizer.step()
    return grad_norm


class DoubleDQN:
    """The Double DQN learner.

    Args:
        network: the online Q-network ``Theta`` (the model's policy network, trained in place).
        optimizer: ``parameters -> torch.optim.Optimizer`` (e.g. a partial Adam with its lr).
        epsilon: the exploration schedule ``training step -> epsilon`` (or a constant).
        gamma: discount factor.
        batch_size: transitions per update.
        warmup: transitions in the buffer before the first update.
        replay_capacity: the buffer's size (allocated from the first observation's shapes).
        target_update: ``"hard"`` (copy every ``target_every`` steps) or ``"polyak"`` (factor ``tau``).
        max_grad_norm: gradient clipping (``None``: none; the norm is logged either way).
        generator: RNG of exploration and replay sampling (seed it; it is checkpointed with the RNG states).
        reduce_gradients: called on the network's parameters after ``backward`` (data
            parallelism: an all-reduce); ``None`` on one process.
        loss_kind: ``"huber"`` or ``"mse"`` TD loss.
    """

    needs_score_graph = False

    def __init__(
        self,
        network: nn.Module,
        optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
        epsilon: float | Callable[[int], float],
        gamma: float = 0.9,
        batch_size: int = 64,
        warmup: int = 256,
        replay_capacity: int = 5000,
        target_update: Literal["hard", "polyak"] = "hard",
        target_every: int = 500,
        tau: float = 0.005,
        max_grad_norm: float | None = 10.0,
        generator: torch.Generator | None = None,
        reduce_gradients: GradientReduction | None = None,
        loss_kind: Literal["huber", "mse"] = "huber",
    ) -> None:
        if target_update not in ("hard", "polyak"):
            raise ValueError(f"target_update must be 'hard' or 'polyak', got {target_update!r}")
        self.network = network
        self.target = copy.deepcopy(network).requires_grad_(False)
        self.optimizer = optimizer(network.parameters())
        self.behaviour = EpsilonGreedyPolicy(epsilon)
        #: What validation and evaluation act with: greedy on the learnt Q-values.
        self.evaluation_policy = GreedyPolicy()
        self.gamma = float(gamma)
        self.batch_size = int(batch_size)
        self.warmup = int(warmup)
        self.replay_capacity = int(replay_capacity)
        self.target_update = target_update
        self.target_every = int(target_every)
        self.tau = float(tau)
        self.max_grad_norm = max_grad_norm
        self.generator = generator if generator is not None else torch.Generator()
        self.reduce_gradients = reduce_gradients
        self.loss_kind = loss_kind
        self.replay: ReplayBuffer | None = None

    def start(self, step: int) -> None:
        """The exploration schedule is a function of the training step."""
        self.behaviour.global_step = step

    def observe(self, transition: Transition) -> None:
        """Store ``(S_t, A_{t+1}, R_{t+1}, S_{t+1})`` of every stream (nothing at a clip's first frame)."""
        if transition.next_obs is None:
            raise ValueError("DoubleDQN needs a model with an observation (observe returned None)")
        if self.replay is None:
            # The observation shapes depend on the image size: allocate from the first one.
            spec = {name: (tuple(value.shape[1:]), value.dtype) for name, value in transition.next_obs.items()}
            self.replay = ReplayBuffer(self.replay_capacity, spec, device="cpu",
                                       action_shape=tuple(transition.actions.shape[1:]))
        if transition.obs is not None:
            dones = torch.zeros(transition.rewards.shape[0], dtype=torch.bool)
            self.replay.add(transition.obs, transition.actions, transition.rewards, transition.next_obs, dones)

    def update(self, step: int) -> dict[str, float]:
        """One DDQN gradient step from the buffer (nothing before ``warmup`` transitions)."""
        if self.replay is None or len(self.replay) < max(self.warmup, self.batch_size):
            return {}
        device = next(self.network.parameters()).device
        batch = self.replay.sample(self.batch_size, self.generator)
        batch = {k: ({n: t.to(device) for n, t in v.items()} if isinstance(v, dict) else v.to(device))
                 for k, v in batch.items()}
        with torch.enable_grad():
            loss, stats = ddqn_loss(self.network, self.target, batch, self.gamma, self.loss_kind)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        grad_norm = apply_gradients(self.optimizer, list(self.network.parameters()), self.max_grad_norm,
                                    self.reduce_gradients)
        if self.target_update == "polyak":
            polyak_update(self.target, self.network, self.tau)
        elif (step + 1) % self.target_every == 0:
            hard_update(self.target, self.network)
        stats = {"losses/td": loss.detach(), "losses/grad_norm": grad_norm.detach(), **stats}
        return {k: float(v) for k, v in stats.items()}

    def end_step(self, step: int) -> dict[str, float]:
        """Nothing waits for the end of a clip: every frame was learnt from."""
        return {}

    @property
    def stats(self) -> dict[str, float]:
        """Charts of the learner's own state."""
        return {"charts/epsilon": self.behaviour.current_epsilon,
                "charts/replay_size": float(len(self.replay)) if self.replay is not None else 0.0}

    def state_dict(self) -> dict[str, Any]:
        """Target network, optimiser and replay buffer (the generator goes with the RNG states)."""
        return {"target": self.target.state_dict(), "optimizer": self.optimizer.state_dict(),
                "replay": None if self.replay is None else self.replay.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.replay = None if state["replay"] is None else ReplayBuffer.from_state_dict(state["replay"])

    def without_replay(self) -> dict[str, Any]:
        """:meth:`state_dict` without the buffer (a finished stage's checkpoint need not keep it)."""
        return {**self.state_dict(), "replay": None}
