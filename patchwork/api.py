"""Notebook use: load a checkpoint and stream a video in a few lines, for any method.

::

    import patchwork.api as pw
    model = pw.load("runs/quick/checkpoints/stage3/best.pt", device="cpu")
    for frame in pw.stream(model, "my_frames/", policy="dqn"):
        print(frame.index, frame.action, frame.overlay, frame.mflops, frame.ms, frame.predictions)
    pw.annotate(model, "clip.mp4", "annotated.mp4")   # the predictions and choices drawn in, with a cost strip
    baseline = pw.wrap(pw.load("runs/quick/checkpoints/stage1/last.pt"), interval=4, delay=3)  # Tab. 4's SF rows

``source`` is a folder of frames (image files in sorted name order), a ``(T, 3, H, W)`` tensor
(uint8, or float in ``[0, 1]``), or a video file (mp4, webm, avi, ...; GIF), decoded lazily by
:func:`patchwork.data.video_io.read_video_frames` (video files need the ``video`` extra,
``pip install -e '.[video]'``). Frames are resized to the image size the
model was trained at (the checkpoint config's ``data.image_size``), and the predictions and
the action's overlay (Patchwork's window box) are mapped back to the source frame's pixels.
Every frame goes through :class:`~patchwork.engine.runner.StreamRunner`, as in training and
evaluation.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from patchwork.data import VID_NAMES
from patchwork.data.video_io import read_video_frames, write_video
from patchwork.engine.loading import LoadedModel, load_model
from patchwork.engine.runner import StreamRunner
from patchwork.models.baselines import rescale_prediction, wrap_baselines
from patchwork.models.inference import evaluation_mode
from patchwork.nn.flops import count_flops
from patchwork.policies import build_policy
from patchwork.render import render_stream_frame

__all__ = ["LoadedModel", "StreamedFrame", "annotate", "load", "stream", "wrap"]

log = logging.getLogger(__name__)

#: Rebuild a checkpoint's model (``load(path, device="cpu", image_size=None, **model_overrides)``,
#: e.g. ``grid=(4, 2)`` to place a stage-1 single-frame checkpoint in the recurrent setting).
load = load_model


def wrap(model: LoadedModel, interval: int = 1, delay: int = 0, area: float = 1.0, flip: bool = False) -> LoadedModel:
    """A loaded model as a single-frame baseline of the tables (Chai 2019, Sec. 4): lower resolution
    (``area``), flip averaging, keyframe ``interval`` with ``delay``
    (:func:`~patchwork.models.baselines.wrap_baselines`); streams like any loaded model."""
    return dataclasses.replace(model, model=wrap_baselines(model.model, interval, delay, area, flip))


@dataclass
class StreamedFrame:
    """What :func:`stream` yields per frame.

    Attributes:
        index: the frame's position in the source.
        predictions: in source pixels: ``boxes`` ``(N, 4)`` xyxy, ``scores`` ``(N,)``, ``labels``
            ``(N,)`` (class indices); or ``mask`` bool ``(H, W)`` and ``scores`` ``(H, W)``.
        action: what the method chose for this frame (Patchwork: the window index; LFS: the
            extractor; BlockCopy: the executed blocks), ``None`` for a single-frame model.
        overlay: the action drawn on the frame, in source pixels (``{"box": (x1, y1, x2, y2)}``
            for Patchwork's window; see ``StreamingModel.action_overlay``).
        mflops: theoretical cost of this frame, MFLOPs (2 x multiply-adds); NaN when not measured.
        ms: wall-clock time of the frame's step in milliseconds (NaN while FLOPs are counted,
            which slows every operation).
    """

    index: int
    predictions: dict[str, Tensor]
    action: Tensor | None
    overlay: dict[str, Any]
    mflops: float
    ms: float

    @property
    def window(self) -> int:
        """Patchwork's name for a discrete action: the window index (0 for a single-frame model)."""
        return 0 if self.action is None else int(self.action)

    @property
    def window_box(self) -> tuple[float, float, float, float] | None:
        """The attention window as ``(x1, y1, x2, y2)`` in source pixels (x2, y2 exclusive), if any."""
        return self.overlay.get("box")


def _frames(source: str | os.PathLike[str] | Tensor) -> Iterator[Tensor]:
    """The source's frames one at a time, uint8 or float ``(3, H, W)``."""
    if isinstance(source, Tensor):
        if source.dim() != 4 or source.shape[1] != 3:
            raise ValueError(f"a tensor source must be (T, 3, H, W), got shape {tuple(source.shape)}")
        yield from source
        return
    yield from read_video_frames(source)


def _scaled_overlay(overlay: dict[str, Any], image_size: tuple[int, int], source_size: tuple[int, int]) -> dict[str, Any]:
    if "box" not in overlay:
        return overlay
    sy, sx = source_size[0] / image_size[0], source_size[1] / image_size[1]
    x1, y1, x2, y2 = overlay["box"]
    return {**overlay, "box": (x1 * sx, y1 * sy, x2 * sx, y2 * sy)}


def stream(
    model: LoadedModel,
    source: str | os.PathLike[str] | Tensor,
    policy: str | Any = "dqn",
    window: int = 0,
    measure_flops: bool = True,
    generator_seed: int = 0,
) -> Iterator[StreamedFrame]:
    """Stream a video through a loaded model, one :class:`StreamedFrame` per frame.

    Args:
        model: from :func:`load`.
        source: a frame folder, a ``(T, 3, H, W)`` tensor, or a video file (see the module docstring).
        policy: a name of :func:`~patchwork.policies.build_policy` (``"dqn"``: greedy on the learnt
            Q-values, the first action by the action space's rule; ``"random"``, ``"scanning"``,
            ``"fixed"`` (always ``window``), ``"bernoulli"``) or a policy object.
        measure_flops: count each frame's FLOPs (slower: every operation is intercepted).
        generator_seed: seed of the first action and of random policies.
    """
    net, image_size, device = model.model, model.image_size, model.device
    if isinstance(policy, str):
        policy = build_policy(policy, net.action_space, window)
    runner = StreamRunner(net, policy, seed=generator_seed)
    runner.start(1, image_size, device, videos=torch.zeros(1, dtype=torch.long))
    for index, frame in enumerate(_frames(source)):
        # No autograd context is held across the yield: the caller's grad mode stays its own.
        with evaluation_mode(net):
            source_size = (int(frame.shape[-2]), int(frame.shape[-1]))
            resized = TF.resize(frame, list(image_size), antialias=True)[None].to(device)
            steps = []
            tic = time.perf_counter()
            if measure_flops:
                mflops, ms = count_flops(lambda: steps.append(runner.step(resized))) / 1e6, float("nan")
            else:
                steps.append(runner.step(resized))
                mflops, ms = float("nan"), (time.perf_counter() - tic) * 1e3
            step = steps[0]
            prediction = {k: v.detach().cpu() for k, v in step.out.predictions[0].items()}
            action = None if step.actions is None else step.actions[0].detach().cpu()
            overlay = {} if action is None else _scaled_overlay(net.action_overlay(action, image_size, step.out.state), image_size,
                                                                 source_size)
        yield StreamedFrame(index, rescale_prediction(prediction, image_size, source_size), action, overlay,
                            mflops, ms)


def annotate(
    model: LoadedModel,
    source: str | os.PathLike[str] | Tensor,
    output: str | os.PathLike[str],
    policy: str | Any = "dqn",
    window: int = 0,
    fps: float = 25.0,
    class_names: Sequence[str] | None = None,
    score_threshold: float = 0.5,
    flops: bool = True,
    generator_seed: int = 0,
) -> Path:
    """Write ``source`` streamed through ``model`` as a video with what the method saw and chose drawn in.

    Each frame shows the predictions (boxes with class and score, or the mask), the action's
    overlay (Patchwork's window, LFS's extractor, BlockCopy's executed blocks) and, along the
    bottom, a strip of every frame's latency (ms, one thread of this process) and MFLOPs so far.
    MFLOPs are counted in a second pass over the same frames with the same policy and seed
    (counting slows every operation, so the timed pass does not count).

    Args:
        model: from :func:`load`.
        source: as :func:`stream`.
        output: the video to write (``.mp4``, ``.webm``, ``.avi``; ``.gif``; without the ``video``
            extra a GIF beside it, see :func:`patchwork.data.video_io.write_video`).
        class_names: names of the detector's classes (default: ImageNet VID's when it has 30).
        flops: count MFLOPs for the strip.
    Returns:
        The path written.
    """
    net = model.model
    if class_names is None and getattr(net, "num_classes", None) == len(VID_NAMES):
        class_names = VID_NAMES
    mflops = iter([frame.mflops for frame in stream(model, source, policy, window, True, generator_seed)]) if flops \
        else None

    def frames() -> Iterator[Tensor]:
        latencies, costs = [], []
        for frame, streamed in zip(_frames(source), stream(model, source, policy, window, False, generator_seed)):
            latencies.append(streamed.ms)
            costs.append(next(mflops) if mflops is not None else float("nan"))
            overlay = streamed.overlay
            yield render_stream_frame(
                frame, streamed.predictions, overlay.get("box"), class_names, score_threshold,
                block_mask=overlay.get("blocks"), text=overlay.get("text"), latencies_ms=latencies, mflops=costs,
            )

    return write_video(output, frames(), fps=fps)
