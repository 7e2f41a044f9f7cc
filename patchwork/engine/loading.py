"""Rebuilding a trained model from one of the engine's checkpoints (its own config and weights)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import instantiate

from patchwork.engine.checkpoint import load_checkpoint
from patchwork.models.streaming import StreamingModel

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
        untrained: parameter names the checkpoint did not provide (a policy network that the
            checkpoint's stage did not train, e.g. the attention when a stage-1 single-frame
            checkpoint is rebuilt with a window grid).
    """

    model: StreamingModel
    image_size: tuple[int, int]
    task: str
    config: dict[str, Any]
    stage: str
    device: torch.device
    untrained: list[str]


def stage_model_overrides(config: dict[str, Any], stage: str) -> dict[str, Any]:
    """The model arguments the checkpoint's stage trained with (e.g. stage 1's single-frame ``grid``)."""
    return dict(((config.get("stage") or {}).get(stage) or {}).get("model_overrides") or {})


def initial_weights_cleared(model_config: dict[str, Any]) -> dict[str, None]:
    """``None`` for each of the model config's initial-weight arguments (``weights``, ``weights_*``)."""
    return {key: None for key in model_config if key == "weights" or str(key).startswith("weights_")}


def load_model(
    checkpoint_path: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    image_size: Sequence[int] | None = None,
    **model_overrides: Any,
) -> LoadedModel:
    """Rebuild a checkpoint's model from its own config and load its weights.

    The model is ``hydra.utils.instantiate(config["model"], **overrides)``, the overrides being
    the stage's ``model_overrides`` (a stage-1 checkpoint holds the single-frame model) updated
    with ``model_overrides`` (``None`` values ignored). Policy-network weights the rebuilt model
    has no place for are dropped; a policy network the checkpoint lacks is left untrained
    (listed in ``untrained``: use a policy that reads no scores).

    Args:
        checkpoint_path: a checkpoint of :mod:`patchwork.engine.checkpoint` (``models["model"]``
            the state dict, ``config`` the resolved run config with ``model`` and ``data.image_size``).
        device: where the model goes.
        image_size: override ``data.image_size``.
        model_overrides: override the config's model options (e.g. ``grid=(4, 2)``, ``cells="none"``).
    Raises:
        ValueError: the checkpoint's weights do not fit the rebuilt model (other than a policy network).
    """
    payload = load_checkpoint(checkpoint_path, map_location="cpu")
    config = payload.get("config") or {}
    if "model" not in config:
        raise ValueError(f"checkpoint {checkpoint_path} has no model config (config['model'])")
    stage = str(payload.get("stage", ""))
    # The checkpoint's weights supersede any initial weights its model was built from (``weights``,
    # ``weights_f0``, ...: a file or "imagenet"), so it loads without those files.
    trained_with = {**initial_weights_cleared(config["model"]), **stage_model_overrides(config, stage)}
    overrides = {**trained_with, **{k: v for k, v in model_overrides.items() if v is not None}}
    overrides = {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}
    model: StreamingModel = instantiate(config["model"], **overrides)
    weights = payload["models"]["model"]
    expected = model.state_dict()
    unused = set(weights) - set(expected)
    if unused:
        # Only the policy network of the model the checkpoint holds may be left out.
        checkpoint_model: StreamingModel = instantiate(config["model"], **trained_with)
        policy = checkpoint_model.policy_state_names()
        weights = {k: v for k, v in weights.items() if k in expected or k not in policy}
    misfit = f"checkpoint {checkpoint_path} does not fit the model rebuilt with {overrides or 'its config'}"
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as error:  # shape mismatches (e.g. another width_mult)
        raise ValueError(f"{misfit}: {error}") from error
    if unexpected or set(missing) - model.policy_state_names():
        raise ValueError(f"{misfit}: missing {missing}, unexpected {unexpected}")
    if missing:
        log.warning("%s: the policy network is not in the checkpoint (untrained); use a policy that reads no scores",
                    checkpoint_path)
    size = image_size if image_size is not None else (config.get("data") or {}).get("image_size")
    if size is None:
        raise ValueError(f"checkpoint {checkpoint_path} has no data.image_size; pass image_size=(H, W)")
    device = torch.device(device)
    model.to(device).eval()
    image_size = (int(size[0]), int(size[1]))
    model.check_image_size(image_size)
    return LoadedModel(model, image_size, model.task, config, stage, device, list(missing))


def checkpoint_model(path: str | os.PathLike[str], **model_overrides: Any) -> StreamingModel:
    """The model of a checkpoint, weights loaded, on the CPU in eval mode (:func:`load_model`).

    For configs whose model wraps another trained model, e.g. BlockCopy's task network from a
    stage-1 checkpoint: ``task_model: {_target_: patchwork.engine.loading.checkpoint_model, path: ...}``.
    """
    return load_model(path, **model_overrides).model
