"""``resolution=area``: the model on downscaled frames, predictions mapped back (Chai 2019, Tab. 4/5)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from patchwork.models.baselines.wrapper import StreamingWrapper
from patchwork.models.streaming import Description, Prediction, StepOutput, StreamingModel
from patchwork.nn import StreamState

MASK_KEYS = ("mask", "scores")


class Resolution(StreamingWrapper):
    """``resolution=area``: run the model on frames downscaled to ``area`` times the image area.

    Each side is scaled by ``sqrt(area)`` (rounded to whole pixels; e.g. ``area=0.25`` halves
    each side) with bilinear antialiased resizing. Predictions are mapped back to the
    original frame: ``"boxes"`` ``(N, 4)`` ``(x1, y1, x2, y2)`` are scaled by the per-axis
    ratio of the sizes; ``"mask"`` and ``"scores"`` maps ``(h, w)`` are upsampled (bilinear
    for floating point scores, nearest for bool/integer masks); other keys (labels,
    per-box ``(N,)`` scores) are unchanged. The downscaled size must satisfy the model's
    grid alignment.

    Args:
        model: the streaming model.
        area: image-area factor, ``> 0``.

    ``raw`` of a step: ``{"scaled": the model's raw outputs at the low resolution,
    "image_size": (H, W)}``.
    """

    def __init__(self, model: StreamingModel, area: float) -> None:
        super().__init__(model)
        if not area > 0:
            raise ValueError(f"area must be > 0, got {area}")
        self.area = float(area)
        self.scale = math.sqrt(self.area)

    def scaled_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """``(h, w)`` the model runs on; raises ``ValueError`` if the model's grid rejects it."""
        height, width = int(image_size[0]), int(image_size[1])
        size = (round(height * self.scale), round(width * self.scale))
        try:
            self.model.check_image_size(size)
        except ValueError as error:
            raise ValueError(
                f"Resolution(area={self.area}) scales {height}x{width} frames to {size[0]}x{size[1]} "
                f"(side scale {self.scale:.4f}), which the model cannot run on: {error}"
            ) from error
        return size

    def init_state(
        self, batch_size: int, image_size: tuple[int, int], device: torch.device | str | None = None
    ) -> StreamState:
        return self.model.init_state(batch_size, self.scaled_size(image_size), device)

    def check_image_size(self, image_size: tuple[int, int]) -> None:
        self.scaled_size(image_size)

    def forward_raw(self, frames: Tensor, actions: Tensor | None, state: StreamState) -> StepOutput:
        image_size = (int(frames.shape[-2]), int(frames.shape[-1]))
        size = self.scaled_size(image_size)
        if frames.dtype == torch.uint8:
            frames = frames.float() / 255.0
        if size != image_size:
            frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=True)
        out = self.model.forward_raw(frames, actions, state)
        return StepOutput({"scaled": out.raw, "image_size": image_size}, out.state)

    def _scaled(self, out: StepOutput) -> StepOutput:
        return StepOutput(out.raw["scaled"], out.state)

    def observe(self, out: StepOutput) -> dict[str, Tensor] | None:
        return self.model.observe(self._scaled(out))

    def predict(self, out: StepOutput, min_score: float | None = None) -> list[Prediction]:
        """The model's predictions, mapped back to the original frame size."""
        image_size = out.raw["image_size"]
        size = self.scaled_size(image_size)
        return [rescale_prediction(p, size, image_size) for p in self.model.predict(self._scaled(out), min_score)]

    def loss(self, out: StepOutput, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """The model's loss against targets mapped to the low resolution (boxes scaled, masks resized nearest)."""
        image_size = out.raw["image_size"]
        size = self.scaled_size(image_size)
        return self.model.loss(self._scaled(out), [rescale_target(t, image_size, size) for t in targets])

    def mirror_raw(self, raw: dict[str, Any]) -> dict[str, Any]:
        return {"scaled": self.model.mirror_raw(raw["scaled"]), "image_size": raw["image_size"]}

    def mirror_actions(self, actions: Tensor) -> Tensor:
        return self.model.mirror_actions(actions)

    def describe(self) -> Description:
        return self.model.describe().with_options(after=(f"resolution={self.area:g}",), resolution=self.area)

    def action_overlay(self, actions: Tensor, image_size: tuple[int, int],
                       state: StreamState | None = None) -> dict[str, Any]:
        """The model's overlay at the low resolution, its box scaled back to ``image_size``."""
        size = self.scaled_size(image_size)
        overlay = dict(self.model.action_overlay(actions, size, state))
        if "box" in overlay:
            sy, sx = image_size[0] / size[0], image_size[1] / size[1]
            x1, y1, x2, y2 = overlay["box"]
            overlay["box"] = (x1 * sx, y1 * sy, x2 * sx, y2 * sy)
        return overlay


def _box_factors(source: tuple[int, int], target: tuple[int, int], like: Tensor) -> Tensor:
    """``(sx, sy, sx, sy)`` mapping ``(x1, y1, x2, y2)`` pixel boxes from ``source`` to ``target`` sizes."""
    sy, sx = target[0] / source[0], target[1] / source[1]
    return torch.tensor([sx, sy, sx, sy], dtype=like.dtype, device=like.device)


def _resize_map(value: Tensor, size: tuple[int, int], nearest: bool = False) -> Tensor:
    """Resize an ``(..., h, w)`` map: bilinear for floating point, nearest for bool/integer (or if asked)."""
    lead = value.shape[:-2]
    flat = value.reshape(1, -1, *value.shape[-2:])
    if value.is_floating_point() and not nearest:
        resized = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    else:
        numeric = flat.to(torch.uint8 if value.dtype == torch.bool else torch.float32)
        resized = F.interpolate(numeric, size=size, mode="nearest").to(value.dtype)
    return resized.reshape(*lead, *size)


def rescale_prediction(prediction: Prediction, source: tuple[int, int], target: tuple[int, int]) -> Prediction:
    """Map one stream's prediction from a ``source = (h, w)`` frame to a ``target = (H, W)`` frame.

    ``"boxes"`` ``(N, 4)`` in pixels are scaled per axis; ``"mask"``/``"scores"`` maps of
    shape ``source`` are resized (see :class:`Resolution`); everything else is kept.
    """
    result = dict(prediction)
    if "boxes" in result and result["boxes"].is_floating_point():
        result["boxes"] = result["boxes"] * _box_factors(source, target, result["boxes"])
    for key in MASK_KEYS:
        value = result.get(key)
        if value is not None and value.dim() == 2 and tuple(value.shape) == tuple(source):
            result[key] = _resize_map(value, target)
    return result


def rescale_target(target: dict[str, Tensor], source: tuple[int, int], size: tuple[int, int]) -> dict[str, Tensor]:
    """Map one stream's target to a ``size = (h, w)`` frame: boxes scaled, ``"mask"``/``"masks"`` resized nearest."""
    result = dict(target)
    if "boxes" in result:
        boxes = result["boxes"].float() if not result["boxes"].is_floating_point() else result["boxes"]
        result["boxes"] = boxes * _box_factors(source, size, boxes)
    for key in ("mask", "masks"):
        value = result.get(key)
        if value is not None and value.dim() >= 2 and tuple(value.shape[-2:]) == tuple(source):
            # Nearest keeps the labels binary: a target is never blurred.
            result[key] = _resize_map(value, size, nearest=True)
    return result
