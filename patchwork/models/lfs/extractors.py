"""The two feature extractors of Looking Fast and Slow (Liu et al. 2019, Sec. 3.1).

* f0 (large, accurate): MobileNetV2 with width multiplier 1.4 on the ``320 x 320`` frame.
* f1 (small, fast): MobileNetV2 with width multiplier 0.35 on the frame resized to
  ``160 x 160``, with the striding of its last strided convolution (the first 160-channel
  block) removed "so that the output dimensions match".

Either extractor may lose more of its last strides (``removed_strides``): the quick profile
removes one more from each so that its 128 x 128 frames give 8 x 8 maps, as dense as the
paper's 10 x 10 at 320 (at stride 32 the 4 x 4 maps' default boxes reach IoU 0.5 with a
fifth of the synthetic objects; see ``configs/experiment/lfs_quick.yaml``).

Both end at the last bottleneck block (``320 x width`` channels: 448 for f0, 112 for
f1), without MobileNetV2's final 1x1 layer, and give ``10 x 10`` maps at 320.

The blocks are torchvision's own (``features.0`` ... ``features.17``), so a torchvision
``mobilenet_v2`` ``state_dict`` of the same width loads into :attr:`MobileNetV2Extractor.features`
(removing a stride changes no weight).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.mobilenetv2 import InvertedResidual


def _conv_out(size: int, stride: int) -> int:
    """Output length of a kernel-3 (or 1x1, stride 1), ``padding = kernel // 2`` convolution."""
    return (size - 1) // stride + 1


class MobileNetV2Extractor(nn.Module):
    """MobileNetV2 up to its last bottleneck, optionally on a resized frame and with one stride removed.

    Args:
        mobilenet: a torchvision ``MobileNetV2`` (its ``features`` are reused, not copied;
            the final 1x1 layer and the classifier are dropped).
        input_scale: the frame is resized by this factor first (0.5 for f1: 320 -> 160).
        removed_strides: how many of the last stride-2 blocks get stride 1 (f1: 1).

    Input: ImageNet-normalised frames ``(B, 3, H, W)``. Output: ``(B, out_channels, h, w)``
    with ``(h, w) = map_size((H, W))``.
    """

    def __init__(self, mobilenet: nn.Module, input_scale: float = 1.0, removed_strides: int = 0) -> None:
        super().__init__()
        blocks = list(mobilenet.features.children())
        if not isinstance(blocks[-2], InvertedResidual):
            raise ValueError("expected torchvision's MobileNetV2: features[-2] must be the last bottleneck block")
        self.features = nn.Sequential(*blocks[:-1])
        self.input_scale = float(input_scale)
        depthwise = [_depthwise(block) for block in self.features if isinstance(block, InvertedResidual)]
        strided = [conv for conv in depthwise if conv.stride == (2, 2)]
        if not 0 <= removed_strides <= len(strided):
            raise ValueError(f"removed_strides must be in [0, {len(strided)}] (the stride-2 blocks), got {removed_strides}")
        for conv in strided[len(strided) - removed_strides:]:
            conv.stride = (1, 1)
        strided = strided[: len(strided) - removed_strides]
        # The stem and every remaining stride-2 depthwise convolution, in order.
        self._strides = [self.features[0][0].stride[0]] + [2] * len(strided)
        self.out_channels: int = self.features[-1].out_channels
        self.removed_strides = int(removed_strides)

    def input_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """Size ``(H', W')`` of the frame this extractor reads after resizing ``image_size``."""
        return (round(image_size[0] * self.input_scale), round(image_size[1] * self.input_scale))

    def map_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """Output map size ``(h, w)`` for frames of ``image_size = (H, W)`` pixels."""
        size = list(self.input_size(image_size))
        for stride in self._strides:
            size = [_conv_out(n, stride) for n in size]
        return size[0], size[1]

    def forward(self, frames: Tensor) -> Tensor:
        """``(B, 3, H, W)`` normalised frames -> ``(B, out_channels, h, w)``."""
        if self.input_scale != 1.0:
            # Bilinear, as tf.image.resize_images in the authors' release; at scale 0.5 it
            # averages each 2x2 pixel block.
            frames = F.interpolate(frames, size=self.input_size(frames.shape[-2:]), mode="bilinear", align_corners=False)
        return self.features(frames)

    def extra_repr(self) -> str:
        return f"input_scale={self.input_scale}, removed_strides={self.removed_strides}"


def _depthwise(block: InvertedResidual) -> nn.Conv2d:
    """The 3x3 depthwise convolution of a torchvision inverted residual block (it carries the stride)."""
    return next(m for m in block.conv.modules() if isinstance(m, nn.Conv2d) and m.groups > 1)


def large_extractor(mobilenet: nn.Module, removed_strides: int = 0) -> MobileNetV2Extractor:
    """f0: the full-resolution MobileNetV2 (width 1.4 in the paper, every stride kept)."""
    return MobileNetV2Extractor(mobilenet, removed_strides=removed_strides)


def small_extractor(mobilenet: nn.Module, removed_strides: int = 1) -> MobileNetV2Extractor:
    """f1: MobileNetV2 (width 0.35 in the paper) on the half-size frame, last stride removed."""
    return MobileNetV2Extractor(mobilenet, input_scale=0.5, removed_strides=removed_strides)


def check_matching_maps(extractors: list[MobileNetV2Extractor], image_size: tuple[int, int]) -> tuple[int, int]:
    """The common map size of all extractors at ``image_size``.

    Raises:
        ValueError: the extractors' maps differ at this size (e.g. 321 x 321: f0 gives
            11 x 11, f1 on the 160 x 160 resize 10 x 10), so one memory cannot hold them.
    """
    sizes = [extractor.map_size(image_size) for extractor in extractors]
    if any(size != sizes[0] for size in sizes):
        raise ValueError(
            f"image size {tuple(image_size)} gives feature maps of different sizes {sizes} for the extractors; "
            "use a multiple of 32 (e.g. 320, as the paper) so that every extractor's map matches"
        )
    return sizes[0]
