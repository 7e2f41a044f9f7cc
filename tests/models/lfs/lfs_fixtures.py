"""Helpers of the Looking Fast and Slow model tests: tiny LFS detectors."""

import torch

from patchwork.models import looking_fast_slow_detector
from tests.models.model_fixtures import randomize_batchnorm

TINY_SIZE = (128, 128)


def tiny_lfs(num_classes: int = 3, seed: int = 0, **options):
    """f0 width 0.5 (160 ch), f1 width 0.35 (112 ch), a 32-channel LSTM and 32-channel extra maps at 128 x 128."""
    torch.manual_seed(seed)
    options = {"width_f0": 0.5, "state_channels": 32, "extra_channels": (32, 32, 32, 32), **options}
    return randomize_batchnorm(looking_fast_slow_detector(num_classes, TINY_SIZE, **options))
