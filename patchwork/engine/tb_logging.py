"""TensorBoard logging: namespaced scalars, hyperparameters, attention frames and cell memories.

Tags are namespaced as in CleanRL so TensorBoard groups them into sections::

    losses/td  losses/task  rewards/mean  q/mean  charts/epsilon  charts/lr  perf/frames_per_s

Images are drawn by :mod:`patchwork.render`: :func:`~patchwork.render.render_attention_frame`
(a frame with the attention window in red, the paper's Fig. 2 top, and the predicted boxes) and
:func:`~patchwork.render.render_memory` (a Patchwork cell's full-frame memory, Fig. 2 bottom: a
patchwork of windows seen at different times).

Only rank 0 logs under DDP: ``ExperimentLogger(log_dir, enabled=ctx.is_main)``; a disabled
logger does nothing and creates no files. :func:`read_scalars` / :func:`read_images` read a
log directory back (for tests and notes).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from patchwork.render import render_attention_frame, render_memory, to_uint8_image

PathLike = str | os.PathLike

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
        self._writer.add_image(tag, to_uint8_image(image), global_step=step, dataformats="CHW")

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
        """Log a frame with its attention window (red) and predictions, drawn by
        :func:`patchwork.render.render_attention_frame`."""
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
        """Log a cell memory ``(C, H, W)`` rendered as in Fig. 2; see :func:`patchwork.render.render_memory`."""
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
