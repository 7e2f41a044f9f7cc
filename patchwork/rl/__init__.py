"""Reinforcement learning for the attention network: rewards (Sec. 3.3; LFS Eq. 2), replay buffer, Double DQN."""

from patchwork.rl.ddqn import (
    LinearEpsilon,
    ddqn_loss,
    ddqn_update,
    double_dqn_targets,
    hard_update,
    polyak_update,
    td_loss,
)
from patchwork.rl.lfs_reward import lfs_reward
from patchwork.rl.replay_buffer import DEFAULT_CAPACITY, ReplayBuffer
from patchwork.rl.rewards import (
    EMPTY_GT_QUALITY,
    SCORE_THRESHOLD,
    detection_quality,
    detection_quality_batch,
    detection_rewards,
    greedy_matched_iou_sum,
    patchwork_reward,
    segmentation_quality,
    segmentation_rewards,
)

__all__ = [
    "DEFAULT_CAPACITY",
    "EMPTY_GT_QUALITY",
    "SCORE_THRESHOLD",
    "LinearEpsilon",
    "ReplayBuffer",
    "ddqn_loss",
    "ddqn_update",
    "detection_quality",
    "detection_quality_batch",
    "detection_rewards",
    "double_dqn_targets",
    "greedy_matched_iou_sum",
    "hard_update",
    "lfs_reward",
    "patchwork_reward",
    "polyak_update",
    "segmentation_quality",
    "segmentation_rewards",
    "td_loss",
]
