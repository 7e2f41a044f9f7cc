"""Policies: Q-learned (greedy, epsilon-greedy), hand-designed (random, scanning, fixed), Bernoulli; action history."""

from patchwork.nn.action_history import ActionHistory
from patchwork.policies.bernoulli import BernoulliPolicy
from patchwork.policies.hand_designed import FixedPolicy, RandomPolicy, ScanningPolicy, scan_order
from patchwork.policies.policy import Policy
from patchwork.policies.q_learned import EpsilonGreedyPolicy, GreedyPolicy

__all__ = [
    "ActionHistory",
    "BernoulliPolicy",
    "EpsilonGreedyPolicy",
    "FixedPolicy",
    "GreedyPolicy",
    "Policy",
    "RandomPolicy",
    "ScanningPolicy",
    "scan_order",
]
