"""REINFORCE with per-decision rewards (Williams 1992), online: the learner of BlockCopy's policy
(Verelst and Tuytelaars 2021, Sec. 3.3, Eq. 12).

Each frame contributes ``-sum_d R_d log pi(a_d | S)`` over each stream's decisions ``d`` (one
for a ``Discrete`` space, one per block for ``MultiBinary``; a per-stream reward is shared by a
stream's decisions), averaged over streams, and every ``update_every`` frames the accumulated
loss takes one optimiser step. ``reduction="mean"`` averages over a stream's decisions instead
of summing (the official BlockCopy code's choice). The policy network's scores must carry their graph
(``needs_score_graph``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from patchwork.rl.dqn_learner import GradientReduction, apply_gradients
from patchwork.rl.roles import Transition


def reinforce_loss(log_probs: Tensor, rewards: Tensor, reduction: Literal["sum", "mean"] = "sum") -> Tensor:
    """BlockCopy's Eq. 12: ``-sum_d R_d log pi(a_d | S)`` over a stream's decisions, averaged over streams.

    Args:
        log_probs: ``(B, *decisions)`` log-probabilities of the actions taken (differentiable).
        rewards: ``(B,)`` per stream (shared by its decisions) or ``(B, *decisions)`` per decision
            (no gradient flows into it).
        reduction: ``"sum"`` over a stream's decisions (the paper), or ``"mean"`` over them (the
            authors' code, which makes the learning rate independent of the block count).
    Returns:
        A scalar.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    rewards = rewards.detach().to(log_probs.dtype)
    while rewards.dim() < log_probs.dim():
        rewards = rewards.unsqueeze(-1)
    terms = -(rewards.expand_as(log_probs) * log_probs).reshape(log_probs.shape[0], -1)  # (B, decisions)
    return (terms.sum(1) if reduction == "sum" else terms.mean(1)).mean()


class Reinforce:
    """The REINFORCE learner.

    Args:
        network: the policy network (the model's), trained in place.
        policy: the stochastic behaviour policy with ``log_prob(scores, actions)`` (e.g.
            :class:`~patchwork.policies.BernoulliPolicy`).
        optimizer: ``parameters -> torch.optim.Optimizer`` (BlockCopy: RMSprop, lr 1e-4, weight decay 1e-3).
        update_every: frames per optimiser step (BlockCopy: 4).
        reduction: ``"sum"`` (the paper's Eq. 12) or ``"mean"`` over decisions.
        max_grad_norm: gradient clipping (``None``: none).
        generator: RNG of the behaviour policy (checkpointed with the RNG states).
        reduce_gradients: called on the parameters after ``backward`` (data parallelism).
    """

    needs_score_graph = True

    def __init__(
        self,
        network: nn.Module,
        policy: Any,
        optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
        update_every: int = 4,
        reduction: Literal["sum", "mean"] = "sum",
        max_grad_norm: float | None = None,
        generator: torch.Generator | None = None,
        reduce_gradients: GradientReduction | None = None,
    ) -> None:
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        if update_every < 1:
            raise ValueError(f"update_every must be >= 1, got {update_every}")
        self.network = network
        self.behaviour = policy
        #: What validation and evaluation act with: the stochastic policy itself (BlockCopy samples at test time too).
        self.evaluation_policy = policy
        self.optimizer = optimizer(network.parameters())
        self.update_every = int(update_every)
        self.reduction = reduction
        self.max_grad_norm = max_grad_norm
        self.generator = generator if generator is not None else torch.Generator()
        self.reduce_gradients = reduce_gradients
        self._pending: list[Tensor] = []
        self._rewards: list[Tensor] = []

    def start(self, step: int) -> None:
        """Nothing to schedule."""

    def observe(self, transition: Transition) -> None:
        """Add the frame's loss terms (none at a clip's first frame, where no policy chose)."""
        if transition.scores is None:
            return
        if not transition.scores.requires_grad:
            raise RuntimeError("Reinforce needs the scores' graph: compute them with gradients (needs_score_graph)")
        with torch.enable_grad():
            log_probs = self.behaviour.log_prob(transition.scores, transition.actions)
            self._pending.append(reinforce_loss(log_probs, transition.rewards.to(log_probs.device), self.reduction))
        self._rewards.append(transition.rewards.detach().float().mean())

    def update(self, step: int) -> dict[str, float]:
        """One optimiser step on the accumulated frames once ``update_every`` have been observed."""
        if len(self._pending) < self.update_every:
            return {}
        return self.optimize()

    def end_step(self, step: int) -> dict[str, float]:
        """At the end of a clip: learn from the frames left over (none is carried into the next clip,
        so a checkpoint taken between clips loses nothing)."""
        return self.optimize() if self._pending else {}

    def optimize(self) -> dict[str, float]:
        """The backward pass of the accumulated loss terms and one optimiser step (what :meth:`update`
        runs when due and :meth:`end_step` at a clip's end); the loss, gradient norm and mean reward."""
        with torch.enable_grad():
            loss = torch.stack(self._pending).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        grad_norm = apply_gradients(self.optimizer, list(self.network.parameters()), self.max_grad_norm,
                                    self.reduce_gradients)
        reward = torch.stack(self._rewards).mean()
        self._pending.clear()
        self._rewards.clear()
        return {"losses/policy": float(loss.detach()), "losses/grad_norm": float(grad_norm), "rewards/policy": float(reward)}

    @property
    def stats(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The optimiser (no loss term is pending between clips, see :meth:`end_step`)."""
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])

    def without_replay(self) -> dict[str, Any]:
        return self.state_dict()
