"""``train(cfg)``: the configured stages in order (Patchwork's three of Chai 2019, Sec. 3.4, by default),
resumable at any checkpoint.

Checkpoints live in ``<run_dir>/checkpoints/stage<k>/{last,best}.pt``. With ``resume=true``
(and the old run directory as ``hydra.run.dir``) every completed stage is skipped, its
weights carried over, and the interrupted stage continues from its ``last.pt``: model,
optimisers, scheduler, learner (replay buffer, target network), RNG states and step, so the
resumed run reaches the parameters an uninterrupted one would.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from patchwork.engine.checkpoint import CheckpointManager
from patchwork.engine.distributed import DistributedContext, init_distributed
from patchwork.engine.reproducibility import seed_everything
from patchwork.engine.stages import StageContext, StageRuntime
from patchwork.engine.tb_logging import ExperimentLogger

log = logging.getLogger(__name__)


def selected_stages(cfg: DictConfig) -> list[str]:
    """The stages chosen in the ``stage`` group, in order.

    An experiment file may also set options of stages that a command line then leaves out
    (``stage=[stage1]``); such a node has no ``_target_`` (that comes from the stage's own
    config file) and is not run.
    """
    return [name for name in cfg.stage if "_target_" in cfg.stage[name]]


def build_stage(cfg: DictConfig, name: str) -> Any:
    """The stage object ``cfg.stage[name]`` describes; a key its class does not take is an error."""
    try:
        return instantiate(cfg.stage[name])
    except Exception as error:  # Hydra wraps the constructor's TypeError
        raise ValueError(f"stage.{name} does not fit {cfg.stage[name]._target_}: {error}") from error


def validate_config(cfg: DictConfig) -> None:
    """Fail before any work (data generation, training, files) on a config that cannot run."""
    stages = selected_stages(cfg)
    if not stages:
        raise ValueError("no stage selected (stage=[stage1,stage2,stage3])")
    image_size = tuple(cfg.data.image_size)
    for name in stages:
        stage = build_stage(cfg, name)
        model = instantiate(cfg.model, **dict(getattr(stage, "model_overrides", None) or {}))
        model.check_image_size(image_size)
        if stage.trains_policy and (model.action_space is None or model.policy_network is None):
            raise ValueError(
                f"stage.{name} trains a policy; {model.describe().label} has no action space or policy network "
                "(for Patchwork: a grid with more than one window)"
            )
        reward_task = getattr(instantiate(cfg.reward), "task", model.task) if stage.trains_policy else model.task
        if reward_task != model.task:
            raise ValueError(f"reward {cfg.reward._target_} scores {reward_task}, the model does {model.task}: "
                             "choose the reward of the model's task (e.g. reward=segmentation_quality_gain)")
    if not cfg.resume:
        for name in stages:
            directory = Path(cfg.run_dir) / "checkpoints" / name
            if (directory / CheckpointManager.LAST).exists():
                raise FileExistsError(
                    f"{directory} already holds checkpoints; pass resume=true to continue that run, "
                    "or choose another hydra.run.dir"
                )


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run the stages named in ``cfg.stage`` (in order) and return a summary per stage."""
    validate_config(cfg)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    dist = init_distributed(device=None if cfg.device == "auto" else cfg.device)
    seed_everything(int(cfg.seed) + dist.rank)
    run_dir = Path(cfg.run_dir)
    config = OmegaConf.to_container(cfg, resolve=True)
    data = instantiate(cfg.data)
    summary: dict[str, Any] = {}
    # Weights to start from when the first stage run is not stage 1 (e.g. one stage-1
    # model shared by several grids' stages 2 and 3).
    previous: Path | None = Path(cfg.init_from) if cfg.init_from else None
    for name in selected_stages(cfg):
        stage = build_stage(cfg, name)
        manager = CheckpointManager(run_dir / "checkpoints" / name)
        existing = manager.resume() if cfg.resume else None
        if existing is not None and existing["extra"].get("complete"):
            log.info("%s already complete; skipping", name)
            summary[name] = existing["extra"].get("summary", {})
            previous = manager.latest()
            continue
        tic = time.perf_counter()
        # One TensorBoard run per stage: each stage counts its own steps from 0.
        logger = ExperimentLogger(run_dir / "tensorboard" / name, enabled=dist.is_main)
        logger.hparams(config, {})
        runtime = StageRuntime(
            dist=dist, logger=logger, checkpoint=lambda step, metric: None,
            last_checkpoint=lambda m=manager: str(m.latest()) if m.latest() else None,
            log_every=int(cfg.log_every), checkpoint_every=int(stage.checkpoint_every), progress=bool(cfg.progress),
            on_step_end=_parameter_dump(cfg.debug.dump_parameters, name, dist), amp=bool(cfg.amp),
        )
        context = StageContext(cfg, name, data, dist, runtime, manager, previous)
        result = stage.run(context)
        result["wall_s"] = time.perf_counter() - tic
        summary[name] = result
        previous = manager.latest()
        logger.close()
        log.info("%s done in %.1f s: %s", name, result["wall_s"], result)
    dist.destroy()
    return summary


def _parameter_dump(directory: str | None, stage: str, dist: DistributedContext):
    """Debug hook: every rank writes its flattened parameters after every step (DDP tests)."""
    if not directory:
        return None
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)

    def dump(step: int, model: torch.nn.Module) -> None:
        flat = torch.cat([p.detach().reshape(-1).cpu() for p in model.parameters()])
        torch.save(flat, path / f"{stage}_rank{dist.rank}_step{step}.pt")

    return dump
