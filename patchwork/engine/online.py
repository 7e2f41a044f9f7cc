"""A policy that keeps learning while it acts: BlockCopy's online protocol (Verelst and Tuytelaars 2021,
Sec. 3.2 and 4: the policy, initialised on training clips, goes on learning from the information gain
of the test videos as they stream; the task network never changes).

:class:`OnlineLearning` is a policy for the stream runner (:mod:`patchwork.engine.runner`): it acts with
its learner's behaviour policy, and after every frame the runner hands it the step, from which it
builds the frame's transition with its reward (no ground truth) and lets the learner update as due.
So streaming evaluation, cost and latency run the online method through the same loop as any
other, and a frozen policy is just the learner's evaluation policy::

    online = OnlineLearning(learner, reward)
    evaluate_streams(model, data, online)          # learns while it streams
    evaluate_streams(model, data, learner.evaluation_policy)   # frozen
"""

from __future__ import annotations

import os
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor

from patchwork.engine.checkpoint import load_checkpoint
from patchwork.engine.rollout import frame_transition
from patchwork.engine.runner import RunnerStep
from patchwork.models.streaming import Prediction, StreamingModel
from patchwork.rl.roles import Learner, Reward


class OnlineLearning:
    """The learner's behaviour policy, updating the policy network from the frames it acts on.

    Args:
        learner: e.g. :class:`~patchwork.rl.Reinforce` on the model's policy network.
        reward: e.g. :class:`~patchwork.rl.InformationGainReward` (reads no ground truth).
        label: the policy's name in tables.

    Each batch of streams restarting at frame 0 first flushes what the learner still holds
    (``end_step``). Steps count frames, which is what the learner's ``update`` is told.
    """

    needs_scores = True

    def __init__(self, learner: Learner, reward: Reward, label: str = "Online") -> None:
        self.learner = learner
        self.reward = reward
        self.label = label
        self.frames_seen = 0
        self._previous: list[Prediction] | None = None
        self.stats: list[dict[str, float]] = []

    @property
    def needs_score_graph(self) -> bool:
        return self.learner.needs_score_graph

    def select(self, scores: Tensor | None, steps: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.learner.behaviour.select(scores, steps, generator)

    def observe_step(self, model: StreamingModel, frames: Tensor, step: RunnerStep, t: int) -> None:
        """Learn from frame ``t`` of the runner's streams (``t = 0``: a new batch of videos starts)."""
        if t == 0:
            self._flush()
            image_size = (frames.shape[-2], frames.shape[-1])
            self._previous = [model.empty_prediction(image_size, frames.device)] * frames.shape[0]
        transition, self._previous = frame_transition(model, self.reward, frames, step, self._previous, [])
        self.learner.observe(transition)
        stats = self.learner.update(self.frames_seen)
        if stats:
            self.stats.append(stats)
        self.frames_seen += 1

    def _flush(self) -> None:
        stats = self.learner.end_step(self.frames_seen)
        if stats:
            self.stats.append(stats)

    def state_dict(self) -> dict[str, Any]:
        """The learner's and the reward's state (the policy network's weights are the model's)."""
        reward = getattr(self.reward, "state_dict", None)
        return {"learner": self.learner.state_dict(), "reward": None if reward is None else reward(),
                "frames_seen": self.frames_seen}

    def __repr__(self) -> str:
        return f"OnlineLearning({self.learner.behaviour!r}, {self.reward!r})"


def online_policy_from_checkpoint(model: StreamingModel, path: str | os.PathLike[str], seed: int = 0) -> OnlineLearning:
    """The online policy of a policy stage's checkpoint, continuing where that stage ended.

    The learner and the reward are rebuilt from the checkpoint's own config (``learner``, ``reward``,
    the stage's learner optimiser) on ``model``'s policy network (load the checkpoint's weights into
    ``model`` first, e.g. with :func:`~patchwork.engine.loading.load_model`), and their states (the
    optimiser, the running cost) restored from it.

    Args:
        model: the checkpoint's model, weights loaded.
        path: a checkpoint written by :class:`~patchwork.engine.stages.PolicyStage`.
        seed: seeds the learner's generator (the behaviour policy's coins come from the runner's).
    """
    payload = load_checkpoint(path, map_location="cpu")
    config = OmegaConf.create(payload["config"])
    stage = instantiate(config.stage[payload["stage"]])
    learner = instantiate(config.learner)(network=model.policy_network, optimizer=stage.learner_optimizer(config),
                                          generator=torch.Generator().manual_seed(int(seed)))
    reward = instantiate(config.reward)
    states = payload.get("learners", {})
    learner.load_state_dict(states["policy"])
    if "reward" in states:
        reward.load_state_dict(states["reward"])
    return OnlineLearning(learner, reward)
