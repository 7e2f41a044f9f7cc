"""Inference-only transforms that change no prediction (up to float rounding)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from patchwork.nn import PatchworkCell


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a conv (or Patchwork cell) into its weights.

    Halves the number of layers a frame goes through, which matters for small windows
    whose cost is dominated by per-layer overhead rather than arithmetic. Works in place
    on a model in eval mode and returns it; BatchNorm layers become ``nn.Identity``, so the
    ``state_dict`` no longer matches a training checkpoint: fold a copy.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (it bakes in the running statistics)")
    for sequential in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        children = list(sequential.named_children())
        for (_, conv), (bn_name, bn) in zip(children[:-1], children[1:]):
            if isinstance(conv, (nn.Conv2d, PatchworkCell)) and isinstance(bn, nn.BatchNorm2d):
                weight, bias = fuse_conv_bn_weights(
                    conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
                )
                conv.weight, conv.bias = weight, bias
                setattr(sequential, bn_name, nn.Identity())
    return model


@contextlib.contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd for a measurement pass; restores every module's own training
    flag afterwards (frozen BatchNorm layers of a model in training stay frozen)."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, mode in modes.items():
            module.training = mode
