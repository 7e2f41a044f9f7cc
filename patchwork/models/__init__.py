"""Networks: the stateful MobileNetV2 backbone, the task models built on it, baselines, Looking Fast and Slow,
BlockCopy."""

from patchwork.models.attention import AttentionQNetwork
from patchwork.models.baselines import Flip, KeyframeDelay, KeyframeInterval, Resolution, wrap_baselines
from patchwork.models.blockcopy import BlockCopyModel, BlockCopyNetwork
from patchwork.models.builders import looking_fast_slow_detector, mobilenet_v2, patchwork_detector, patchwork_segmenter
from patchwork.models.detector import PatchworkDetector
from patchwork.models.lfs import AdaptiveInterleavingQNetwork, LookingFastSlowDetector
from patchwork.models.patchwork_model import PatchworkModel
from patchwork.models.segmenter import DeepLabLightHead, PatchworkSegmenter
from patchwork.models.stateful_mobilenet import StatefulMobileNetV2
from patchwork.models.streaming import Description, StepOutput, StreamingModel

__all__ = [
    "AdaptiveInterleavingQNetwork",
    "AttentionQNetwork",
    "BlockCopyModel",
    "BlockCopyNetwork",
    "DeepLabLightHead",
    "Description",
    "Flip",
    "KeyframeDelay",
    "KeyframeInterval",
    "LookingFastSlowDetector",
    "PatchworkDetector",
    "PatchworkModel",
    "PatchworkSegmenter",
    "Resolution",
    "StatefulMobileNetV2",
    "StepOutput",
    "StreamingModel",
    "looking_fast_slow_detector",
    "mobilenet_v2",
    "patchwork_detector",
    "patchwork_segmenter",
    "wrap_baselines",
]
