"""1x1 convolutions as one matrix product over channels-last cells.

For a batch of one on a single thread, PyTorch sends small 1x1 convolutions to
``aten::_slow_conv2d_forward`` rather than oneDNN (its heuristic: the native kernel is
faster there), and that kernel wants NCHW, so a channels-last activation leaves it in
NCHW and the next depthwise convolution converts it back. A channels-last map *is* a
``(B * H * W, C)`` table of cells, so a 1x1 convolution is exactly one
``addmm`` with the ``(C_out, C_in)`` weight: no layout change, no im2col, output
channels-last again.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def is_pointwise(conv: nn.Module) -> bool:
    """Whether ``conv`` is a plain 1x1 convolution (stride 1, no padding, dilation 1, one group)."""
    return (
        isinstance(conv, nn.Conv2d)
        and tuple(conv.kernel_size) == (1, 1)
        and tuple(conv.stride) == (1, 1)
        and conv.padding in ((0, 0), "valid", "same")
        and conv.groups == 1
        and conv.padding_mode == "zeros"
    )


class PointwiseConv2d(nn.Conv2d):
    """A 1x1 ``nn.Conv2d`` that runs as one matrix product over channels-last cells.

    Same parameters (names and shapes) and the same outputs (up to float rounding) as the
    convolution it replaces; build it with :meth:`from_conv`, which shares that
    convolution's ``weight`` and ``bias``.
    """

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "PointwiseConv2d":
        """Adopt ``conv``'s parameters (no copy); ``conv`` must satisfy :func:`is_pointwise`."""
        if not is_pointwise(conv):
            raise ValueError(f"{conv} is not a plain 1x1 convolution")
        pointwise = cls.__new__(cls)
        nn.Module.__init__(pointwise)
        for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "transposed",
                     "output_padding", "groups", "padding_mode", "_reversed_padding_repeated_twice"):
            setattr(pointwise, name, getattr(conv, name))
        pointwise.weight = conv.weight
        pointwise.bias = conv.bias
        return pointwise

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """``(B, C_in, H, W)`` -> channels-last ``(B, C_out, H, W)`` (``nn.Conv2d.forward`` calls this
        with the module's own weight; callers may pass a slice of its input channels)."""
        if x.dim() != 4:
            return super()._conv_forward(x, weight, bias)
        # permute(0, 2, 3, 1) of channels-last x is contiguous: linear runs one addmm on its cells
        # (for NCHW x it makes the layout change conv2d would make anyway).
        return F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias).permute(0, 3, 1, 2)
