"""Networks: the stateful MobileNetV2 backbone, the task models built on it, and baselines."""

from patchwork.models.attention import AttentionQNetwork
from patchwork.models.baselines import Flip, KeyframeDelay, KeyframeInterval, Resolution, wrap_baselines
from patchwork.models.builders import mobilenet_v2, patchwork_detector, patchwork_segmenter
from patchwork.models.detector import PatchworkDetector
from patchwork.models.patchwork_model import PatchworkModel
from patchwork.models.segmenter import DeepLabLightHead, PatchworkSegmenter
from patchwork.models.stateful_mobilenet import StatefulMobileNetV2
from patchwork.models.streaming import Description, StepOutput, StreamingModel

__all__ = [
    "AttentionQNetwork",
    "DeepLabLightHead",
    "Description",
    "Flip",
    "KeyframeDelay",
    "KeyframeInterval",
    "PatchworkDetector",
    "PatchworkModel",
    "PatchworkSegmenter",
    "Resolution",
    "StatefulMobileNetV2",
    "StepOutput",
    "StreamingModel",
    "mobilenet_v2",
    "patchwork_detector",
    "patchwork_segmenter",
    "wrap_baselines",
]
