"""LFS Eq. 2: loss difference to the best extractor plus the speed bonus for f1."""

import pytest
import torch

from patchwork.rl import lfs_reward


def test_reward_on_hand_made_losses():
    losses = torch.tensor([[1.0, 3.0], [2.5, 0.5], [4.0, 4.0], [0.2, 0.7]])
    actions = torch.tensor([0, 0, 1, 1])
    # min - chosen (+ gamma for f1): 1-1, 0.5-2.5, 4-4+0.3, 0.2-0.7+0.3
    expected = torch.tensor([0.0, -2.0, 0.3, -0.2])
    torch.testing.assert_close(lfs_reward(losses, actions, gamma=0.3), expected, rtol=0, atol=1e-6)
    # The best choice earns 0 (plus the bonus when it is f1); gamma = 0 is the accuracy term alone.
    torch.testing.assert_close(lfs_reward(losses, losses.argmin(1), gamma=0.0), torch.zeros(4))


def test_reward_shapes_are_checked():
    with pytest.raises(ValueError):
        lfs_reward(torch.zeros(3), torch.zeros(3, dtype=torch.long), 1.0)
    with pytest.raises(ValueError):
        lfs_reward(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long), 1.0)
