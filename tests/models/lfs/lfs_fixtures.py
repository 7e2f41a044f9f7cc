"""Helpers of the Looking Fast and Slow model tests: tiny LFS detectors."""

import sys
from pathlib import Path

import torch

# The shared helpers of tests/models (model_fixtures) are importable from this subfolder too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_fixtures import randomize_batchnorm  # noqa: E402

from patchwork.models import looking_fast_slow_detector  # noqa: E402

TINY_SIZE = (128, 128)


def tiny_lfs(num_classes: int = 3, seed: int = 0, **options):
    """f0 width 0.5 (160 ch), f1 width 0.35 (112 ch), a 32-channel LSTM and 32-channel extra maps at 128 x 128."""
    torch.manual_seed(seed)
    options = {"width_f0": 0.5, "state_channels": 32, "extra_channels": (32, 32, 32, 32), **options}
    return randomize_batchnorm(looking_fast_slow_detector(num_classes, TINY_SIZE, **options))
