"""The Policy protocol and the package's exports."""

from patchwork.nn import ActionHistory as NnActionHistory
from patchwork.nn import WindowGrid
from patchwork.policies import (
    ActionHistory,
    EpsilonGreedyPolicy,
    FixedPolicy,
    GreedyPolicy,
    Policy,
    RandomPolicy,
    ScanningPolicy,
)


def test_every_policy_follows_the_protocol():
    policies = [
        GreedyPolicy(),
        EpsilonGreedyPolicy(0.1),
        RandomPolicy(9),
        ScanningPolicy(WindowGrid(4, 2)),
        FixedPolicy(0),
    ]
    for policy in policies:
        assert isinstance(policy, Policy)
    assert [p.needs_scores for p in policies] == [True, True, False, False, False]
    assert ActionHistory is NnActionHistory
