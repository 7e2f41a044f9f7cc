"""Policies: Q-learned (greedy, epsilon-greedy), stochastic (categorical, Bernoulli), hand-designed
(random, scanning, fixed; LFS's fixed and random interleaving), and the names scripts use."""

from patchwork.nn.action_history import ActionHistory
from patchwork.policies.hand_designed import FixedPolicy, RandomPolicy, ScanningPolicy, scan_order
from patchwork.policies.interleaving import FixedInterleavingPolicy, RandomInterleavingPolicy
from patchwork.policies.named import POLICY_NAMES, build_policy, policy_label
from patchwork.policies.policy import Policy
from patchwork.policies.q_learned import EpsilonGreedyPolicy, GreedyPolicy
from patchwork.policies.stochastic import BernoulliPolicy, CategoricalPolicy

__all__ = [
    "POLICY_NAMES",
    "ActionHistory",
    "BernoulliPolicy",
    "CategoricalPolicy",
    "EpsilonGreedyPolicy",
    "FixedInterleavingPolicy",
    "FixedPolicy",
    "GreedyPolicy",
    "Policy",
    "RandomInterleavingPolicy",
    "RandomPolicy",
    "ScanningPolicy",
    "build_policy",
    "policy_label",
    "scan_order",
]
