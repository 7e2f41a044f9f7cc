"""The memory-guided interleaved detector of Looking Fast and Slow (Liu et al. 2019, Sec. 3.1-3.2).

Per stream and frame, one of two feature extractors runs (the action: 0 = the large f0,
1 = the small f1), a grouped bottleneck ConvLSTM fuses its features with the stream's
memory, and SSDLite detects on the LSTM output::

    M_t, s_t = m(f_a(I_t), s_{t-1})        # s = (c, h); f1 keeps s_{t-1} (Sec. 3.2)
    D_t      = d(M_t)                      # SSDLite on M_t and four extra maps

The detector part ``d``: the ``10 x 10`` LSTM output (640 channels at 320 x 320) and four
extra maps of 256 channels (5x5, 3x3, 2x2, 1x1: a 1x1 convolution to 128 channels then a
stride-2 3x3 separable convolution to 256), one separable box predictor per map (a
depthwise 3x3 and a pointwise convolution), anchors of aspect ratios ``{1, 2, 0.5}`` plus
SSD's extra square box between two scales (4 per location, as the authors'
``ssd_anchor_generator``). Matching, box coding, the multibox loss and decoding are
torchvision's SSD building blocks (:mod:`patchwork.models.ssd_parts`).

Only the extractor chosen for a stream runs on that stream: the streams are grouped by
action, each group batched through its extractor and the LSTM, and the head runs once on
all streams.

The per-stream state (a :class:`~patchwork.nn.StreamState`, reset one stream at a time by
``StreamState.reset``):

* ``lfs.c``, ``lfs.h`` ``(B, S, h, w)``: the LSTM memory;
* ``lfs.c_prev``, ``lfs.h_prev``: the memory before the last step, for the adaptive
  policy's ``c_t - c_{t-1}`` and ``h_t - h_{t-1}`` (Sec. 3.4, Eq. 1);
* ``lfs.eta`` ``(B, 20)``: the action history, entry ``k - 1`` is 1 if f1 ran ``k`` steps
  ago (entry 0 is the step just taken).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssdlite import SSDLiteHead
from torchvision.ops.misc import Conv2dNormActivation

from patchwork.models.lfs.extractors import MobileNetV2Extractor, check_matching_maps
from patchwork.models.ssd_parts import (
    FeatureMapChain,
    SSDPredictions,
    SSD_BATCH_NORM,
    default_boxes,
    halved_sizes,
    multibox_loss_per_image,
    separable_layer,
)
from patchwork.models.streaming import Description, StepOutput, StreamingModel
from patchwork.nn import GroupedBottleneckLSTM, StreamState
from patchwork.nn.spaces import Discrete

#: Actions: which extractor runs on a stream's frame.
F0, F1 = 0, 1
C, H, C_PREV, H_PREV, ETA = "lfs.c", "lfs.h", "lfs.c_prev", "lfs.h_prev", "lfs.eta"
#: Sec. 3.4: "The action history is a binary vector of length 20."
HISTORY_LENGTH = 20


class ExtraFeatureMaps(FeatureMapChain):
    """SSDLite's extra maps after ``M_t``: each a 1x1 convolution to ``bottleneck`` channels,
    then a depthwise 3x3 stride-2 and a pointwise convolution to its output channels (all
    BatchNorm + ReLU6), as the authors' ``multi_resolution_feature_maps`` with ``insert_1x1_conv``.

    Args:
        in_channels: channels of ``M_t``.
        channels: output channels of each extra map (four of 256 in the paper).
        bottleneck: channels of each 1x1 convolution (half the output, 128, by default).
    """

    def __init__(self, in_channels: int, channels: Sequence[int] = (256, 256, 256, 256), bottleneck: Sequence[int] | None = None) -> None:
        super().__init__()
        channels = list(channels)
        bottleneck = [c // 2 for c in channels] if bottleneck is None else list(bottleneck)
        inputs = [in_channels, *channels[:-1]]
        self.layers = nn.ModuleList(
            nn.Sequential(
                Conv2dNormActivation(a, mid, 1, norm_layer=SSD_BATCH_NORM, activation_layer=nn.ReLU6),
                *separable_layer(mid, b, stride=2),
            )
            for a, mid, b in zip(inputs, bottleneck, channels)
        )
        self.out_channels = channels


class LookingFastSlowDetector(SSDPredictions, StreamingModel):
    """Interleaved SSDLite detector with a shared LSTM memory (LFS, Sec. 3.1-3.2).

    Args:
        f0, f1: the large and small extractors; their maps must match at the frame size.
        lstm: the grouped bottleneck LSTM, with ``input_channels == [f0.out_channels, f1.out_channels]``.
        num_classes: object classes, without background (30 for ImageNet VID).
        image_size: the default frame size ``(H, W)`` of :meth:`init_state` (320 x 320 in the paper).
        extra_channels: channels of the extra SSD maps.
        score_thresh, nms_thresh, detections_per_img, topk_candidates: decoding, as torchvision's SSD
            (the authors' config: NMS IoU 0.5, 100 detections).
        iou_thresh: default-box matching threshold; ``neg_to_pos_ratio``: hard negatives per positive.
        policy: the adaptive interleaving Q-network on :meth:`observe` (Sec. 3.4), or ``None``.

    The action space is ``Discrete(2)`` (0 = f0, 1 = f1), f0 on a stream's first frame.

    Raw outputs (``StepOutput.raw``): ``cls_logits (B, A, num_classes + 1)``,
    ``bbox_regression (B, A, 4)``, ``image_size`` and the step's ``actions (B,)``.
    """

    task = "detection"

    def __init__(
        self,
        f0: MobileNetV2Extractor,
        f1: MobileNetV2Extractor,
        lstm: GroupedBottleneckLSTM,
        num_classes: int,
        image_size: tuple[int, int] = (320, 320),
        extra_channels: Sequence[int] = (256, 256, 256, 256),
        score_thresh: float = 0.01,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        topk_candidates: int = 300,
        iou_thresh: float = 0.5,
        neg_to_pos_ratio: int = 3,
        policy: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.action_space = Discrete(2, first=F0)
        self.interleaving = policy
        if lstm.input_channels != [f0.out_channels, f1.out_channels]:
            raise ValueError(
                f"the LSTM reads {lstm.input_channels} channels but the extractors give "
                f"{[f0.out_channels, f1.out_channels]}"
            )
        self.f0, self.f1, self.lstm = f0, f1, lstm
        self.num_classes = int(num_classes)
        self.image_size = tuple(image_size)
        self.map_size(self.image_size)
        self.extras = ExtraFeatureMaps(lstm.out_channels, extra_channels)
        num_maps = 1 + len(self.extras.out_channels)
        self.anchor_generator = DefaultBoxGenerator([[2]] * num_maps, min_ratio=0.2, max_ratio=0.95)
        self.head = SSDLiteHead(
            [lstm.out_channels, *self.extras.out_channels],
            self.anchor_generator.num_anchors_per_location(),
            self.num_classes + 1,
            SSD_BATCH_NORM,
        )
        self.box_coder = det_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
        self.proposal_matcher = det_utils.SSDMatcher(iou_thresh)
        self.neg_to_pos_ratio = neg_to_pos_ratio
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.topk_candidates = topk_candidates
        self.register_imagenet_normalization()
        self._anchor_cache: dict[tuple[int, int, torch.device], Tensor] = {}

    @property
    def extractors(self) -> tuple[MobileNetV2Extractor, MobileNetV2Extractor]:
        """``(f0, f1)``, indexed by action."""
        return self.f0, self.f1

    def map_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """Size ``(h, w)`` of the memory for frames of ``image_size`` (10 x 10 at 320 x 320).

        Raises:
            ValueError: the two extractors' maps differ at this size.
        """
        return check_matching_maps([self.f0, self.f1], image_size)

    def check_image_size(self, image_size: tuple[int, int]) -> None:
        """Both extractors must give maps of one size (see :meth:`map_size`)."""
        self.map_size(tuple(image_size))

    @property
    def policy_network(self) -> nn.Module | None:
        """The adaptive interleaving Q-network (Sec. 3.4): observation -> ``(B, 2)``."""
        return self.interleaving

    def describe(self) -> Description:
        """``"LFS"``; the interleaving policy names the rest ("LFS interleaved tau=9")."""
        return Description("LFS", (), {"f0_channels": self.f0.out_channels, "f1_channels": self.f1.out_channels,
                                       "lstm_channels": self.lstm.state_channels, "groups": self.lstm.groups})

    def action_overlay(self, actions: Tensor, image_size: tuple[int, int],
                       state: StreamState | None = None) -> dict[str, Any]:
        """Which extractor ran, and with ``state`` the LSTM memory's age (frames since f0 last ran,
        from the action history ``eta``; at most its length): ``{"text": "f0"}``, ``{"text": "f1, f0 2 frames ago"}``."""
        if int(actions) == F0:
            return {"text": "f0"}
        if state is None:
            return {"text": "f1"}
        history = state[ETA][0]  # entry k - 1: f1 ran k steps ago (k = 1: this frame)
        age = int(history.size(0)) if bool(history.all()) else int(torch.argmin(history).item())
        return {"text": f"f1, f0 {age} frame{'s' if age != 1 else ''} ago", "age": age}

    def action_statistics(self, actions: Tensor) -> dict[str, float]:
        """``{"actions/f0_rate": share of the frames (any shape of actions) on which f0 ran}`` (Fig. 8)."""
        return {"actions/f0_rate": float((actions == F0).float().mean())} if actions.numel() else {}

    # ----------------------------------------------------------------- state
    def init_state(
        self, batch_size: int, image_size: tuple[int, int] | None = None, device: torch.device | str | None = None
    ) -> StreamState:
        """Zero memory and history for ``batch_size`` streams of ``image_size`` (default: the model's).

        Returns:
            ``lfs.c``, ``lfs.h``, ``lfs.c_prev``, ``lfs.h_prev`` ``(B, S, h, w)`` and ``lfs.eta`` ``(B, 20)``.
        """
        image_size = self.image_size if image_size is None else tuple(image_size)
        device = self.pixel_mean.device if device is None else device
        c, h = self.lstm.init_state(batch_size, self.map_size(image_size), device)
        return StreamState(
            {C: c, H: h, C_PREV: c.clone(), H_PREV: h.clone(), ETA: torch.zeros(batch_size, HISTORY_LENGTH, device=device)}
        )


    # ------------------------------------------------------------------ step
    def remember(self, frames: Tensor, actions: Tensor, state: StreamState) -> tuple[Tensor, StreamState]:
        """Extractors and LSTM: ``M_t`` of every stream and the new state.

        Args:
            frames: normalised frames ``(B, 3, H, W)``.
            actions: LongTensor ``(B,)``, 0 = f0 (updates the memory), 1 = f1 (keeps it).
            state: the streams' state.
        Returns:
            ``M_t`` ``(B, 2S, h, w)`` and the new state (memory, previous memory, history).
        """
        c, h = state[C], state[H]
        if frames.shape[0] != c.shape[0] or actions.shape != (c.shape[0],):
            raise ValueError(f"{frames.shape[0]} frames and {tuple(actions.shape)} actions for {c.shape[0]} streams")
        if bool(((actions != F0) & (actions != F1)).any()):
            raise ValueError(f"actions must be 0 (f0) or 1 (f1), got {actions.tolist()}")
        size = self.map_size(frames.shape[-2:])
        if size != tuple(c.shape[-2:]):
            raise ValueError(f"frames of {tuple(frames.shape[-2:])} give {size} maps; the state holds {tuple(c.shape[-2:])}")
        batch = c.shape[0]
        output, c_new, h_new = None, c, h
        for action, extractor in enumerate(self.extractors):
            streams = torch.nonzero(actions == action).squeeze(1)
            if streams.numel() == 0:
                continue
            # When every stream takes this extractor (always so for one stream) there is nothing to
            # gather or scatter: the copies would cost ~1 ms of f1's 15 ms step at 320x320 and drop
            # the frames' channels-last layout.
            whole = streams.numel() == batch
            pick = (lambda x: x) if whole else (lambda x: x[streams])
            out, c_a, h_a = self.lstm(extractor(pick(frames)), action, pick(c), pick(h), update_state=action == F0)
            if whole:
                output = out
                if action == F0:
                    c_new, h_new = c_a, h_a
                continue
            output = (out.new_zeros(batch, *out.shape[1:]) if output is None else output).index_copy(0, streams, out)
            if action == F0:
                c_new, h_new = c_new.index_copy(0, streams, c_a), h_new.index_copy(0, streams, h_a)
        ran_f1 = (actions == F1).to(state[ETA].dtype).unsqueeze(1)
        eta = torch.cat([ran_f1, state[ETA][:, :-1]], dim=1)
        return output, StreamState({C: c_new, H: h_new, C_PREV: c, H_PREV: h, ETA: eta})

    def detect(self, memory_output: Tensor, image_size: tuple[int, int]) -> dict[str, Any]:
        """SSDLite on ``M_t`` ``(B, 2S, h, w)``: raw ``cls_logits (B, A, C + 1)``, ``bbox_regression (B, A, 4)``."""
        head = self.head([memory_output, *self.extras(memory_output)])
        return {**head, "image_size": tuple(image_size)}

    def forward_raw(self, frames: Tensor, actions: Tensor | None, state: StreamState) -> StepOutput:
        """One step of ``B`` streams (``forward`` adds the decoded predictions in eval mode).

        Args:
            frames: ``(B, 3, H, W)`` float in ``[0, 1]``.
            actions: LongTensor ``(B,)``, 0 = f0, 1 = f1; ``None`` runs f0 on every stream.
            state: from :meth:`init_state` or the previous step (not modified).
        Returns:
            ``StepOutput`` with ``raw``, the new ``state`` and, in eval mode, ``predictions``.
        """
        if actions is None:
            actions = torch.full((frames.shape[0],), F0, dtype=torch.long, device=frames.device)
        actions = actions.to(device=frames.device, dtype=torch.long)
        memory_output, state = self.remember(self.normalize(frames), actions, state)
        raw = self.detect(memory_output, frames.shape[-2:])
        raw["actions"] = actions
        return StepOutput(raw=raw, state=state)

    def observe(self, out: StepOutput) -> dict[str, Tensor]:
        """The adaptive policy's input ``S = (c_t, h_t, c_t - c_{t-1}, h_t - h_{t-1}, eta_t)`` (Eq. 1).

        Returns:
            ``c``, ``h``, ``c_delta``, ``h_delta`` ``(B, S, h, w)`` and ``eta`` ``(B, 20)``. After an
            f1 step the memory is unchanged, so the deltas are zero (the state the step stored,
            as Algorithm 1 builds ``S_t`` from ``s_t``).
        """
        state = out.state
        return {
            "c": state[C],
            "h": state[H],
            "c_delta": state[C] - state[C_PREV],
            "h_delta": state[H] - state[H_PREV],
            "eta": state[ETA],
        }

    # ---------------------------------------------------- predictions, loss
    def anchors(self, image_size: tuple[int, int], device: torch.device) -> Tensor:
        """Default boxes ``(A, 4)`` xyxy in pixels for frames of ``image_size`` (cached)."""
        key = (*image_size, torch.device(device))
        if key not in self._anchor_cache:
            levels = halved_sizes(self.map_size(image_size), 1 + len(self.extras.out_channels))
            self._anchor_cache[key] = default_boxes(self.anchor_generator, image_size, levels, device)
        return self._anchor_cache[key]

    def loss_per_stream(self, out: StepOutput, targets: list[dict[str, Tensor]]) -> Tensor:
        """``(B,)``: each stream's multibox loss (both terms, normalised by its own matches),
        the ``L(D^a)`` of the LFS reward (Eq. 2)."""
        anchors = self.anchors(out.raw["image_size"], out.raw["cls_logits"].device)
        return multibox_loss_per_image(
            out.raw, targets, anchors, self.box_coder, self.proposal_matcher, self.neg_to_pos_ratio
        )
