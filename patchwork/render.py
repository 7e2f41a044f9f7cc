"""Drawing on frames: detections, masks, attention windows, block masks, labels and a cost strip.

Every function takes and returns a uint8 ``(3, H, W)`` RGB frame (float ``[0, 1]`` input is
accepted and converted) and never modifies its input. Boxes are xyxy in continuous pixel
coordinates (pixel ``i`` covers ``[i, i + 1)``, so ``x2``/``y2`` are exclusive edges), the
convention of :mod:`patchwork.data`.

Primitives: :func:`draw_boxes`, :func:`draw_detections` (class name and score per box),
:func:`draw_mask`, :func:`draw_window` (the Patchwork attention window, Chai 2019 Fig. 2 top),
:func:`draw_block_mask` (BlockCopy, Verelst & Tuytelaars 2021 Fig. 1: executed blocks tinted,
the block grid drawn), :func:`draw_text` (e.g. Looking Fast and Slow's ``"f1, LSTM age 3"``)
and :func:`append_cost_strip` (latency bars and an MFLOPs curve over the frames so far, below
the frame). Compositions: :func:`render_attention_frame`, :func:`render_memory` (a Patchwork
cell's memory, Fig. 2 bottom), :func:`render_stream_frame` (one streamed frame with every layer,
for videos) and :func:`hstack` (frames side by side, Fig. 4).

A leaf module: it imports only torch, torchvision, PIL and numpy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

__all__ = [
    "WINDOW_COLOR", "PREDICTION_COLOR", "GROUND_TRUTH_COLOR", "BLOCK_COLOR", "GRID_COLOR", "LATENCY_COLOR",
    "MFLOPS_COLOR", "TEXT_COLOR", "TEXT_BACKGROUND", "STRIP_BACKGROUND",
    "to_uint8_image", "pixel_boxes", "line_width", "draw_boxes", "detection_captions", "draw_detections",
    "draw_mask", "draw_window", "block_edges", "draw_block_mask", "draw_text", "cost_strip", "append_cost_strip",
    "render_attention_frame", "render_memory", "render_stream_frame", "hstack",
]

Color = tuple[int, int, int]
BoxLike = Tensor | Sequence[float]

#: Chai 2019 Fig. 2 draws attention windows in red.
WINDOW_COLOR: Color = (255, 0, 0)
PREDICTION_COLOR: Color = (0, 255, 0)
GROUND_TRUTH_COLOR: Color = (255, 255, 0)
#: Executed BlockCopy blocks are tinted with this colour; the block grid is drawn in GRID_COLOR.
BLOCK_COLOR: Color = (0, 160, 255)
GRID_COLOR: Color = (255, 255, 255)
LATENCY_COLOR: Color = (70, 130, 180)
MFLOPS_COLOR: Color = (255, 165, 0)
TEXT_COLOR: Color = (255, 255, 255)
TEXT_BACKGROUND: Color = (0, 0, 0)
STRIP_BACKGROUND: Color = (24, 24, 24)


def to_uint8_image(image: Tensor) -> Tensor:
    """``(3, H, W)`` float in ``[0, 1]`` (clamped) or uint8 -> uint8 on the CPU (uint8 input is not copied)."""
    image = image.detach().cpu()
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an RGB image (3, H, W), got shape {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        return image
    return (image.float().clamp(0, 1) * 255).round().to(torch.uint8)


def pixel_boxes(boxes: BoxLike, height: int, width: int) -> Tensor:
    """Continuous xyxy boxes (x2, y2 exclusive edges) -> inclusive pixel boxes inside the image, float ``(N, 4)``.

    A window ``[0, 0, W, H]`` covers pixels ``0 .. W-1``; drawing it at ``x2 - 1`` keeps its right
    and bottom borders on the window's last pixels instead of just outside the image.
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float32).detach().cpu().reshape(-1, 4).clone()
    boxes[:, 2:] -= 1
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height - 1)
    # Clamping a box lying wholly outside can invert it only by rounding; keep x1 <= x2.
    boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2])
    return boxes


def line_width(height: int, width: int) -> int:
    """Box outline width for a frame of ``height x width`` pixels: 1 px per 128 px of the shorter side."""
    return max(1, round(min(height, width) / 128))


def draw_boxes(frame: Tensor, boxes: BoxLike, captions: Sequence[str] | None = None,
               color: Color = PREDICTION_COLOR, width: int | None = None) -> Tensor:
    """Outline ``boxes`` ``(N, 4)`` xyxy (frame pixels), each optionally captioned; uint8 ``(3, H, W)``."""
    image = to_uint8_image(frame)
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    if captions is not None and len(captions) != len(boxes):
        raise ValueError(f"{len(captions)} captions for {len(boxes)} boxes")
    if len(boxes) == 0:
        return image.clone()
    _, height, width_px = image.shape
    return draw_bounding_boxes(image, pixel_boxes(boxes, height, width_px),
                               labels=None if captions is None else list(captions), colors=color,
                               width=width or line_width(height, width_px))


def detection_captions(labels: Tensor, scores: Tensor | None = None,
                       class_names: Sequence[str] | None = None) -> list[str]:
    """``"dog 0.91"`` per detection: the class name (or index) of ``labels`` ``(N,)`` and the score ``(N,)``."""
    names = [class_names[int(c)] if class_names is not None else str(int(c)) for c in labels]
    if scores is None:
        return names
    return [f"{name} {float(s):.2f}" for name, s in zip(names, scores)]


def draw_detections(frame: Tensor, prediction: Mapping[str, Tensor], class_names: Sequence[str] | None = None,
                    score_threshold: float = 0.5, color: Color = PREDICTION_COLOR) -> Tensor:
    """Draw a detector's ``boxes`` ``(N, 4)`` whose ``scores`` ``(N,)`` exceed ``score_threshold``, each
    captioned with its class name (``labels`` ``(N,)`` indexing ``class_names``; the index without
    names) and score; uint8 ``(3, H, W)``."""
    boxes = prediction["boxes"].reshape(-1, 4)
    scores = prediction.get("scores")
    keep = scores > score_threshold if scores is not None else torch.ones(len(boxes), dtype=torch.bool)
    labels = prediction.get("labels")
    captions = (detection_captions(labels[keep], None if scores is None else scores[keep], class_names)
                if labels is not None else None)
    return draw_boxes(frame, boxes[keep], captions, color)


def draw_mask(frame: Tensor, mask: Tensor, color: Color = PREDICTION_COLOR, alpha: float = 0.4) -> Tensor:
    """Blend ``color`` into the pixels of ``mask`` (bool ``(H, W)``) with opacity ``alpha``; uint8 ``(3, H, W)``."""
    image = to_uint8_image(frame)
    mask = mask.detach().cpu().bool()
    if tuple(mask.shape) != tuple(image.shape[1:]):
        raise ValueError(f"mask {tuple(mask.shape)} does not match the frame {tuple(image.shape[1:])}")
    return draw_segmentation_masks(image, mask, alpha=alpha, colors=color)


def draw_window(frame: Tensor, window_box: BoxLike, color: Color = WINDOW_COLOR, width: int | None = None) -> Tensor:
    """Outline the attention window ``(x1, y1, x2, y2)`` (frame pixels) one pixel thicker than boxes."""
    image = to_uint8_image(frame)
    return draw_boxes(image, window_box, color=color, width=width or line_width(*image.shape[1:]) + 1)


def block_edges(blocks: int, size: int) -> list[int]:
    """Pixel edges of ``blocks`` equal blocks over ``size`` pixels: ``round(i * size / blocks)``
    for ``i = 0 .. blocks`` (``blocks + 1`` values)."""
    return [round(i * size / blocks) for i in range(blocks + 1)]


def draw_block_mask(frame: Tensor, block_mask: Tensor, color: Color = BLOCK_COLOR, alpha: float = 0.35,
                    grid_color: Color | None = GRID_COLOR) -> Tensor:
    """BlockCopy's execution decisions over a frame: executed blocks tinted, the block grid drawn.

    Args:
        frame: ``(3, H, W)``.
        block_mask: bool ``(Hb, Wb)``, ``True`` where the block was executed (recomputed) and
            ``False`` where its features were copied from the previous frame. Block ``(i, j)``
            covers rows ``round(i H / Hb) .. round((i + 1) H / Hb) - 1`` and likewise columns
            (the paper's fixed block size when it divides the frame).
        alpha: opacity of the tint.
        grid_color: colour of the block borders (the first row/column of every block but the
            first); ``None`` draws no grid.
    Returns:
        uint8 ``(3, H, W)``.
    """
    image = to_uint8_image(frame)
    _, height, width = image.shape
    block_mask = block_mask.detach().cpu().bool()
    if block_mask.dim() != 2 or block_mask.shape[0] > height or block_mask.shape[1] > width:
        raise ValueError(f"block_mask must be (Hb, Wb) with at most one block per pixel, "
                         f"got {tuple(block_mask.shape)}")
    rows, cols = block_edges(block_mask.shape[0], height), block_edges(block_mask.shape[1], width)
    row_of = torch.bucketize(torch.arange(height), torch.tensor(rows[1:]), right=True)
    col_of = torch.bucketize(torch.arange(width), torch.tensor(cols[1:]), right=True)
    pixels = block_mask[row_of][:, col_of]  # (H, W): each pixel's block decision
    out = draw_segmentation_masks(image, pixels, alpha=alpha, colors=color) if pixels.any() else image.clone()
    if grid_color is not None:
        line = torch.tensor(grid_color, dtype=torch.uint8)[:, None]
        for y in rows[1:-1]:
            out[:, y, :] = line
        for x in cols[1:-1]:
            out[:, :, x] = line
    return out


def _font() -> ImageFont.ImageFont:
    # PIL's bundled default font: no font file to find on the system.
    return ImageFont.load_default()


def _drawer(canvas: Image.Image) -> ImageDraw.ImageDraw:
    draw = ImageDraw.Draw(canvas)
    draw.fontmode = "1"  # no anti-aliasing: glyph pixels are exactly the text colour
    return draw


def draw_text(frame: Tensor, text: str, position: tuple[int, int] = (2, 2), color: Color = TEXT_COLOR,
              background: Color | None = TEXT_BACKGROUND, padding: int = 1) -> Tensor:
    """Write ``text`` with its top-left corner at ``position`` ``(x, y)`` pixels, on a filled
    ``background`` box (``None``: transparent) so it reads on any frame; uint8 ``(3, H, W)``."""
    image = to_uint8_image(frame)
    canvas = Image.fromarray(image.permute(1, 2, 0).numpy())
    draw = _drawer(canvas)
    font = _font()
    x, y = position
    if background is not None:
        left, top, right, bottom = draw.textbbox((x, y), text, font=font)
        draw.rectangle((left - padding, top - padding, right + padding - 1, bottom + padding - 1), fill=background)
    draw.text((x, y), text, fill=color, font=font)
    return torch.from_numpy(np.array(canvas)).permute(2, 0, 1).contiguous()


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def cost_strip(width: int, latencies_ms: Sequence[float], mflops: Sequence[float], height: int = 40,
               bar_width: int = 3, text_height: int = 12) -> Tensor:
    """A per-frame cost chart: latency bars and an MFLOPs curve over the frames so far.

    The newest frames fill the strip from the left, one ``bar_width``-pixel column each (a
    ``bar_width - 1`` bar and a one-pixel gap); once the frames outnumber
    ``width // bar_width``, only the latest are shown. Bars are the latency, scaled so the
    largest shown reaches the top of the plot area; the curve joins the MFLOPs of the shown
    frames (bar centres), scaled likewise. Non-finite values (not measured) are left out. The
    top ``text_height`` rows read the last frame's figures, ``"12.3 ms  45.6 MFLOPs"``.

    Args:
        width: strip width, pixels (the frame's).
        latencies_ms, mflops: one value per frame so far (equal lengths; may be empty).
        height: strip height, pixels (the plot area is ``height - text_height`` rows).
    Returns:
        uint8 ``(3, height, width)``.
    """
    if len(latencies_ms) != len(mflops):
        raise ValueError(f"{len(latencies_ms)} latencies for {len(mflops)} MFLOPs values")
    if bar_width < 2 or height <= text_height:
        raise ValueError(f"need bar_width >= 2 and height > text_height, got {bar_width}, {height} <= {text_height}")
    canvas = Image.new("RGB", (width, height), STRIP_BACKGROUND)
    draw = _drawer(canvas)
    shown = max(1, width // bar_width)
    latencies, costs = list(latencies_ms)[-shown:], list(mflops)[-shown:]
    plot_top, plot_height = text_height, height - text_height
    bottom = height - 1
    top_latency, top_cost = max(_finite(latencies), default=0.0), max(_finite(costs), default=0.0)
    for i, latency in enumerate(latencies):
        if latency is None or not math.isfinite(latency) or top_latency <= 0:
            continue
        bar = round(latency / top_latency * plot_height)
        if bar > 0:
            x = i * bar_width
            draw.rectangle((x, height - bar, x + bar_width - 2, bottom), fill=LATENCY_COLOR)
    points = [(i * bar_width + (bar_width - 2) // 2, bottom - round(c / top_cost * (plot_height - 1)))
              for i, c in enumerate(costs) if c is not None and math.isfinite(c) and top_cost > 0]
    if len(points) > 1:
        draw.line(points, fill=MFLOPS_COLOR, width=1)
    elif points:
        draw.point(points, fill=MFLOPS_COLOR)
    if latencies:
        last_ms, last_mflops = latencies[-1], costs[-1]
        parts = [f"{last_ms:.1f} ms" if last_ms is not None and math.isfinite(last_ms) else "- ms",
                 f"{last_mflops:.1f} MFLOPs" if last_mflops is not None and math.isfinite(last_mflops) else "- MFLOPs"]
        draw.text((2, max(0, plot_top - 11)), "  ".join(parts), fill=TEXT_COLOR, font=_font())
    return torch.from_numpy(np.array(canvas)).permute(2, 0, 1).contiguous()


def append_cost_strip(frame: Tensor, latencies_ms: Sequence[float], mflops: Sequence[float],
                      height: int = 40) -> Tensor:
    """``frame`` with :func:`cost_strip` below it: uint8 ``(3, H + height, W)`` (the frame's pixels unchanged)."""
    image = to_uint8_image(frame)
    return torch.cat([image, cost_strip(image.shape[-1], latencies_ms, mflops, height)], dim=1)


def render_attention_frame(
    frame: Tensor,
    window_box: BoxLike,
    boxes: Tensor | None = None,
    labels: Sequence[str] | None = None,
    ground_truth: Tensor | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """A frame with its attention window, predictions and optionally ground truth / a mask (Fig. 2 top).

    Args:
        frame: ``(3, H, W)`` float in ``[0, 1]`` (values outside are clamped) or uint8.
        window_box: the attention window ``(x1, y1, x2, y2)`` in frame pixels, drawn in red.
        boxes: predicted boxes ``(N, 4)`` xyxy in frame pixels, drawn in green.
        labels: ``N`` captions drawn beside the predicted boxes (e.g. ``"car 0.91"``).
        ground_truth: ground-truth boxes ``(K, 4)`` xyxy, drawn in yellow.
        mask: predicted foreground ``(H, W)`` bool, overlaid in green (segmentation).
    Returns:
        ``uint8`` ``(3, H, W)``.
    """
    image = to_uint8_image(frame)
    if mask is not None:
        image = draw_mask(image, mask, PREDICTION_COLOR)
    if ground_truth is not None and ground_truth.numel():
        image = draw_boxes(image, ground_truth, color=GROUND_TRUTH_COLOR)
    if boxes is not None and boxes.numel():
        image = draw_boxes(image, boxes, labels, PREDICTION_COLOR)
    # The window goes on top: it is what the figure is about.
    return draw_window(image, window_box)


def render_memory(memory: Tensor, size: tuple[int, int] | None = None, window_box: BoxLike | None = None) -> Tensor:
    """Render a Patchwork cell memory as an image, like Chai 2019 Fig. 2 (bottom).

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
    image = to_uint8_image(planes.expand(3, -1, -1))
    return image if window_box is None else draw_window(image, window_box)


def render_stream_frame(
    frame: Tensor,
    prediction: Mapping[str, Tensor] | None = None,
    window_box: BoxLike | None = None,
    class_names: Sequence[str] | None = None,
    score_threshold: float = 0.5,
    block_mask: Tensor | None = None,
    text: str | None = None,
    latencies_ms: Sequence[float] | None = None,
    mflops: Sequence[float] | None = None,
    strip_height: int = 40,
) -> Tensor:
    """One streamed frame with every layer it has, for a video of a run.

    Drawn in order: the block mask (BlockCopy), the prediction (a ``mask`` overlay, or
    ``boxes``/``scores``/``labels`` above ``score_threshold`` with class names), the attention
    window (Patchwork), the ``text`` label at the top left (e.g. ``"f1, LSTM age 3"``), and,
    when ``latencies_ms``/``mflops`` are given (one value per frame so far, this one last), the
    cost strip below the frame.

    Returns:
        uint8 ``(3, H, W)``, or ``(3, H + strip_height, W)`` with the cost strip.
    """
    image = to_uint8_image(frame)
    if block_mask is not None:
        image = draw_block_mask(image, block_mask)
    if prediction is not None and "mask" in prediction:
        image = draw_mask(image, prediction["mask"])
    elif prediction is not None and "boxes" in prediction:
        image = draw_detections(image, prediction, class_names, score_threshold)
    if window_box is not None:
        image = draw_window(image, window_box)
    if text:
        image = draw_text(image, text)
    if latencies_ms is not None or mflops is not None:
        count = len(latencies_ms if latencies_ms is not None else mflops)
        nan = [math.nan] * count
        image = append_cost_strip(image, latencies_ms if latencies_ms is not None else nan,
                                  mflops if mflops is not None else nan, strip_height)
    return image


def hstack(frames: Sequence[Tensor] | Tensor, gap: int = 4, fill: int = 255) -> Tensor:
    """Frames of one height side by side, ``gap`` pixels of grey level ``fill`` between them.

    Args:
        frames: ``T`` frames ``(3, H, W_t)`` (or a ``(T, 3, H, W)`` tensor), uint8 or float ``[0, 1]``.
    Returns:
        uint8 ``(3, H, sum W_t + (T - 1) * gap)``.
    """
    tiles = [to_uint8_image(f) for f in frames]
    if not tiles:
        raise ValueError("need at least one frame")
    if len({t.shape[1] for t in tiles}) != 1:
        raise ValueError(f"frames of different heights: {[t.shape[1] for t in tiles]}")
    spacer = torch.full((3, tiles[0].shape[1], gap), fill, dtype=torch.uint8)
    pieces = [piece for tile in tiles for piece in (tile, spacer)][:-1]
    return torch.cat(pieces, dim=2)
