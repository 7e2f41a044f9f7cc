"""Q-value policies: greedy and epsilon-greedy."""

import pytest
import torch

from patchwork.policies import EpsilonGreedyPolicy, GreedyPolicy
from patchwork.rl import LinearEpsilon


def test_greedy_picks_argmax():
    q = torch.tensor([[0.1, 0.9, 0.3], [2.0, -1.0, 1.0], [0.0, 0.0, 5.0]])
    actions = GreedyPolicy().select(q, torch.zeros(3, dtype=torch.long))
    assert actions.dtype == torch.long
    assert torch.equal(actions, torch.tensor([1, 0, 2]))
    # Per-block decisions (BlockCopy-style): (B, K, A) -> (B, K).
    assert GreedyPolicy().select(q.view(1, 3, 3), torch.zeros(1, dtype=torch.long)).shape == (1, 3)


def test_epsilon_zero_is_greedy_and_one_is_uniform_random():
    q = torch.randn(6000, 4, generator=torch.Generator().manual_seed(0))
    steps = torch.zeros(6000, dtype=torch.long)
    greedy = GreedyPolicy().select(q, steps)
    assert torch.equal(EpsilonGreedyPolicy(0.0).select(q, steps, torch.Generator().manual_seed(5)), greedy)
    explored = EpsilonGreedyPolicy(1.0).select(q, steps, torch.Generator().manual_seed(5))
    counts = torch.bincount(explored, minlength=4)
    assert counts.numel() == 4 and int(counts.min()) > 1350  # all 4 actions, ~1500 each
    # Q-values that all favour action 0 still give every action under epsilon = 1.
    biased = torch.tensor([[9.0, 0.0, 0.0, 0.0]]).expand(400, 4)
    support = EpsilonGreedyPolicy(1.0).select(biased, steps[:400], torch.Generator().manual_seed(6)).unique()
    assert support.tolist() == [0, 1, 2, 3]


def test_epsilon_explores_per_stream_at_the_scheduled_rate():
    policy = EpsilonGreedyPolicy(LinearEpsilon(start=1.0, end=0.0, steps=10))
    policy.global_step = 7
    assert policy.current_epsilon == pytest.approx(0.3)
    q = torch.tensor([[0.0, 0.0, 0.0, 1.0]]).expand(8000, 4)  # greedy: action 3
    actions = policy.select(q, torch.zeros(8000, dtype=torch.long), torch.Generator().manual_seed(0))
    # Non-greedy with probability 0.3 * 3/4 = 0.225 -> 1800 of 8000, std ~37.
    assert 1600 < int((actions != 3).sum()) < 2000
    same = policy.select(q, torch.zeros(8000, dtype=torch.long), torch.Generator().manual_seed(0))
    assert torch.equal(actions, same)
    policy.global_step = 10
    assert policy.current_epsilon == 0.0
    assert torch.equal(policy.select(q, torch.zeros(8000, dtype=torch.long), None), torch.full((8000,), 3))


def test_q_policies_require_q_values():
    with pytest.raises(ValueError):
        GreedyPolicy().select(None, torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError):
        EpsilonGreedyPolicy(0.5).select(None, torch.zeros(1, dtype=torch.long))
