"""TensorBoard logging: namespaced scalars, hyperparameters, attention frames and cell memories.

Tags are namespaced as in CleanRL so TensorBoard groups them into sections::

    losses/td  losses/task  rewards/mean  q/mean  charts/epsilon  charts/lr  perf/frames_per_s

Images: :func:`render_attention_frame` draws a frame with the attention window in red (the
paper's Fig. 2, top) and the predicted boxes; :func:`render_memory` draws a Patchwork cell's
full-frame memory (Fig. 2, bottom: a patchwork of windows seen at different times). Both are
pure functions returning ``uint8`` ``(3, H, W)`` tensors, usable outside TensorBoard too.

Only rank 0 logs under DDP: ``ExperimentLogger(log_dir, enabled=ctx.is_main)``; a disabled
logger does nothing and creates no files. :func:`read_scalars` / :func:`read_images` read a
log directory back (for tests and notes).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch
import numpy as np
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

PathLike = str | os.PathLike

#: Fig. 2 draws attention windows in red.
WINDOW_COLOR = (255, 0, 0)
PREDICTION_COLOR = (0, 255, 0)
GROUND_TRUTH_COLOR = (255, 255, 0)


def _to_uint8_image(image: Tensor) -> Tensor:
    """``(3, H, W)`` float in ``[0, 1]`` (clamped) or uint8 -> uint8 on the CPU."""
    image = image.detach().cpu()
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an RGB image (3, H, W), got shape {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        return image
    return (image.float().clamp(0, 1) * 255).round().to(torch.uint8)


def _pixel_boxes(boxes: Tensor, height: int, width: int) -> Tensor:
    """Continuous xyxy boxes (x2, y2 exclusive edges) -> inclusive pixel boxes inside the image.

    A window ``[0, 0, W, H]`` covers pixels ``0 .. W-1``; drawing it at ``x2 - 1`` keeps its right
    and bottom borders on the window's last pixels instead of just outside the image.
    """
    boxes = boxes.detach().cpu().float().reshape(-1, 4).clone()
    boxes[:, 2:] -= 1
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height - 1)
    # Clamping a box lying wholly outside can invert it only by rounding; keep x1 <= x2.
    boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2])
    return boxes


def _line_width(height: int, width: int) -> int:
    return max(1, round(min(height, width) / 128))


def render_attention_frame(
    frame: Tensor,
    window_box: Tensor | tuple[float, float, float, float],
    boxes: Tensor | None = None,
    labels: list[str] | None = None,
    ground_truth: Tensor | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """Draw a frame with its attention window, predictions and optionally ground truth / a mask.

    Args:
        frame: ``(3, H, W)`` float in ``[0, 1]`` (values outside are clamped) or uint8.
        window_box: the attention window ``(x1, y1, x2, y2)`` in frame pixels, drawn in red.
        boxes: predicted boxes ``(N, 4)`` xyxy in frame pixels, drawn in green.
        labels: ``N`` strings drawn beside the predicted boxes (e.g. ``"car 0.91"``).
        ground_truth: ground-truth boxes ``(K, 4)`` xyxy, drawn in yellow.
        mask: predicted foreground ``(H, W)`` bool, overlaid in green (segmentation).
    Returns:
        ``uint8`` ``(3, H, W)``.
    """
    image = _to_uint8_image(frame)
    _, height, width = image.shape
    line = _line_width(height, width)
    if mask is not None:
        image = draw_segmentation_masks(image, mask.detach().cpu().bool(), alpha=0.4, colors=PREDICTION_COLOR)
    if ground_truth is not None and ground_truth.numel():
        image = draw_bounding_boxes(
            image, _pixel_boxes(ground_truth, height, width), colors=GROUND_TRUTH_COLOR, width=line
        )
    if boxes is not None and boxes.numel():
        if labels is not None and len(labels) != boxes.reshape(-1, 4).shape[0]:
            raise ValueError(f"{len(labels)} labels for {boxes.reshape(-1, 4).shape[0]} boxes")
        image = draw_bounding_boxes(
            image, _pixel_boxes(boxes, height, width), labels=labels, colors=PREDICTION_COLOR, width=line
        )
    window = torch.as_tensor(window_box, dtype=torch.float32)
    # The window goes on top: it is what the figure is about.
    return draw_bounding_boxes(image, _pixel_boxes(window, height, width), colors=WINDOW_COLOR, width=line + 1)


def render_memory(
    memory: Tensor,
    size: tuple[int, int] | None = None,
    window_box: Tensor | tuple[float, float, float, float] | None = None,
) -> Tensor:
    """Render a Patchwork cell memory as an image, like the paper's Fig. 2 (bottom).

    Args:
        memory: ``(C, H, W)`` one stream's cell memory. ``C == 3`` (the input cell, holding
            normalised pixels) is shown as RGB with each channel min-max normalised, which
            undoes a per-channel mean/std normalisation; any other ``C`` is shown as the
            grey-level channel mean, min-max normalised. A constant map renders black.
        size: output ``(H', W')``, upsampled with nearest neighbour so cells stay visible as
            blocks; default: the smallest integer factor making the longer side >= 256 px.
        window_box: optional window ``(x1, y1, x2, y2)`` in output pixels, drawn in red.
    Returns:
        ``uint8`` ``(3, H', W')``.
    """
    if memory.dim() != 3:
        raise ValueError(f"expected one stream's memory (C, H, W), got shape {tuple(memory.shape)}")
    memory = memory.detach().cpu().float()
    channels, height, width = memory.shape
    planes = memory if channels == 3 else memory.mean(dim=0, keepdim=True)
    low = planes.amin(dim=(1, 2), keepdim=True)
    span = planes.amax(dim=(1, 2), keepdim=True) - low
    planes = torch.where(span > 0, (planes - low) / span.clamp_min(torch.finfo(torch.float32).tiny), 0.0)
    if size is None:
        factor = max(1, math.ceil(256 / max(height, width)))
        size = (height * factor, width * factor)
    planes = F.interpolate(planes[None], size=tuple(size), mode="nearest")[0]
    image = _to_uint8_image(planes.expand(3, -1, -1))
    if window_box is None:
        return image
    window = torch.as_tensor(window_box, dtype=torch.float32)
    line = _line_width(*image.shape[1:]) + 1
    return draw_bounding_boxes(image, _pixel_boxes(window, *image.shape[1:]), colors=WINDOW_COLOR, width=line)


def _flatten(values: Mapping, prefix: str = "") -> dict[str, int | float | str | bool]:
    """Nested config -> ``{"model.width": 1.0, ...}`` with values TensorBoard's hparams accept."""
    flat: dict[str, int | float | str | bool] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        elif isinstance(value, Tensor) and value.numel() == 1:
            flat[name] = value.item()
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:  # lists, None, paths: shown as text
            flat[name] = str(value)
    return flat


def _check_tag(tag: str) -> None:
    if "/" not in tag.strip("/"):
        raise ValueError(f"tag {tag!r} has no namespace; use e.g. 'losses/td', 'rewards/mean', 'charts/lr'")


class ExperimentLogger:
    """A ``SummaryWriter`` for one run, or a no-op on non-main ranks.

    Args:
        log_dir: the run's TensorBoard directory.
        enabled: ``False`` makes every method a no-op and creates no files (DDP ranks > 0).
        purge_step: when resuming from a checkpoint at this step, events the killed run logged
            at later steps are hidden by TensorBoard so curves do not fold back on themselves.
    """

    def __init__(self, log_dir: PathLike, enabled: bool = True, purge_step: int | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.enabled = enabled
        self._writer = None
        if enabled:
            # Imported lazily: a disabled logger (every rank but 0) needs no TensorBoard at all.
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step)

    def scalars(self, values: Mapping[str, float | Tensor], step: int) -> None:
        """Log ``{tag: value}`` at ``step``; tags must be namespaced (``losses/td``).

        Values are Python numbers or one-element tensors (read with ``.item()``, a device
        synchronisation for CUDA tensors); TensorBoard stores them as float32.
        """
        if self._writer is None:
            return
        for tag, value in values.items():
            _check_tag(tag)
            self._writer.add_scalar(tag, float(value), global_step=step)

    def hparams(self, hparams: Mapping, metrics: Mapping[str, float], step: int = 0) -> None:
        """Record the run's hyperparameters and summary metrics (TensorBoard's HPARAMS tab).

        Args:
            hparams: the (possibly nested) config; flattened to dotted keys (``optim.lr``),
                values other than numbers, strings and bools shown as text.
            metrics: ``{namespaced tag: value}``, e.g. ``{"hparams/final_reward": 0.31}``; also
                logged as scalars at ``step``.
        Written into this run's directory (not a timestamped sub-run as
        ``SummaryWriter.add_hparams`` does), so one directory holds the whole run.
        """
        if self._writer is None:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        metric_values = {tag: float(value) for tag, value in metrics.items()}
        for tag in metric_values:
            _check_tag(tag)
        experiment, start, end = hparams_summary(_flatten(hparams), metric_values)
        writer = self._writer._get_file_writer()
        for summary in (experiment, start, end):
            writer.add_summary(summary, step)
        self.scalars(metric_values, step)

    def image(self, tag: str, image: Tensor, step: int) -> None:
        """Log a ``(3, H, W)`` image (float in ``[0, 1]`` or uint8), stored losslessly as PNG."""
        if self._writer is None:
            return
        _check_tag(tag)
        self._writer.add_image(tag, _to_uint8_image(image), global_step=step, dataformats="CHW")

    def attention_frame(
        self,
        tag: str,
        frame: Tensor,
        window_box: Tensor | tuple[float, float, float, float],
        boxes: Tensor | None = None,
        step: int = 0,
        labels: list[str] | None = None,
        ground_truth: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> None:
        """Log a frame with its attention window (red) and predictions; see :func:`render_attention_frame`."""
        if self._writer is None:
            return
        self.image(tag, render_attention_frame(frame, window_box, boxes, labels, ground_truth, mask), step)

    def memory_mosaic(
        self,
        tag: str,
        memory: Tensor,
        step: int,
        size: tuple[int, int] | None = None,
        window_box: Tensor | tuple[float, float, float, float] | None = None,
    ) -> None:
        """Log a cell memory ``(C, H, W)`` rendered as in Fig. 2; see :func:`render_memory`."""
        if self._writer is None:
            return
        self.image(tag, render_memory(memory, size, window_box), step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "ExperimentLogger":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _accumulator(log_dir: PathLike):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        raise FileNotFoundError(f"no TensorBoard log directory at {log_dir}")
    # size_guidance 0 = keep every event (the default samples down to 10,000 scalars / 4 images per tag).
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def read_scalars(log_dir: PathLike) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of every scalar in ``log_dir``'s event files, in logged order.

    Values are the float32 numbers TensorBoard stored. Events hidden by a resumed run's
    ``purge_step`` are left out, as TensorBoard shows them.
    """
    accumulator = _accumulator(log_dir)
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def _decode_png(data: bytes) -> Tensor:
    # PIL rather than torchvision.io.decode_png, deprecated since torchvision 0.29.
    with Image.open(io.BytesIO(data)) as png:
        return torch.from_numpy(np.array(png.convert("RGB"))).permute(2, 0, 1).contiguous()


def read_images(log_dir: PathLike) -> dict[str, list[tuple[int, Tensor]]]:
    """``{tag: [(step, uint8 (3, H, W)), ...]}`` of every image in ``log_dir``, decoded from PNG."""
    accumulator = _accumulator(log_dir)
    return {
        tag: [
            (event.step, _decode_png(event.encoded_image_string))
            for event in accumulator.Images(tag)
        ]
        for tag in accumulator.Tags()["images"]
    }
