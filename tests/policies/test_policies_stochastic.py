import math

import pytest
import torch

from patchwork.policies import BernoulliPolicy, CategoricalPolicy, Policy


def test_bernoulli_actions_are_bool_blocks_and_the_threshold_form_is_deterministic():
    # (A stream's first frame executes every block by the runner's first-action rule,
    # MultiBinary(first=True): tests/engine/test_engine_harness.py.)
    policy = BernoulliPolicy()
    assert isinstance(policy, Policy) and isinstance(CategoricalPolicy(), Policy)
    logits = torch.stack((torch.full((3, 4), -30.0), torch.full((3, 4), 30.0)))  # never / always sampled
    actions = policy.select(logits, torch.tensor([0, 5]), torch.Generator().manual_seed(0))
    assert actions.dtype == torch.bool and actions.shape == (2, 3, 4)
    assert not actions[0].any() and actions[1].all()
    half = torch.tensor([[[-0.1, 0.1]]])
    assert BernoulliPolicy(threshold=0.5).select(half, torch.zeros(1)).tolist() == [[[False, True]]]


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


def test_categorical_samples_follow_the_softmax_and_log_prob_is_exact():
    policy = CategoricalPolicy()
    logits = torch.log(torch.tensor([0.1, 0.6, 0.3])).expand(6000, 3)
    actions = policy.select(logits, torch.zeros(6000), torch.Generator().manual_seed(0))
    frequency = torch.bincount(actions, minlength=3).float() / 6000
    assert (frequency - torch.tensor([0.1, 0.6, 0.3])).abs().max() < 0.03
    assert CategoricalPolicy(greedy=True).select(logits[:2], torch.zeros(2)).tolist() == [1, 1]
    torch.testing.assert_close(CategoricalPolicy.log_prob(logits[:2], torch.tensor([0, 2])),
                               torch.log(torch.tensor([0.1, 0.3])))
