"""Reinforcement learning: the learner and reward roles, Double DQN with replay, REINFORCE, rewards
(Patchwork Eq. 2, LFS Eq. 2, BlockCopy's information gain and per-block reward)."""

from patchwork.rl.blockcopy_reward import InformationGainReward, blockcopy_rewards, execution_cost, running_cost
from patchwork.rl.ddqn import (
    LinearEpsilon,
    ddqn_loss,
    ddqn_update,
    double_dqn_targets,
    hard_update,
    polyak_update,
    td_loss,
)
from patchwork.rl.dqn_learner import DoubleDQN
from patchwork.rl.information_gain import (
    block_information_gain,
    detection_information_gain,
    segmentation_information_gain,
)
from patchwork.rl.lfs_reward import LossDifferenceReward, lfs_reward
from patchwork.rl.reinforce import Reinforce, reinforce_loss
from patchwork.rl.replay_buffer import DEFAULT_CAPACITY, ReplayBuffer
from patchwork.rl.roles import Learner, Reward, RewardContext, RewardResult, Transition
from patchwork.rl.rewards import (
    EMPTY_GT_QUALITY,
    SCORE_THRESHOLD,
    DetectionQualityGain,
    SegmentationQualityGain,
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
    "InformationGainReward",
    "SCORE_THRESHOLD",
    "DetectionQualityGain",
    "DoubleDQN",
    "Learner",
    "LinearEpsilon",
    "LossDifferenceReward",
    "Reinforce",
    "ReplayBuffer",
    "Reward",
    "RewardContext",
    "RewardResult",
    "SegmentationQualityGain",
    "Transition",
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
    "lfs_reward",
    "patchwork_reward",
    "polyak_update",
    "reinforce_loss",
    "running_cost",
    "segmentation_information_gain",
    "segmentation_quality",
    "segmentation_rewards",
    "td_loss",
]
