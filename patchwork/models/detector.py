"""The Patchwork SSDLite detector (supplementary Sec. A, Fig. 10).

* **High-resolution heads** (SSDLite separable predictors) run on the window's partial
  stride-16 and stride-32 maps; their depthwise convolutions are Patchwork cells, so a
  window's predictions equal the full-frame model's there. Their outputs are written into
  full-frame **prediction memories**: anchors outside the window keep the predictions of
  the frame that last looked at them (the paper: "predictions for the full frame based on
  the sub-windows from previous frames and the update from the current sub-window").
* **Pyramid + low-resolution heads** run on the backbone's restored full-frame stride-32
  memory (the "Patchwork cell" of Fig. 10): 4 separable layers reduce it (12x12 -> 6x6 ->
  3x3 -> 2x2 -> 1x1 at 384x384) and predict large objects over the whole frame.

Default boxes, box coding, matching, the multibox loss with hard-negative mining and the
post-processing (per-class NMS) are torchvision's SSD building blocks. Class indices in
targets and predictions are ``0 .. num_classes - 1`` (the SSD background class 0 is
internal). Boxes are ``(x1, y1, x2, y2)`` in full-frame pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssdlite import SSDLiteHead

from patchwork.models.ssd_parts import (
    FeatureMapChain,
    SSDPredictions,
    SSD_BATCH_NORM,
    default_boxes,
    halved_sizes,
    separable_layer,
)
from patchwork.models.stateful import StatefulPass, cell_memories, insert_cells, run_stateful
from patchwork.models.stateful_mobilenet import OUTPUT_MEMORY, StatefulMobileNetV2
from patchwork.models.patchwork_model import PatchworkModel
from patchwork.models.streaming import Stages, StepOutput
from patchwork.nn import FrameMemory, StreamState

#: SSDLite attaches its first head to the expansion layer of the first stride-32 block,
#: which still sees stride 16 (Sandler et al. 2018, Sec. 6.2).
STRIDE16_TAP = "features.14.conv.0"
HIGH_RES_HEAD = "high_res_head"
_BN = SSD_BATCH_NORM


class FeaturePyramid(FeatureMapChain):
    """Four separable layers that gradually reduce the restored stride-32 map (Fig. 10).

    Args:
        in_channels: channels of the restored map.
        channels: output channels of the four layers.
    """

    def __init__(self, in_channels: int, channels: Sequence[int] = (256, 256, 256, 128)) -> None:
        super().__init__()
        sizes = [in_channels, *channels]
        # One pyramid layer of Fig. 10: depthwise 3x3 stride 2, then pointwise (both BN + ReLU6).
        self.layers = nn.ModuleList(separable_layer(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out_channels = list(channels)


def _flatten_level(x: Tensor, columns: int) -> Tensor:
    """``(B, A * K, H, W)`` head output -> ``(B, H * W * A, K)``, the default boxes' order."""
    batch, _, height, width = x.shape
    return x.view(batch, -1, columns, height, width).permute(0, 3, 4, 1, 2).reshape(batch, -1, columns)


class PatchworkDetector(SSDPredictions, PatchworkModel):
    """Streaming SSDLite detector on the stateful MobileNetV2 (Fig. 10).

    Args:
        backbone: the stateful MobileNetV2; its grid is the detector's.
        num_classes: object classes, without background (30 for ImageNet VID).
        attention: the attention Q-network on the restored stride-32 memory, or ``None``.
        pyramid_channels: nominal output channels of the four pyramid layers (at width 1.0).
            They scale with ``width_mult`` as the TensorFlow object detection API's SSD
            feature extractors scale their extra layers (``depth_multiplier``, never below
            ``min_depth``): ``max(int(c * width_mult), min_depth)``.
        min_depth: the fewest channels a pyramid layer keeps (16, the API's SSDLite MobileNetV2 configs).
        history_alpha: the action history's decay (Eq. 1).
        width_mult: the backbone's width multiplier (the tables' ``depth``), for labels.
        score_thresh, nms_thresh, detections_per_img, topk_candidates: post-processing,
            as torchvision's SSD.
        iou_thresh: default-box matching threshold; ``neg_to_pos_ratio``: hard negatives
            per positive in the classification loss.

    Raw outputs (``StepOutput.raw``): ``cls_logits`` ``(B, num_anchors, num_classes + 1)``
    and ``bbox_regression`` ``(B, num_anchors, 4)`` over the full frame.
    """

    task = "detection"

    def __init__(
        self,
        backbone: StatefulMobileNetV2,
        num_classes: int,
        attention: nn.Module | None = None,
        pyramid_channels: Sequence[int] = (256, 256, 256, 128),
        history_alpha: float = 0.5,
        width_mult: float = 1.0,
        min_depth: int = 16,
        score_thresh: float = 0.01,
        nms_thresh: float = 0.55,
        detections_per_img: int = 100,
        topk_candidates: int = 300,
        iou_thresh: float = 0.5,
        neg_to_pos_ratio: int = 3,
    ) -> None:
        super().__init__(backbone, attention, history_alpha, width_mult)
        self.backbone = backbone
        self.num_classes = num_classes
        scaled = [max(int(channels * width_mult), min_depth) for channels in pyramid_channels]
        self.pyramid = FeaturePyramid(backbone.out_channels, scaled)
        self.anchor_generator = DefaultBoxGenerator([[2, 3]] * 6, min_ratio=0.2, max_ratio=0.95)
        anchors = self.anchor_generator.num_anchors_per_location()
        tap_channels = backbone.features.get_submodule(STRIDE16_TAP.removeprefix("features.")).out_channels
        self.high_res_channels = [tap_channels, backbone.out_channels]
        self.high_res_head = SSDLiteHead(self.high_res_channels, anchors[:2], num_classes + 1, _BN)
        self.low_res_head = SSDLiteHead(self.pyramid.out_channels, anchors[2:], num_classes + 1, _BN)
        self.high_res_strides = (16, backbone.out_stride)
        if backbone.cells != "none" and not self.grid.is_full_frame:
            heads = (self.high_res_head.classification_head, self.high_res_head.regression_head)
            for head in heads:
                for level, stride in zip(head.module_list, self.high_res_strides):
                    insert_cells(level, stride)
        self.prediction_memories = nn.ModuleDict(
            {
                f"{kind}{level}": FrameMemory(count * columns, stride)
                for kind, columns in (("cls", num_classes + 1), ("reg", 4))
                for level, (count, stride) in enumerate(zip(anchors[:2], self.high_res_strides))
            }
        )
        self.box_coder = det_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
        self.proposal_matcher = det_utils.SSDMatcher(iou_thresh)
        self.neg_to_pos_ratio = neg_to_pos_ratio
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.topk_candidates = topk_candidates
        self._anchor_cache: dict[tuple[int, int, torch.device], tuple[Tensor, Tensor]] = {}

    # ----------------------------------------------------------------- state
    def _head_cells(self) -> list[tuple[str, Any]]:
        return cell_memories(self.high_res_head, HIGH_RES_HEAD)

    def init_model_state(self, batch_size: int, image_size: tuple[int, int], device: torch.device | str) -> StreamState:
        state = self.backbone.init_state(batch_size, image_size, device=device)
        for name, cell in self._head_cells():
            state[name] = cell.memory.init(batch_size, image_size, device)
        for name, memory in self.prediction_memories.items():
            state[f"predictions.{name}"] = memory.init(batch_size, image_size, device)
        return state

    # --------------------------------------------------------------- anchors
    def anchors(self, image_size: tuple[int, int], device: torch.device) -> Tensor:
        """Default boxes ``(num_anchors, 4)`` in pixels for frames of ``image_size`` (cached)."""
        return self._anchors_and_mirror(image_size, device)[0]

    def _level_sizes(self, image_size: tuple[int, int]) -> list[tuple[int, int]]:
        return halved_sizes((image_size[0] // 16, image_size[1] // 16), 6)

    def _anchors_and_mirror(self, image_size: tuple[int, int], device: torch.device) -> tuple[Tensor, Tensor]:
        key = (*image_size, device)
        if key not in self._anchor_cache:
            sizes = self._level_sizes(image_size)
            anchors = default_boxes(self.anchor_generator, image_size, sizes, device)
            # Horizontal mirror of the default boxes: column x -> W - 1 - x on every level;
            # every box shape is symmetric, so each anchor maps to one anchor.
            per_location = self.anchor_generator.num_anchors_per_location()
            mirror, start = [], 0
            for (h, w), count in zip(sizes, per_location):
                index = torch.arange(h * w * count, device=device).view(h, w, count)
                mirror.append(index.flip(1).reshape(-1) + start)
                start += h * w * count
            self._anchor_cache[key] = (anchors, torch.cat(mirror))
        return self._anchor_cache[key]

    # ------------------------------------------------------------------ step
    def window_stages(self, frames: Tensor, actions: Tensor | None, state: StreamState) -> Stages[StepOutput]:
        """Window pass (``actions=None``: full frame), high-res heads into prediction memories,
        pyramid and low-res heads on the restored frame."""
        image_size = (frames.shape[-2], frames.shape[-1])
        if actions is None:
            out, taps, state = yield from self.backbone.forward_full_stages(frames, state, taps=[STRIDE16_TAP])
            placements = None
        else:
            crops = self.grid.crop(frames, actions)
            out, taps, state = yield from self.backbone.forward_stages(crops, actions, state, taps=[STRIDE16_TAP])
            placements = self.backbone.window_placements(actions, image_size, self.high_res_strides)
        step = StatefulPass(state, placements)
        heads = {"cls": self.high_res_head.classification_head, "reg": self.high_res_head.regression_head}
        for kind, head in heads.items():
            for level, (block, x) in enumerate(zip(head.module_list, (taps[STRIDE16_TAP], out))):
                window = run_stateful(block, f"{HIGH_RES_HEAD}.{head_name(kind)}.module_list.{level}", x, step)
                key = f"predictions.{kind}{level}"
                memory = self.prediction_memories[f"{kind}{level}"]
                if placements is None:
                    state[key] = memory.write_full(window)
                else:
                    state[key] = memory.write(state[key], window, placements[self.high_res_strides[level]])
                yield
        restored = self.backbone.memory(state, OUTPUT_MEMORY)
        levels = self.pyramid(restored)
        yield
        low = self.low_res_head(levels)
        yield
        raw = {
            "cls_logits": torch.cat(
                [self._flat_memory(state, "cls", level, self.num_classes + 1) for level in (0, 1)]
                + [low["cls_logits"]],
                dim=1,
            ),
            "bbox_regression": torch.cat(
                [self._flat_memory(state, "reg", level, 4) for level in (0, 1)] + [low["bbox_regression"]], dim=1
            ),
            "image_size": image_size,
        }
        return StepOutput(raw=raw, state=state)

    def forward_dense(self, frames: Tensor) -> dict[str, Tensor]:
        """The stateless detector on whole normalised frames ``(B, 3, H, W)``: backbone and all heads.

        Returns:
            ``{"cls_logits" (B, num_anchors, num_classes + 1), "bbox_regression" (B, num_anchors, 4)}``,
            equal to the single-frame model's raw outputs. No state is read or kept, so
            other frameworks (e.g. BlockCopy's ``BlockCopyNetwork``) can trace and convert it.
        """
        step = StatefulPass(StreamState(), None, {STRIDE16_TAP: None})
        out = run_stateful(self.backbone.features, "features", frames, step)
        low = self.low_res_head(self.pyramid(out))
        raw = {}
        for kind, key, columns in (("cls", "cls_logits", self.num_classes + 1), ("reg", "bbox_regression", 4)):
            head = getattr(self.high_res_head, head_name(kind))
            high = []
            for level, (block, x) in enumerate(zip(head.module_list, (step.taps[STRIDE16_TAP], out))):
                name = f"{HIGH_RES_HEAD}.{head_name(kind)}.module_list.{level}"
                high.append(_flatten_level(run_stateful(block, name, x, step), columns))
            raw[key] = torch.cat([*high, low[key]], dim=1)
        return raw

    def _flat_memory(self, state: StreamState, kind: str, level: int, columns: int) -> Tensor:
        return _flatten_level(state[f"predictions.{kind}{level}"], columns)

    # ---------------------------------------------------- predictions, loss: SSDPredictions
    def mirror_raw(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Raw outputs of mirrored frames mapped back: anchors mirrored, ``dx`` negated."""
        _, mirror = self._anchors_and_mirror(raw["image_size"], raw["cls_logits"].device)
        regression = raw["bbox_regression"][:, mirror] * raw["bbox_regression"].new_tensor([-1.0, 1.0, 1.0, 1.0])
        return {**raw, "cls_logits": raw["cls_logits"][:, mirror], "bbox_regression": regression}


def head_name(kind: str) -> str:
    """Attribute of ``SSDLiteHead`` holding the ``"cls"`` or ``"reg"`` predictors."""
    return {"cls": "classification_head", "reg": "regression_head"}[kind]
