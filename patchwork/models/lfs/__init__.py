"""Looking Fast and Slow (Liu et al. 2019): interleaved extractors, LSTM memory, SSDLite, the
adaptive interleaving Q-network, asynchronous inference and int8 quantization."""

from patchwork.models.lfs.asynchronous import SimulatedAsynchronousInference, ThreadedAsynchronousInference
from patchwork.models.lfs.detector import F0, F1, HISTORY_LENGTH, ExtraFeatureMaps, LookingFastSlowDetector
from patchwork.models.lfs.extractors import (
    MobileNetV2Extractor,
    check_matching_maps,
    large_extractor,
    small_extractor,
)
from patchwork.models.lfs.policy_net import AdaptiveInterleavingQNetwork
from patchwork.models.lfs.quantization import quantize_lfs

__all__ = [
    "F0",
    "F1",
    "HISTORY_LENGTH",
    "AdaptiveInterleavingQNetwork",
    "ExtraFeatureMaps",
    "LookingFastSlowDetector",
    "MobileNetV2Extractor",
    "SimulatedAsynchronousInference",
    "ThreadedAsynchronousInference",
    "check_matching_maps",
    "large_extractor",
    "quantize_lfs",
    "small_extractor",
]
