"""Attention policies: Q-learned (greedy, epsilon-greedy), hand-designed (random, scanning, fixed); action history;
LFS's fixed and random interleaving."""

from patchwork.nn.action_history import ActionHistory
from patchwork.policies.hand_designed import FixedPolicy, RandomPolicy, ScanningPolicy, scan_order
from patchwork.policies.interleaving import FixedInterleavingPolicy, RandomInterleavingPolicy
from patchwork.policies.policy import Policy
from patchwork.policies.q_learned import EpsilonGreedyPolicy, GreedyPolicy

__all__ = [
    "ActionHistory",
    "EpsilonGreedyPolicy",
    "FixedInterleavingPolicy",
    "FixedPolicy",
    "GreedyPolicy",
    "Policy",
    "RandomInterleavingPolicy",
    "RandomPolicy",
    "ScanningPolicy",
    "scan_order",
]
