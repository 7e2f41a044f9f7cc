"""Double DQN targets, TD loss, target-network updates, epsilon schedule and one full update."""

import pytest
import torch
from torch import nn

from patchwork.rl import (
    LinearEpsilon,
    ReplayBuffer,
    ddqn_loss,
    ddqn_update,
    double_dqn_targets,
    hard_update,
    polyak_update,
    td_loss,
)


def test_double_dqn_target_differs_from_vanilla_dqn():
    rewards = torch.tensor([0.5, 0.5])
    dones = torch.tensor([False, True])
    next_q_online = torch.tensor([[1.0, 3.0, 2.0], [1.0, 3.0, 2.0]])  # online argmax: action 1
    next_q_target = torch.tensor([[5.0, 1.0, 4.0], [5.0, 1.0, 4.0]])  # target argmax: action 0
    targets = double_dqn_targets(rewards, dones, next_q_online, next_q_target, gamma=0.9)
    # Row 0: 0.5 + 0.9 * Q_target(s', 1) = 0.5 + 0.9 * 1 = 1.4;
    # vanilla DQN would use max_a Q_target(s', a) = 5: 0.5 + 0.9 * 5 = 5.0.
    # Row 1: terminal, no bootstrap: 0.5.
    assert torch.allclose(targets, torch.tensor([1.4, 0.5]))
    vanilla = rewards + 0.9 * (~dones).float() * next_q_target.max(dim=1).values
    assert torch.allclose(vanilla, torch.tensor([5.0, 0.5]))
    assert not torch.allclose(targets, vanilla)


def test_targets_are_detached():
    next_q = torch.ones(2, 3, requires_grad=True)
    targets = double_dqn_targets(torch.zeros(2), torch.zeros(2, dtype=torch.bool), next_q, next_q * 2, 0.5)
    assert not targets.requires_grad
    assert torch.equal(targets, torch.ones(2))


def test_td_loss_values():
    q = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    actions = torch.tensor([1, 0])
    targets = torch.tensor([2.5, 3.0])
    # Errors 0.5 and 2: Huber 0.5 * 0.5**2 = 0.125 and 2 - 0.5 = 1.5, mean 0.8125.
    assert float(td_loss(q, actions, targets, "huber")) == pytest.approx(0.8125)
    # MSE (0.25 + 4) / 2 = 2.125.
    assert float(td_loss(q, actions, targets, "mse")) == pytest.approx(2.125)
    with pytest.raises(ValueError):
        td_loss(q, actions, targets, "l1")


def net_with_constant(value: float) -> nn.Module:
    net = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    with torch.no_grad():
        for tensor in [*net.parameters(), net[1].running_mean, net[1].running_var]:
            tensor.fill_(value)
    net[1].num_batches_tracked.fill_(int(value * 10))
    return net


def test_polyak_update_exact_values():
    target, online = net_with_constant(0.0), net_with_constant(1.0)
    polyak_update(target, online, tau=0.25)
    for tensor in [*target.parameters(), target[1].running_mean, target[1].running_var]:
        assert torch.equal(tensor, torch.full_like(tensor, 0.25))
    assert int(target[1].num_batches_tracked) == 10  # integer buffer copied
    polyak_update(target, online, tau=0.0)
    assert torch.equal(target[0].weight, torch.full((3, 2), 0.25))
    with pytest.raises(ValueError):
        polyak_update(target, online, tau=1.5)


def test_hard_update_and_tau_one_copy_exactly():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    online(torch.randn(4, 2))  # non-trivial running statistics
    for update in (hard_update, lambda t, o: polyak_update(t, o, tau=1.0)):
        target = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
        update(target, online)
        for (name, a), b in zip(target.state_dict().items(), online.state_dict().values()):
            assert torch.equal(a, b), name


def test_update_rejects_different_architectures():
    with pytest.raises(ValueError):
        hard_update(nn.Linear(2, 3), nn.Linear(3, 2))
    with pytest.raises(ValueError):
        hard_update(nn.Sequential(nn.Linear(2, 3)), nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 3)))


def test_linear_epsilon_schedule():
    schedule = LinearEpsilon(start=1.0, end=0.1, steps=100)
    assert schedule(0) == 1.0
    assert schedule(50) == pytest.approx(0.55)
    assert schedule(100) == 0.1
    assert schedule(10_000) == 0.1
    assert LinearEpsilon(0.5, 0.0, 0)(0) == 0.0


class DictQNet(nn.Module):
    """Q(s) = W s for an observation dict with one entry "x" (N, 2) -> (N, 2)."""

    def __init__(self, weight):
        super().__init__()
        self.linear = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor(weight))

    def forward(self, obs):
        return self.linear(obs["x"])


def hand_batch():
    return {
        "obs": {"x": torch.tensor([[1.0, 0.0]])},
        "actions": torch.tensor([0]),
        "rewards": torch.tensor([0.0]),
        "next_obs": {"x": torch.tensor([[0.5, 1.0]])},
        "dones": torch.tensor([False]),
    }


def test_ddqn_loss_by_hand():
    online = DictQNet([[1.0, 0.0], [0.0, 1.0]])  # Q(s') = (0.5, 1.0): picks action 1
    target = DictQNet([[4.0, 0.0], [0.0, 1.0]])  # Q'(s') = (2.0, 1.0): evaluates action 1 -> 1.0
    loss, stats = ddqn_loss(online, target, hand_batch(), gamma=0.5)
    # Y = 0 + 0.5 * 1.0 = 0.5; Q(s, 0) = 1.0; Huber(0.5) = 0.125.
    assert float(loss.detach()) == pytest.approx(0.125)
    assert float(stats["q/target_mean"]) == pytest.approx(0.5)
    assert float(stats["q/mean"]) == pytest.approx(1.0)
    assert float(stats["q/max"]) == pytest.approx(1.0)


def test_ddqn_update_clips_gradient_and_leaves_target_alone():
    online = DictQNet([[1.0, 0.0], [0.0, 1.0]])
    target = DictQNet([[4.0, 0.0], [0.0, 1.0]])
    before = online.linear.weight.detach().clone()
    optimizer = torch.optim.SGD(online.parameters(), lr=1.0)
    stats = ddqn_update(online, target, optimizer, hand_batch(), gamma=0.5, max_grad_norm=1e-3)
    # Huber gradient d/dQ = 0.5 on W[0] . s = W[0, 0]: grad norm 0.5 before clipping.
    assert float(stats["losses/grad_norm"]) == pytest.approx(0.5)
    assert float(stats["losses/td"]) == pytest.approx(0.125)
    step = online.linear.weight.detach() - before
    assert float(step.norm()) == pytest.approx(1e-3, rel=1e-4)  # SGD lr 1: the clipped norm
    assert float(step[0, 0]) < 0  # Q(s, 0) = 1 moves down towards Y = 0.5
    assert torch.equal(target.linear.weight, torch.tensor([[4.0, 0.0], [0.0, 1.0]]))


def test_ddqn_learns_a_bandit_from_the_replay_buffer():
    # One state, two actions, action 1 pays 1, action 0 pays 0, every transition terminal:
    # Q must converge to (0, 1), so the greedy action becomes 1.
    torch.manual_seed(0)
    buffer = ReplayBuffer(64, {"x": ((2,), torch.float32)})
    obs = {"x": torch.ones(32, 2)}
    actions = torch.arange(32) % 2
    buffer.add(obs, actions, actions.float(), obs, torch.ones(32, dtype=torch.bool))
    online, target = DictQNet([[0.0, 0.0], [0.0, 0.0]]), DictQNet([[0.0, 0.0], [0.0, 0.0]])
    optimizer = torch.optim.Adam(online.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(0)
    for step in range(200):
        ddqn_update(online, target, optimizer, buffer.sample(16, generator), gamma=0.9)
        if step % 10 == 0:
            hard_update(target, online)
    q = online({"x": torch.ones(1, 2)})[0]
    assert torch.allclose(q, torch.tensor([0.0, 1.0]), atol=0.05)
