"""BlockCopy's policy network (Verelst and Tuytelaars, ICCV 2021, Sec. 3.3, Fig. 4).

A ResNet-8 (a 3x3 stem at 32 channels, one basic block at each of 32, 64 (stride 2) and
128 (stride 2) channels) and three stride-2 3x3 convolutions (128, 128, 1) map the policy's
state ``S_t`` (Eq. 2) to one execution logit per block. The state's four parts are
concatenated at reduced resolution, ``scale = 0.25 * 128 / bs`` of the frame (the authors'
code; 1/4 at the paper's 128-pixel blocks), where the network's total stride of 32 makes one
output cell per block:

* the current frame ``I_t`` (as the task network takes it);
* the previous frame state ``H_{t-1}``: per block, the frame in which it last executed
  (:meth:`~patchwork.models.blockcopy.network.BlockCopyNetwork.frame_state`);
* the previous output ``O_{t-1}``: per-class probability maps (detections painted as
  boxes, or segmentation probabilities), shifted to ``[-0.5, 0.5]``;
* the previous execution grid ``A_{t-1}``, shifted to ``[-0.5, 0.5]``.

Inputs are resized with nearest-neighbour sampling, as in the authors' code.

Two options shrink the network for small frames, where the paper's policy would cost more
than the task network it saves (at 128x128 pixels the full policy is about six times the
cost of a MobileNetV2-0.5 detector): ``width`` scales every channel count, and
``head_layers`` sets how many stride-2 convolutions the head has (3 in the paper); the
network's total stride, hence the input cells per block, is ``4 * 2 ** head_layers``.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, conv1x1
from torchvision.ops.misc import Conv2dNormActivation

#: Total stride of the policy network: 2 (layer 2) * 2 (layer 3) * 2 ** 3 (head).
POLICY_STRIDE = 32
#: Fig. 4 / the authors' code: ResNet-8 widths (16, 32, 64) times their width factor 2.
WIDTHS = (32, 64, 128)
HEAD_CHANNELS = 128
#: The authors' code: BatchNorm momentum 0.02 (the policy trains online, one frame at a time).
_BN = partial(nn.BatchNorm2d, momentum=0.02)


def _basic_block(in_channels: int, channels: int, stride: int) -> BasicBlock:
    downsample = None
    if stride != 1 or in_channels != channels:
        downsample = nn.Sequential(conv1x1(in_channels, channels, stride), _BN(channels))
    return BasicBlock(in_channels, channels, stride, downsample, norm_layer=_BN)


class PolicyNet(nn.Module):
    """Execution logits per block from ``(I_t, H_{t-1}, O_{t-1}, A_{t-1})``.

    Args:
        block_size: ``bs`` in pixels (a multiple of 4 so that ``scale`` keeps whole cells).
        num_classes: ``K``, channels of the previous output representation.
        in_channels: channels of a frame (and of the frame state).

    I/O contract (``H``, ``W`` multiples of ``bs``)::

        logits = policy_net(frames, frame_state, prev_output, prev_mask)
        # frames, frame_state (B, C, H, W); prev_output (B, K, h, w) any size;
        # prev_mask (B, H // bs, W // bs) bool  ->  logits (B, H // bs, W // bs)
    """

    def __init__(
        self, block_size: int, num_classes: int, in_channels: int = 3, width: float = 1.0, head_layers: int = 3
    ) -> None:
        super().__init__()
        if head_layers < 1:
            raise ValueError(f"the head needs at least its logit convolution, got head_layers={head_layers}")
        self.block_size = int(block_size)
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.width = float(width)
        self.head_layers = int(head_layers)
        #: Input cells per block side: the network's total stride (32 in the paper).
        self.stride = 4 * 2**self.head_layers
        self.scale = self.stride / block_size  # the paper's 0.25 * 128 / bs at 3 head layers
        widths = [max(1, round(w * self.width)) for w in WIDTHS]
        head = max(1, round(HEAD_CHANNELS * self.width))
        self.backbone = nn.Sequential(
            Conv2dNormActivation(2 * in_channels + num_classes + 1, widths[0], 3, norm_layer=_BN, bias=False),
            _basic_block(widths[0], widths[0], 1),
            _basic_block(widths[0], widths[1], 2),
            _basic_block(widths[1], widths[2], 2),
        )
        channels = [widths[2]] + [head] * (self.head_layers - 1)
        self.head = nn.Sequential(
            *(Conv2dNormActivation(a, b, 3, stride=2, norm_layer=_BN, bias=False) for a, b in zip(channels, channels[1:])),
            nn.Conv2d(channels[-1], 1, 3, stride=2, padding=1),  # the logits: no BatchNorm, a bias
        )

    def input_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """``(H, W)`` of the network's input: ``scale`` of the frame, ``stride`` cells per block."""
        rows, cols = image_size[0] // self.block_size, image_size[1] // self.block_size
        return rows * self.stride, cols * self.stride

    def features(self, frames: Tensor, frame_state: Tensor, prev_output: Tensor, prev_mask: Tensor) -> Tensor:
        """The state ``S_t`` (Eq. 2) at the network's resolution: ``(B, 2 C + K + 1, s H / bs, s W / bs)``, ``s = stride``."""
        image_size = (frames.shape[-2], frames.shape[-1])
        if image_size[0] % self.block_size or image_size[1] % self.block_size:
            raise ValueError(
                f"frame {image_size[0]}x{image_size[1]} is not a whole number of {self.block_size}-pixel blocks"
            )
        if prev_output.shape[1] != self.num_classes:
            raise ValueError(
                f"previous output has {prev_output.shape[1]} channels, the policy expects {self.num_classes}"
            )
        size = self.input_size(image_size)
        parts = [
            F.interpolate(frames, size=size, mode="nearest"),
            F.interpolate(frame_state, size=size, mode="nearest"),
            F.interpolate(prev_output.to(frames.dtype), size=size, mode="nearest") - 0.5,
            F.interpolate(prev_mask.to(frames.dtype)[:, None], size=size, mode="nearest") - 0.5,
        ]
        return torch.cat(parts, dim=1).detach()

    def forward(self, frames: Tensor, frame_state: Tensor, prev_output: Tensor, prev_mask: Tensor) -> Tensor:
        """Execution logits ``(B, H // bs, W // bs)`` (see the class docstring)."""
        x = self.features(frames, frame_state, prev_output, prev_mask)
        return self.head(self.backbone(x))[:, 0]
