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


class _Segmenter:
    task = "segmentation"


class _Detector:
    task = "detection"


def _context(model, actions, predictions, previous, targets=()):
    from patchwork.rl import RewardContext

    frames = torch.zeros(actions.shape[0], 3, 4, 4)  # 2x2 blocks of 2 pixels
    return RewardContext(model, frames, actions, None, predictions, previous, list(targets))


def test_information_gain_reward_of_a_segmenter_hand_computed_and_its_running_cost():
    from patchwork.rl import InformationGainReward

    reward = InformationGainReward(target=0.5, gamma=5.0, momentum=0.9)
    previous = [{"scores": torch.full((4, 4), 0.5), "mask": torch.zeros(4, 4, dtype=torch.bool)}]
    scores = torch.full((4, 4), 0.5)
    scores[1, 0] = 0.8  # one changed pixel, in block (0, 0)
    now = [{"scores": scores, "mask": scores > 0.5}]
    actions = torch.tensor([[[True, False], [False, False]]])
    result = reward(_context(_Segmenter(), actions, now, previous))
    gain = 0.5 * (math.log(0.5) - math.log(0.2)) + 0.5 * (math.log(0.5) - math.log(0.8))  # KL([.5, .5] || [.2, .8])
    # C = M = 0.25 (the first frame starts the average): tau - M = 0.25, times gamma = 1.25.
    torch.testing.assert_close(result.rewards, torch.tensor([[[gain + 1.25, -1.25], [-1.25, -1.25]]]))
    assert torch.equal(result.quality, torch.zeros(1))  # no ground truth: nothing to measure
    # The average goes on over frames and clips; a batch of another size continues from its mean.
    reward(_context(_Segmenter(), torch.ones(1, 2, 2, dtype=torch.bool), now, now))
    torch.testing.assert_close(reward.cost_average, torch.tensor([0.1 * 1.0 + 0.9 * 0.25]))
    state = reward.state_dict()
    restored = InformationGainReward(target=0.5)
    restored.load_state_dict(state)
    both = torch.zeros(2, 2, 2, dtype=torch.bool)
    result = restored(_context(_Segmenter(), both, now * 2, now * 2))
    torch.testing.assert_close(restored.cost_average, torch.full((2,), 0.9 * 0.325))
    torch.testing.assert_close(result.rewards, torch.full((2, 2, 2), -5.0 * (0.5 - 0.9 * 0.325)))


def test_information_gain_reward_of_detections_looks_at_confident_boxes_and_reports_quality():
    from patchwork.rl import InformationGainReward

    reward = InformationGainReward(target=0.0, gamma=0.0, min_score=0.3)
    box = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    now = [{"boxes": torch.cat([box, box + 2]), "scores": torch.tensor([0.8, 0.2]), "labels": torch.tensor([0, 0])}]
    previous = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}]
    actions = torch.tensor([[[True, True], [False, True]]])
    result = reward(_context(_Detector(), actions, now, previous, [{"boxes": box, "labels": torch.tensor([0])}]))
    # A new detection gains its score in its box (block (0, 0)); the one below min_score is ignored.
    torch.testing.assert_close(result.rewards, torch.tensor([[[0.8, 0.0], [-0.0, 0.0]]]))
    torch.testing.assert_close(result.quality, torch.ones(1))  # the confident box is the ground truth
