"""Inference-only transforms that change no prediction (up to float rounding)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from patchwork.nn import PatchworkCell
from patchwork.nn.pointwise import PointwiseConv2d, is_pointwise


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


def pointwise_as_matmul(model: nn.Module) -> nn.Module:
    """Run every plain 1x1 convolution of ``model`` as one matrix product over channels-last cells.

    Each such ``nn.Conv2d`` becomes a :class:`~patchwork.nn.pointwise.PointwiseConv2d` that
    shares its parameters (``state_dict`` unchanged), so no small 1x1 convolution falls back
    to ``aten::_slow_conv2d_forward`` and activations stay channels-last between layers.
    Works in place and returns ``model``; apply after :func:`fold_batchnorm` or before (the
    folded weights are adopted either way, as the module is the same slot).
    """
    for name, module in list(model.named_modules()):
        if is_pointwise(module) and not isinstance(module, PointwiseConv2d):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, PointwiseConv2d.from_conv(module))
    return model


def inference_form(model: nn.Module) -> nn.Module:
    """The deployed form of an eval-mode model, in place: BatchNorm folded (:func:`fold_batchnorm`),
    1x1 convolutions as matrix products (:func:`pointwise_as_matmul`)."""
    return pointwise_as_matmul(fold_batchnorm(model))


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
