import math

import pytest
import torch

from patchwork.policies import BernoulliPolicy, Policy


def test_first_frame_executes_every_block_and_later_frames_sample():
    policy = BernoulliPolicy()
    assert isinstance(policy, Policy)
    logits = torch.full((2, 3, 4), -30.0)  # probability ~1e-13: never sampled
    actions = policy.select(logits, torch.tensor([0, 5]), torch.Generator().manual_seed(0))
    assert actions.dtype == torch.bool and actions.shape == (2, 3, 4)
    assert actions[0].all() and not actions[1].any()


def test_sampling_is_seeded_and_follows_the_sigmoid():
    policy = BernoulliPolicy()
    logits = torch.tensor([math.log(0.2 / 0.8), 0.0, 30.0]).view(1, 1, 3).expand(4000, 1, 3)
    steps = torch.ones(4000, dtype=torch.long)
    a = policy.select(logits, steps, torch.Generator().manual_seed(3))
    b = policy.select(logits, steps, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    frequency = a.float().mean(dim=(0, 1))
    # 4000 draws: standard deviation <= 0.008; a 5-sigma band.
    assert abs(frequency[0] - 0.2) < 0.04 and abs(frequency[1] - 0.5) < 0.04 and frequency[2] == 1.0
    with pytest.raises(ValueError, match="logits"):
        policy.select(None, steps)


def test_log_prob_hand_computed_and_differentiable():
    logits = torch.tensor([[[0.0, math.log(3.0)]]], requires_grad=True)  # p = 0.5, 0.75
    actions = torch.tensor([[[True, False]]])
    log_prob = BernoulliPolicy.log_prob(logits, actions)
    torch.testing.assert_close(log_prob, torch.tensor([[[math.log(0.5), math.log(0.25)]]]))
    log_prob.sum().backward()
    torch.testing.assert_close(logits.grad, torch.tensor([[[0.5, -0.75]]]))
