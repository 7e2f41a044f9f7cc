"""Notebook use: load a checkpoint and stream a video in a few lines.

::

    import patchwork.api
    model = patchwork.api.load("runs/quick/checkpoints/stage3/best.pt", device="cpu")
    for frame in patchwork.api.stream(model, "my_frames/", policy="dqn"):
        print(frame.index, frame.window, frame.window_box, frame.mflops, frame.predictions)

``source`` is a folder of frames (image files in sorted name order), a ``(T, 3, H, W)``
tensor (uint8, or float in ``[0, 1]``), or a video file (mp4, webm, avi, ...; GIF), decoded
lazily by :func:`patchwork.data.video_io.read_video_frames` (video files need the ``video``
extra, ``pip install -e '.[video]'``). Frames are resized to
the image size the model was trained at (the checkpoint config's ``data.image_size``), and
the predictions and the window are mapped back to the source frame's pixels.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import instantiate
from torch import Tensor, nn
from torchvision.transforms.v2 import functional as TF

from patchwork.data.video_io import read_video_frames
from patchwork.engine.checkpoint import load_checkpoint
from patchwork.evaluation.cost import count_flops
from patchwork.evaluation.streaming import WindowChooser, build_policy, check_policy, evaluation_mode, model_task
from patchwork.models.baselines import rescale_prediction

__all__ = ["LoadedModel", "StreamedFrame", "load", "stream"]

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint, ready to stream.

    Attributes:
        model: the streaming model, in eval mode on ``device``.
        image_size: ``(H, W)`` the model runs at (the checkpoint's ``data.image_size``).
        task: ``"detection"`` or ``"segmentation"``.
        config: the checkpoint's resolved run config (plain containers).
        stage: the training stage that wrote the checkpoint.
        device: where the model lives.
        untrained: parameter names the checkpoint did not provide (the attention network when
            a stage-1 single-frame checkpoint is rebuilt with a window grid).
    """

    model: nn.Module
    image_size: tuple[int, int]
    task: str
    config: dict[str, Any]
    stage: str
    device: torch.device
    untrained: list[str]


def _stage_kind(config: dict[str, Any], stage: str) -> str | None:
    return ((config.get("stage") or {}).get(stage) or {}).get("kind")


def load(
    checkpoint_path: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    grid: Sequence[int] | None = None,
    cells: str | None = None,
    width_mult: float | None = None,
    image_size: Sequence[int] | None = None,
) -> LoadedModel:
    """Rebuild a checkpoint's model from its own config and load its weights.

    The model is ``hydra.utils.instantiate(config["model"], **overrides)``. A stage-1
    checkpoint holds the single-frame model (stage 1 trains with grid ``[1, 1]`` whatever the
    config's grid), so its default grid is ``(1, 1)``; ask for ``grid=(4, 2)`` to place it in
    the recurrent setting (Sec. 3.4): its attention network is then untrained (listed in
    ``untrained``; use a hand-designed policy). Attention weights a single-frame rebuild does
    not use are dropped.

    Args:
        checkpoint_path: a checkpoint of :mod:`patchwork.engine.checkpoint` (``models["model"]``
            the state dict, ``config`` the resolved run config with ``model`` and ``data.image_size``).
        device: where the model goes.
        grid, cells, width_mult: override the config's model options.
        image_size: override ``data.image_size``.
    Raises:
        ValueError: the checkpoint's weights do not fit the rebuilt model (other than attention).
    """
    payload = load_checkpoint(checkpoint_path, map_location="cpu")
    config = payload.get("config") or {}
    if "model" not in config:
        raise ValueError(f"checkpoint {checkpoint_path} has no model config (config['model'])")
    stage = str(payload.get("stage", ""))
    overrides: dict[str, Any] = {}
    if grid is not None:
        overrides["grid"] = [int(g) for g in grid]
    elif _stage_kind(config, stage) == "single_frame" or stage == "stage1":
        overrides["grid"] = [1, 1]
    if cells is not None:
        overrides["cells"] = cells
    if width_mult is not None:
        overrides["width_mult"] = float(width_mult)
    model = instantiate(config["model"], **overrides)
    weights = payload["models"]["model"]
    expected = model.state_dict()
    weights = {k: v for k, v in weights.items() if k in expected or not k.startswith("attention.")}
    misfit = f"checkpoint {checkpoint_path} does not fit the model rebuilt with {overrides or 'its config'}"
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as error:  # shape mismatches (e.g. another width_mult)
        raise ValueError(f"{misfit}: {error}") from error
    if unexpected or any(not k.startswith("attention.") for k in missing):
        raise ValueError(f"{misfit}: missing {missing}, unexpected {unexpected}")
    if missing:
        log.warning("%s: the attention network is not in the checkpoint (untrained); use a hand-designed policy",
                    checkpoint_path)
    size = image_size if image_size is not None else (config.get("data") or {}).get("image_size")
    if size is None:
        raise ValueError(f"checkpoint {checkpoint_path} has no data.image_size; pass image_size=(H, W)")
    device = torch.device(device)
    model.to(device).eval()
    image_size = (int(size[0]), int(size[1]))
    model.grid.check_image_size(image_size)
    return LoadedModel(model, image_size, model_task(model), config, stage, device, list(missing))


@dataclass
class StreamedFrame:
    """What :func:`stream` yields per frame.

    Attributes:
        index: the frame's position in the source.
        predictions: in source pixels: ``boxes`` ``(N, 4)`` xyxy, ``scores`` ``(N,)``, ``labels``
            ``(N,)`` (class indices); or ``mask`` bool ``(H, W)`` and ``scores`` ``(H, W)``.
        window: the attention window's index in the model's grid (0 for a single-frame model).
        window_box: that window as ``(x1, y1, x2, y2)`` in source pixels (x2, y2 exclusive).
        mflops: theoretical cost of this frame, MFLOPs (2 x multiply-adds); NaN when not measured.
    """

    index: int
    predictions: dict[str, Tensor]
    window: int
    window_box: tuple[float, float, float, float]
    mflops: float


def _frames(source: str | os.PathLike[str] | Tensor) -> Iterator[Tensor]:
    """The source's frames one at a time, uint8 or float ``(3, H, W)``."""
    if isinstance(source, Tensor):
        if source.dim() != 4 or source.shape[1] != 3:
            raise ValueError(f"a tensor source must be (T, 3, H, W), got shape {tuple(source.shape)}")
        yield from source
        return
    yield from read_video_frames(source)


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
        policy: ``"dqn"`` (greedy on the learned Q-values; the first frame's window is random,
            seeded), ``"random"``, ``"scanning"``, ``"fixed"`` (always ``window``), or a policy object.
        measure_flops: count each frame's FLOPs (slower: every operation is intercepted).
        generator_seed: seed of the first window and of the random policy.
    """
    net, image_size, device = model.model, model.image_size, model.device
    if isinstance(policy, str):
        policy = build_policy(policy, net.grid, window)
    check_policy(net, policy)
    chooser = WindowChooser(policy, net.num_actions, generator_seed)
    windows = net.grid.boxes(image_size).float()  # (A, 4) model pixels
    video = torch.zeros(1, dtype=torch.long)
    with evaluation_mode(net):
        state = net.init_state(1, image_size, device)
        q_values = None
        for index, frame in enumerate(_frames(source)):
            source_size = (int(frame.shape[-2]), int(frame.shape[-1]))
            resized = TF.resize(frame, list(image_size), antialias=True)[None].to(device)
            actions = chooser(q_values, torch.full((1,), index, dtype=torch.long, device=device), video)
            outputs = []
            run = lambda: outputs.append(net(resized, actions, state))  # noqa: E731
            mflops = count_flops(run) / 1e6 if measure_flops else float("nan")
            if not measure_flops:
                run()
            out = outputs[0]
            state, q_values = out.state, out.q_values
            prediction = {k: v.detach().cpu() for k, v in out.predictions[0].items()}
            window_index = int(actions[0])
            scale = torch.tensor([source_size[1] / image_size[1], source_size[0] / image_size[0]] * 2)
            box = (windows[window_index] * scale).tolist()
            yield StreamedFrame(index, rescale_prediction(prediction, image_size, source_size), window_index,
                                tuple(box), mflops)
