"""LFS's fixed and random interleaving policies."""

import pytest
import torch

from patchwork.policies import FixedInterleavingPolicy, Policy, RandomInterleavingPolicy


def test_fixed_schedule_runs_f0_exactly_every_tau_plus_one_frames():
    policy = FixedInterleavingPolicy(tau=9)
    actions = policy.select(None, torch.arange(25))
    assert actions.dtype == torch.long
    assert torch.nonzero(actions == 0).flatten().tolist() == [0, 10, 20]
    assert actions.sum() == 25 - 3
    # Each stream on its own clock.
    assert policy.select(None, torch.tensor([0, 3, 10, 19, 30])).tolist() == [0, 1, 0, 1, 0]
    assert FixedInterleavingPolicy(tau=2).select(None, torch.arange(7)).tolist() == [0, 1, 1, 0, 1, 1, 0]
    assert FixedInterleavingPolicy(tau=0).select(None, torch.arange(4)).tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError):
        FixedInterleavingPolicy(tau=-1)
    assert isinstance(policy, Policy) and not policy.needs_scores


def test_random_interleaving_rate_first_frame_and_reproducibility():
    policy = RandomInterleavingPolicy(p_f0=0.2)
    steps = torch.arange(1, 20001)
    generator = torch.Generator().manual_seed(0)
    actions = policy.select(None, steps, generator)
    assert abs((actions == 0).float().mean().item() - 0.2) < 0.01
    again = policy.select(None, steps, torch.Generator().manual_seed(0))
    assert torch.equal(actions, again)
    first = policy.select(None, torch.zeros(100, dtype=torch.long), generator)
    assert first.eq(0).all()
    free = RandomInterleavingPolicy(p_f0=0.0, f0_on_first_frame=False)
    assert free.select(None, torch.zeros(10, dtype=torch.long)).eq(1).all()
    assert RandomInterleavingPolicy(p_f0=1.0).select(None, steps[:50]).eq(0).all()
    with pytest.raises(ValueError):
        RandomInterleavingPolicy(p_f0=1.5)
