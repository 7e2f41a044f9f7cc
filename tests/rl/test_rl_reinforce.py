"""REINFORCE: the loss, and convergence to hand-computed optima on bandits (one decision and many)."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from patchwork.policies import BernoulliPolicy, CategoricalPolicy
from patchwork.rl import Reinforce, Transition, reinforce_loss


def test_reinforce_loss_by_hand():
    log_probs = torch.tensor([[-0.5, -1.0], [-2.0, -0.25]])
    # Per-stream rewards are shared by a stream's decisions: streams -(1 * -1.5) = 1.5 and
    # -(-2 * -2.25) = -4.5, averaged over the two streams.
    assert reinforce_loss(log_probs, torch.tensor([1.0, -2.0])).item() == pytest.approx(-1.5)
    per_decision = torch.tensor([[1.0, 0.0], [0.5, 2.0]])  # streams 0.5 and -(-1.0 - 0.5) = 1.5
    assert reinforce_loss(log_probs, per_decision).item() == pytest.approx(1.0)
    assert reinforce_loss(log_probs, per_decision, "mean").item() == pytest.approx(0.5)  # (0.25 + 0.75) / 2


class Logits(nn.Module):
    """A stateless 'policy network': learnt logits, whatever the observation."""

    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(*shape))

    def forward(self, observation):
        return self.logits.expand(observation["x"].shape[0], *self.logits.shape)


def _play(learner, network, reward, frames: int, streams: int = 16) -> None:
    observation = {"x": torch.zeros(streams, 1)}
    for t in range(frames):
        scores = network(observation)
        actions = learner.behaviour.select(scores, torch.full((streams,), t), learner.generator)
        learner.observe(Transition(observation, actions, reward(actions), observation, torch.zeros(streams),
                                   scores, None))
        learner.update(t)


def test_reinforce_finds_the_best_arm_of_a_bandit():
    # Deterministic rewards of three arms: the optimum is arm 1 (reward 3 > 2 > 1).
    payoff = torch.tensor([1.0, 3.0, 2.0])
    network = Logits(3)
    learner = Reinforce(network, CategoricalPolicy(), partial(torch.optim.SGD, lr=0.05), update_every=1,
                        reduction="mean", generator=torch.Generator().manual_seed(0))
    _play(learner, network, lambda actions: payoff[actions], frames=600)
    probabilities = torch.softmax(network.logits.detach(), -1)
    assert probabilities.argmax().item() == 1 and probabilities[1] > 0.95


def test_reinforce_per_decision_rewards_learn_each_block_on_its_own():
    # Reward of block d: +value[d] when executed, 0 when not; the optimum executes exactly the
    # blocks of positive value: [True, False, True, False].
    value = torch.tensor([[1.0, -1.0], [0.5, -2.0]])
    network = Logits(2, 2)
    learner = Reinforce(network, BernoulliPolicy(), partial(torch.optim.SGD, lr=1.6), update_every=4,
                        generator=torch.Generator().manual_seed(0))
    _play(learner, network, lambda actions: actions.float() * value, frames=400)
    probabilities = torch.sigmoid(network.logits.detach())
    assert torch.equal(probabilities > 0.5, value > 0)
    assert (probabilities[value > 0] > 0.9).all() and (probabilities[value < 0] < 0.1).all()


def test_reinforce_steps_every_update_every_frames_and_flushes_at_the_end_of_a_clip():
    network = Logits(3)
    learner = Reinforce(network, CategoricalPolicy(), partial(torch.optim.SGD, lr=0.1), update_every=3)
    observation = {"x": torch.zeros(2, 1)}
    updates = []
    for t in range(4):
        scores = network(observation)
        learner.observe(Transition(observation, torch.tensor([0, 1]), torch.ones(2), observation, torch.zeros(2),
                                   scores, None))
        updates.append(bool(learner.update(t)))
    assert updates == [False, False, True, False]
    before = network.logits.detach().clone()
    assert learner.end_step(3)  # the fourth frame is learnt from at the clip's end
    assert not torch.equal(before, network.logits.detach()) and not learner.end_step(3)
