"""Networks: the stateful MobileNetV2 backbone, the task models built on it, baselines, BlockCopy."""

from patchwork.models.attention import AttentionQNetwork
from patchwork.models.blockcopy import BlockCopyNetwork
from patchwork.models.baselines import Flip, KeyframeDelay, KeyframeInterval, Resolution
from patchwork.models.builders import mobilenet_v2, patchwork_detector, patchwork_segmenter
from patchwork.models.detector import PatchworkDetector
from patchwork.models.segmenter import DeepLabLightHead, PatchworkSegmenter
from patchwork.models.stateful_mobilenet import StatefulMobileNetV2
from patchwork.models.streaming import StepOutput, StreamingModel

__all__ = [
    "AttentionQNetwork",
    "BlockCopyNetwork",
    "DeepLabLightHead",
    "Flip",
    "KeyframeDelay",
    "KeyframeInterval",
    "PatchworkDetector",
    "PatchworkSegmenter",
    "Resolution",
    "StatefulMobileNetV2",
    "StepOutput",
    "StreamingModel",
    "mobilenet_v2",
    "patchwork_detector",
    "patchwork_segmenter",
]
