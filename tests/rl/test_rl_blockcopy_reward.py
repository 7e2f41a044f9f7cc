import math

import pytest
import torch

from patchwork.rl import reinforce_loss
from patchwork.rl.blockcopy_reward import blockcopy_rewards, execution_cost, running_cost


def test_cost_and_its_moving_average():
    actions = torch.tensor([[[True, False], [False, False]], [[True, True], [True, True]]])
    cost = execution_cost(actions)
    assert torch.equal(cost, torch.tensor([0.25, 1.0]))
    average = running_cost(cost)  # the first frame starts the average
    assert torch.equal(average, cost)
    average = running_cost(torch.tensor([1.0, 0.0]), average, momentum=0.9)
    torch.testing.assert_close(average, torch.tensor([0.1 + 0.9 * 0.25, 0.9]))


def test_reward_signs_information_gain_and_cost_term_hand_computed():
    ig = torch.tensor([[[0.5, 0.0]], [[0.5, 0.0]]])
    actions = torch.tensor([[[True, False]], [[True, False]]])
    cost_average = torch.tensor([0.2, 0.5])  # below and above tau = 0.3
    rewards = blockcopy_rewards(ig, actions, cost_average, target=0.3, gamma=5.0)
    # Stream 0: tau - M = 0.1: executed 0.5 + 0.5, skipped -(0 + 0.5). Stream 1: tau - M = -0.2.
    torch.testing.assert_close(rewards, torch.tensor([[[1.0, -0.5]], [[-0.5, 1.0]]]))
    squared = blockcopy_rewards(ig, actions, cost_average, target=0.3, gamma=5.0, cost_term="signed_square")
    torch.testing.assert_close(squared, torch.tensor([[[0.55, -0.05]], [[0.3, 0.2]]]))
    with pytest.raises(ValueError, match="tau"):
        blockcopy_rewards(ig, actions, cost_average, target=1.5)


def test_reinforce_loss_sum_and_mean_and_its_gradient():
    logits = torch.tensor([[[1.0, -1.0]]], requires_grad=True)
    actions = torch.tensor([[[True, False]]])
    log_probs = torch.where(actions, torch.nn.functional.logsigmoid(logits), torch.nn.functional.logsigmoid(-logits))
    rewards = torch.tensor([[[1.0, -0.5]]])
    loss = reinforce_loss(log_probs, rewards)
    s = 1 / (1 + math.exp(-1.0))  # both actions have probability sigmoid(1)
    expected = -(1.0 * math.log(s) - 0.5 * math.log(s))
    assert loss.item() == pytest.approx(expected)
    assert reinforce_loss(log_probs, rewards, reduction="mean").item() == pytest.approx(expected / 2)
    loss.backward()
    # Executed: d/dl [-R log sigmoid(l)] = -R (1 - sigmoid(l)) at l = 1, R = 1.
    # Skipped: d/dl [-R log sigmoid(-l)] = R (1 - sigmoid(-l)) at l = -1, R = -0.5.
    torch.testing.assert_close(logits.grad, torch.tensor([[[-(1 - s), -0.5 * (1 - s)]]]))
