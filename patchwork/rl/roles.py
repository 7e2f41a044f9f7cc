"""The roles a policy-learning stage is built from: transitions, rewards and learners.

The Markov decision process the three methods share (Chai 2019, Sec. 3.3; Liu et al. 2019,
Sec. 3.4; Verelst and Tuytelaars 2021, Sec. 3.3): after frame ``t`` the policy reads the
model's observation ``S_t`` and chooses ``A_{t+1}``, the action frame ``t + 1`` runs
under; the reward ``R_{t+1}`` scores what that action did. One :class:`Transition` per
frame carries ``(S_t, A_{t+1}, R_{t+1}, S_{t+1})``.

A **reward** is an object the stage is given (Patchwork's quality gain, LFS's loss
difference, BlockCopy's information gain), called once per frame with a
:class:`RewardContext`. A **learner** (Double DQN with replay, REINFORCE) acts through its
behaviour policy, observes transitions, updates the policy network and checkpoints through
``state_dict``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

Prediction = dict[str, Tensor]


@dataclass
class RewardContext:
    """What a reward may read about one frame of ``B`` streams.

    Attributes:
        model: the streaming model.
        frames: ``(B, 3, H, W)`` the frame, as the model got it.
        actions: ``A_{t+1}``, the actions it ran under (``None`` without an action space).
        out: the model's step output.
        predictions: the frame's predictions (decoded above the reward's ``min_score``).
        previous: the previous frame's predictions (the model's empty prediction at a clip's start).
        targets: ``B`` per-frame ground truths.
        state_before: the model state the frame started from (a reward that reruns the
            frame under other actions, as LFS's does, starts from it). Only valid for a model
            whose step leaves its input state intact (LFS's does; Patchwork's cells write their
            memories in place under ``torch.no_grad()``).
    """

    model: Any
    frames: Tensor
    actions: Tensor | None
    out: Any
    predictions: list[Prediction]
    previous: list[Prediction]
    targets: list[dict[str, Tensor]]
    state_before: Any = None


@dataclass
class RewardResult:
    """``rewards``: ``(B,)`` or per decision ``(B, *action_shape)``; ``quality``: ``(B,)``, the task
    measure of the frame's predictions, for logging and validation."""

    rewards: Tensor
    quality: Tensor


class Reward(Protocol):
    """Scores one frame's action. ``min_score``: the detections it looks at (``None``: all)."""

    min_score: float | None

    def __call__(self, context: RewardContext) -> RewardResult: ...


@dataclass
class Transition:
    """One frame of ``B`` streams: ``(S_t, A_{t+1}, R_{t+1}, S_{t+1})``.

    Attributes:
        obs: ``S_t``, detached copies (``None`` at a clip's first frame, when no policy chose).
        actions: ``A_{t+1}``, what the frame ran under.
        rewards: ``R_{t+1}``, ``(B,)`` or per decision.
        next_obs: ``S_{t+1}``, detached copies (``None`` for a model without observation).
        quality: ``(B,)`` the reward's task measure of the frame.
        scores: the policy network's scores on ``S_t`` that chose ``actions`` (with a graph
            when the learner asked for one), ``None`` at a clip's first frame.
        out: the model's step output.
    """

    obs: dict[str, Tensor] | None
    actions: Tensor | None
    rewards: Tensor
    next_obs: dict[str, Tensor] | None
    quality: Tensor
    scores: Tensor | None
    out: Any


class Learner(Protocol):
    """Improves a policy network from transitions.

    Attributes:
        behaviour: the policy that acts during training rollouts (e.g. epsilon-greedy).
        generator: the RNG of that policy and of the learner (checkpointed with it).
        needs_score_graph: whether :attr:`Transition.scores` must carry a graph (on-policy
            gradient learners); otherwise the rollout computes scores without one.
        evaluation_policy: what validation and evaluation act with (greedy for DQN).
    """

    behaviour: Any
    evaluation_policy: Any
    generator: torch.Generator
    needs_score_graph: bool

    def start(self, step: int) -> None:
        """Called before each training step (e.g. to set the exploration schedule's step)."""

    def observe(self, transition: Transition) -> None:
        """Take one frame's transition (replay, or the on-policy loss terms)."""

    def update(self, step: int) -> dict[str, float]:
        """Learn after a frame, if due; returns logged statistics (``{}`` when nothing was done)."""

    def end_step(self, step: int) -> dict[str, float]:
        """Learn from what is left at the end of a training step (a clip); nothing stays pending."""

    @property
    def stats(self) -> dict[str, float]:
        """Charts of the learner's own state (e.g. ``charts/epsilon``)."""

    def without_replay(self) -> dict[str, Any]:
        """:meth:`state_dict` without what only a stage in progress needs (the replay buffer)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
