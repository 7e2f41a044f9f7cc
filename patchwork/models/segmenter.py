"""The Patchwork segmenter (Sec. 4.2; supplementary Sec. A): MobileNetV2 + DeepLabv3 light head.

Binary foreground/background segmentation for unsupervised DAVIS 2016. The backbone is
MobileNetV2 at output stride 16 the DeepLab way (the last stride-2 convolution becomes
stride 1 and the convolutions after it are dilated), keeping the final 1x1 conv to 1280
channels: the paper's stateful backbone ends in it (supplementary Tab. 3) and Tab. 5's
MFLOPs count it (without it every row is 11-22% low). TensorFlow DeepLab's
``MobileNetV2*`` instead reads the 320-channel last bottleneck (``final_layer=False``).
The head is the MobileNetV2 paper's
"DeepLabv3 without ASPP atrous branches" (Sandler et al. 2018, Sec. 6.3): a 1x1 branch
and an image-pooling branch, a 1x1 projection and a 1x1 classifier.

Pixel-wise segmentation is local, so the head runs on the window's partial map only
(supplementary Sec. A). Its one global op, the image pooling, pools the restored
full-frame map instead (a Patchwork cell before every global op, Chai 2019, Sec. 3.2).
The window's logits are written into a full-frame mask-logit memory, so every step
yields a prediction for the whole frame: fresh inside the window, remembered elsewhere.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.ops.misc import Conv2dNormActivation

from patchwork.models.attention import AttentionQNetwork
from patchwork.models.stateful import StatefulPass, run_stateful
from patchwork.models.stateful_mobilenet import OUTPUT_MEMORY, StatefulMobileNetV2
from patchwork.models.patchwork_model import PatchworkModel
from patchwork.models.streaming import Stages, StepOutput, layer_stages, run_stages
from patchwork.nn import FrameMemory, StreamState

#: State key of the full-frame mask-logit memory.
MASK_LOGITS = "mask_logits"

#: DeepLab's output stride for MobileNetV2 (MobileNetV2 paper, Sec. 6.3: OS=16).
OUTPUT_STRIDE = 16


# ---------------------------------------------------------------------------- backbone
def os16_features(model: nn.Module, final_layer: bool = True) -> nn.Sequential:
    """MobileNetV2 at output stride 16 from a torchvision ``mobilenet_v2`` (copied, not changed).

    Takes ``model.features``, with its final 1x1 conv to 1280 channels (``final_layer``,
    the paper's Tab. 3 backbone; pointwise, so it needs no cell and no dilation) or
    without it (TensorFlow DeepLab's ``MobileNetV2*``, reading the 320-channel last
    bottleneck), and converts it to output stride 16 as TensorFlow
    DeepLab's ``mobilenet_base`` does: once the running stride reaches 16, a strided conv
    gets stride 1 with the current dilation rate, and the rate is multiplied by its
    stride for every k > 1 conv after it. For MobileNetV2: block 14's depthwise conv gets
    stride 1 (dilation 1), the depthwise convs of blocks 15-17 dilation 2 and padding 2.
    Module names and parameter shapes are unchanged, so ImageNet weights the caller
    loaded carry over and ``state_dict`` keys are torchvision's ``0`` ... ``17``.

    Args:
        model: a ``torchvision.models.MobileNetV2`` (any width).
        final_layer: keep the final 1x1 conv (default, the paper's) or drop it.
    Returns:
        ``nn.Sequential`` mapping ``(B, 3, H, W)`` to ``(B, C, H / 16, W / 16)`` with
        ``C`` the final 1x1 conv's channels (1280 at width 1.0), or ``C = 320`` at width
        1.0 without it; :class:`StatefulMobileNetV2` derives ``out_stride = 16``
        and every cell's context from the modified convs.
    """
    features = copy.deepcopy(model.features)
    last = features[-1]
    if not (isinstance(last, Conv2dNormActivation) and last[0].kernel_size == (1, 1)):
        raise ValueError("expected torchvision's mobilenet_v2().features ending in the 1x1 conv to 1280 channels")
    if not final_layer:
        features = features[:-1]
    stride, rate = 1, 1
    for conv in (m for m in features.modules() if isinstance(m, nn.Conv2d)):
        if conv.kernel_size == (1, 1) and conv.stride == (1, 1):
            continue  # pointwise: nothing to dilate
        if stride < OUTPUT_STRIDE:
            stride *= conv.stride[0]
            continue
        kernel, conv_stride = conv.kernel_size[0], conv.stride[0]
        conv.stride, conv.dilation = (1, 1), (rate, rate)
        conv.padding = (rate * (kernel - 1) // 2,) * 2
        rate *= conv_stride
    return features


def mobilenet_v2_os16_features(width_mult: float = 1.0, final_layer: bool = True) -> nn.Sequential:
    """A randomly initialised :func:`os16_features` of ``torchvision.models.mobilenet_v2(width_mult)``."""
    return os16_features(torchvision.models.mobilenet_v2(width_mult=width_mult), final_layer)


# ------------------------------------------------------------------------------- head
class DeepLabLightHead(nn.Module):
    """DeepLabv3 head without the atrous ASPP branches (MobileNetV2 paper, Sec. 6.3).

    ``1x1 conv+BN+ReLU`` on the input, concatenated with the image-pooling branch
    (global average pool -> ``1x1 conv+BN+ReLU`` -> broadcast), ``1x1`` projection
    ``conv+BN+ReLU``, dropout, and a ``1x1`` classifier to ``num_classes`` logits.
    Branch order and dropout follow torchvision's ``ASPP``/TF DeepLab (dropout 0.1 as in
    TF DeepLab's ``keep_prob=0.9``).

    The projection of the concatenation runs as the sum of its two halves: the 1x1 branch's
    input channels per pixel, the image-pooling branch's once on its pooled ``1x1`` map (the
    same at every pixel), BatchNorm and ReLU after the sum. The same function and
    parameters as TF DeepLab's ``concat_projection`` (``project.0.weight`` ``(C, 2C, 1, 1)``;
    a 1x1 convolution is linear in its input channels) at half its FLOPs, which is what the
    paper's Tab. 5 costs count.

    The image pooling is a global op: a Patchwork model passes the restored full-frame
    map as ``frame`` so that a window sees the same pooled vector as the full frame.
    Like torchvision's ``ASPPPooling``, its BatchNorm sees one value per stream, so
    training needs more than one stream per batch.

    Args:
        in_channels: channels of the backbone's last map (1280 at width 1.0; 320 without
            the final 1x1 layer).
        channels: width of the branches and the projection (256 in DeepLabv3).
        num_classes: logits per pixel (1: binary foreground).
        dropout: dropout probability before the classifier.
    """

    def __init__(self, in_channels: int, channels: int = 256, num_classes: int = 1, dropout: float = 0.1) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.channels = int(channels)
        self.num_classes = int(num_classes)
        self.branch = Conv2dNormActivation(in_channels, channels, kernel_size=1, activation_layer=nn.ReLU)
        self.image_pool = Conv2dNormActivation(in_channels, channels, kernel_size=1, activation_layer=nn.ReLU)
        self.project = Conv2dNormActivation(2 * channels, channels, kernel_size=1, activation_layer=nn.ReLU)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, x: Tensor, frame: Tensor | None = None) -> Tensor:
        """Logits ``(B, num_classes, h, w)`` of a map ``x`` ``(B, in_channels, h, w)``.

        Args:
            x: the window's (or the frame's) feature map.
            frame: ``(B, in_channels, H, W)`` the map to pool globally; ``None`` pools ``x``
                (the stateless head on a whole frame).
        """
        return run_stages(self.forward_stages(x, frame))

    def forward_stages(self, x: Tensor, frame: Tensor | None = None) -> Stages[Tensor]:
        """:meth:`forward` as a generator yielding between its layers (for the ``delay`` baseline; the
        1x1 branch and projection may run in bands of rows, :func:`layer_stages`)."""
        local = yield from layer_stages(self.branch, x)
        yield
        pooled = self.image_pool((x if frame is None else frame).mean(dim=(-2, -1), keepdim=True))
        local_weight, pooled_weight = self.project[0].weight.split(self.channels, dim=1)
        pooled = F.conv2d(pooled, pooled_weight)  # (B, C, 1, 1): the pooled half of the projection
        yield
        projected = yield from layer_stages(self.project, local, weight=local_weight, shift=pooled)
        yield
        return self.classifier(self.dropout(projected))


# -------------------------------------------------------------------------- segmenter
class PatchworkSegmenter(PatchworkModel):
    """MobileNetV2 + DeepLabv3 light head seeing one window per frame, predicting the full frame.

    Args:
        backbone: the stateful backbone at output stride 16 (e.g.
            ``StatefulMobileNetV2(mobilenet_v2_os16_features(), grid)``); its grid is the
            model's. ``WindowGrid(1, 1)`` gives the single-frame segmenter.
        head: the light head; ``in_channels`` must be the backbone's ``out_channels`` and
            ``num_classes`` 1 (binary foreground/background, Sec. 4.2).
        attention: the attention Q-network reading the restored ``"output"`` memory
            (``in_channels = backbone.out_channels``), or ``None``.
        history_alpha: the action history's decay (Eq. 1).
        width_mult: the backbone's width multiplier (the tables' ``depth``), for labels.

    I/O contract (``B`` streams, image ``H x W`` divisible by ``M * 32``, frames in ``[0, 1]``)::

        state = model.init_state(B, (H, W))
        out = model(frames, actions, state)          # frames (B, 3, H, W), actions (B,) or None
        out.raw["logits"]         # (B, 1, H, W) full-frame foreground logits
        out.raw["window_logits"]  # (B, 1, h / 16, w / 16) this step's window at stride 16
                                  # (the whole frame's for a full-frame pass, actions=None)
        out.predictions           # eval: [{"mask": Bool (H, W), "scores": Float (H, W)}] * B
        model.loss(out, [{"mask": Bool (H, W)}] * B)  # {"loss_mask": scalar}

    The state holds the backbone's memories (one per cell and the restored ``"output"``
    map, 1280 channels at stride 16 at width 1.0), and ``"mask_logits"``, the full-frame logits
    ``(B, 1, H / 16, W / 16)``. The head's image pooling reads ``"output"``: the head's
    input *is* the backbone's output, so that memory is the pooling cell's memory and
    is not kept twice.
    """

    task = "segmentation"

    def __init__(
        self,
        backbone: StatefulMobileNetV2,
        head: DeepLabLightHead,
        attention: AttentionQNetwork | None = None,
        history_alpha: float = 0.5,
        width_mult: float = 1.0,
    ) -> None:
        super().__init__(backbone, attention, history_alpha, width_mult)
        if head.in_channels != backbone.out_channels:
            raise ValueError(f"head expects {head.in_channels} channels, the backbone gives {backbone.out_channels}")
        if head.num_classes != 1:
            raise ValueError(f"the segmenter is binary (one foreground logit), got num_classes={head.num_classes}")
        self.backbone = backbone
        self.head = head
        self.mask_memory = FrameMemory(head.num_classes, backbone.out_stride)

    @property
    def out_stride(self) -> int:
        """Stride of the logits the head computes (16)."""
        return self.backbone.out_stride

    def init_model_state(self, batch_size: int, image_size: tuple[int, int], device: torch.device | str) -> StreamState:
        """Empty backbone memories plus an all-zero mask-logit memory (probability 0.5, no foreground)."""
        state = self.backbone.init_state(batch_size, image_size, device)
        state[MASK_LOGITS] = self.mask_memory.init(batch_size, image_size, device, state[OUTPUT_MEMORY].dtype)
        return state

    def window_stages(self, frames: Tensor, actions: Tensor | None, state: StreamState) -> Stages[StepOutput]:
        """One step on normalised frames ``(B, 3, H, W)``; yields after every backbone block and head layer.

        ``actions=None`` is a full-frame pass (a keyframe): the stateless network on whole
        frames, every memory rewritten in full.
        """
        image_size = (frames.shape[-2], frames.shape[-1])
        if actions is None:
            features, _, state = yield from self.backbone.forward_full_stages(frames, state)
        else:
            crops = self.grid.crop(frames, actions)
            features, _, state = yield from self.backbone.forward_stages(crops, actions, state)
        # The backbone has written its output into "output", which now is the restored
        # full-frame map of the head's input: the image pooling reads it (global op).
        frame_features = self.backbone.memory(state, OUTPUT_MEMORY)
        logits = yield from self.head.forward_stages(features, frame_features)
        if actions is None:
            state[MASK_LOGITS] = self.mask_memory.write_full(logits)
        else:
            placement = self.backbone.window_placements(actions, image_size, [self.out_stride])[self.out_stride]
            state[MASK_LOGITS] = self.mask_memory.write(state[MASK_LOGITS], logits, placement)
        return StepOutput(self._raw(state, logits, image_size), state)

    def forward_dense(self, frames: Tensor) -> dict[str, Tensor]:
        """The stateless segmenter on whole normalised frames ``(B, 3, H, W)``.

        Returns:
            ``{"logits": (B, 1, H, W)}``, equal to the single-frame model's raw logits. No state
            is read or kept, so other frameworks (e.g. BlockCopy's ``BlockCopyNetwork``) can
            trace and convert it.
        """
        features = run_stateful(self.backbone.features, "features", frames, StatefulPass(StreamState(), None))
        logits = self.head(features)
        return {"logits": F.interpolate(logits, size=frames.shape[-2:], mode="bilinear", align_corners=False)}

    def _raw(self, state: StreamState, window_logits: Tensor, image_size: tuple[int, int]) -> dict[str, Tensor]:
        # Upsampled here rather than in predict/loss: a new tensor, so ``raw`` never aliases
        # the memory that the next step overwrites in place under no_grad.
        logits = F.interpolate(
            self.mask_memory.frame(state[MASK_LOGITS]), size=image_size, mode="bilinear", align_corners=False
        )
        return {"logits": logits, "window_logits": window_logits}

    def empty_prediction(self, image_size: tuple[int, int], device: torch.device | str) -> dict[str, Tensor]:
        """What a stream predicts before anything was computed: no foreground, scores 0."""
        return {
            "mask": torch.zeros(image_size, dtype=torch.bool, device=device),
            "scores": torch.zeros(image_size, device=device),
        }

    def predict(self, out: StepOutput, min_score: float | None = None) -> list[dict[str, Tensor]]:
        """Per stream ``{"mask": BoolTensor (H, W) (probability > 0.5), "scores": FloatTensor (H, W)}``."""
        probabilities = torch.sigmoid(out.raw["logits"][:, 0])
        return [{"mask": p > 0.5, "scores": p} for p in probabilities]

    def loss(self, out: StepOutput, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Per-pixel binary cross-entropy over the **full frame** (mean over pixels and streams).

        The full frame rather than the window: it is what is evaluated (J on whole frames)
        and what the single-frame model trains on (Sec. 3.4 stage 1, where the window is
        the frame), and the bilinear upsampling mixes remembered logits into the window's
        border pixels anyway. Outside the window the loss reaches the logits of earlier
        frames through the memory (constant when the state is detached).

        Args:
            targets: per stream ``{"mask": BoolTensor (H, W)}``, the foreground.
        Returns:
            ``{"loss_mask": scalar}``.
        """
        logits = out.raw["logits"][:, 0]
        masks = torch.stack([target["mask"] for target in targets]).to(device=logits.device, dtype=logits.dtype)
        if masks.shape != logits.shape:
            raise ValueError(f"target masks {tuple(masks.shape)} do not match predictions {tuple(logits.shape)}")
        return {"loss_mask": F.binary_cross_entropy_with_logits(logits, masks)}

    def mirror_raw(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Flip the logits of a mirrored frame back (width axis).

        ``window_logits`` computed on the mirrored frame's window ``(i, j)`` become those of
        window ``(i, M - N - j)`` of the original frame. Flipping the stride-16 logits
        commutes with the bilinear ``align_corners=False`` upsampling (integer scale, sample
        points symmetric about the centre), so ``logits`` and the mask memory agree.
        """
        return {**raw, "logits": raw["logits"].flip(-1), "window_logits": raw["window_logits"].flip(-1)}
