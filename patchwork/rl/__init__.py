"""Reinforcement learning: Patchwork's rewards (Sec. 3.3), replay buffer, Double DQN; BlockCopy's
information gain, per-block reward and REINFORCE loss."""

from patchwork.rl.blockcopy_reward import blockcopy_rewards, execution_cost, reinforce_loss, running_cost

from patchwork.rl.ddqn import (
    LinearEpsilon,
    ddqn_loss,
    ddqn_update,
    double_dqn_targets,
    hard_update,
    polyak_update,
    td_loss,
)
from patchwork.rl.information_gain import (
    block_information_gain,
    detection_information_gain,
    segmentation_information_gain,
)
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
    "block_information_gain",
    "blockcopy_rewards",
    "ddqn_loss",
    "ddqn_update",
    "detection_information_gain",
    "detection_quality",
    "detection_quality_batch",
    "detection_rewards",
    "double_dqn_targets",
    "execution_cost",
    "greedy_matched_iou_sum",
    "hard_update",
    "patchwork_reward",
    "polyak_update",
    "reinforce_loss",
    "running_cost",
    "segmentation_information_gain",
    "segmentation_quality",
    "segmentation_rewards",
    "td_loss",
]
