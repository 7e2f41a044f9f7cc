"""``train(cfg)``: the three stages of Sec. 3.4 in order, resumable at any checkpoint.

Checkpoints live in ``<run_dir>/checkpoints/stage<k>/{last,best}.pt``. With ``resume=true``
(and the old run directory as ``hydra.run.dir``) every completed stage is skipped, its
weights carried over, and the interrupted stage continues from its ``last.pt``: model,
optimisers, scheduler, replay buffer, RNG states and step, so the resumed run reaches the
parameters an uninterrupted one would.
"""

from __future__ import annotations

import copy
import logging
import zlib
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from patchwork.engine.batches import ResumableBatches
from patchwork.engine.checkpoint import CheckpointManager, load_checkpoint, make_payload, restore_payload
from patchwork.engine.distributed import DistributedContext, init_distributed
from patchwork.engine.reproducibility import seed_everything
from patchwork.engine.stages import QLearning, StageRuntime, policy_quality, run_recurrent_stage, run_stage1
from patchwork.engine.tb_logging import ExperimentLogger
from patchwork.nn import WindowGrid
from patchwork.policies import EpsilonGreedyPolicy, GreedyPolicy, RandomPolicy
from patchwork.rl import ReplayBuffer

log = logging.getLogger(__name__)


def _checkpoint_fn(manager: CheckpointManager, dist: DistributedContext, build_payload: Any) -> Any:
    def save(step: int, metric: float | None) -> None:
        payload = build_payload(step)
        rng = dist.all_gather_object(payload["rng"])
        if dist.is_main:
            manager.save({**payload, "rng": rng}, step, metric)
        dist.barrier()

    return save


def _restore(manager: CheckpointManager, dist: DistributedContext, **objects: Any) -> tuple[int, dict | None]:
    payload = manager.resume()
    if payload is None:
        return 0, None
    step = restore_payload(payload, rank=dist.rank, **objects)
    log.info("resumed %s at step %d", manager.directory, step)
    return step, payload


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["models"]["model"]


def _stage_cfg(cfg: DictConfig, name: str) -> DictConfig:
    return cfg.stage[name]


def selected_stages(cfg: DictConfig) -> list[str]:
    """The stages chosen in the ``stage`` group, in order.

    An experiment file may also set options of stages that a command line then leaves out
    (``stage=[stage1]``); such a node has no ``kind`` (that comes from the stage's own
    config file) and is not run.
    """
    return [name for name in cfg.stage if "kind" in cfg.stage[name]]


#: The options each kind of stage reads (configs/stage/*.yaml); anything else is a typo.
STAGE_KEYS = {
    "single_frame": {"kind", "steps", "batch_size", "lr", "max_grad_norm", "checkpoint_every"},
    "attention": {"kind", "steps", "streams", "lr_attention", "bptt", "max_grad_norm", "checkpoint_every",
                  "evaluate_every", "val_clip_length", "val_batches"},
}
STAGE_KEYS["joint"] = STAGE_KEYS["attention"] | {"lr_main"}


def validate_config(cfg: DictConfig) -> None:
    """Fail before any work (data generation, model building, files) on a config that cannot run."""
    grid = WindowGrid(*cfg.model.grid)
    grid.check_image_size(tuple(cfg.data.image_size))
    stages = selected_stages(cfg)
    if not stages:
        raise ValueError("no stage selected (stage=[stage1,stage2,stage3])")
    invalid = [name for name in stages if cfg.stage[name].kind not in ("single_frame", "attention", "joint")]
    if invalid:
        raise ValueError(f"stage(s) {invalid} have an invalid 'kind' (single_frame | attention | joint)")
    if any(cfg.stage[name].kind != "single_frame" for name in stages) and grid.num_windows < 2:
        raise ValueError(f"stages 2 and 3 train the attention policy; {grid!r} has a single window")
    known = set().union(*STAGE_KEYS.values())
    for name in cfg.stage:
        allowed = STAGE_KEYS[cfg.stage[name].kind] if name in stages else known
        unknown = set(cfg.stage[name]) - allowed
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)} in stage.{name}; it reads {sorted(allowed)}")
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
        stage_cfg = _stage_cfg(cfg, name)
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
            log_every=int(cfg.log_every), checkpoint_every=int(stage_cfg.checkpoint_every), progress=bool(cfg.progress),
            on_step_end=_parameter_dump(cfg.debug.dump_parameters, name, dist), amp=bool(cfg.amp),
        )
        if stage_cfg.kind == "single_frame":
            result = _stage1(cfg, stage_cfg, name, data, dist, runtime, manager)
        else:
            result = _recurrent(cfg, stage_cfg, name, data, dist, runtime, manager, previous)
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


def _build_model(cfg: DictConfig, name: str, **overrides: Any) -> torch.nn.Module:
    """The stage's model, initialised from a seed of its own: the same on every rank and whatever
    ran before in this process (a resumed run builds it after different RNG history)."""
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        torch.manual_seed(int(cfg.seed) * 1000 + zlib.crc32(name.encode()) % 1000)
        return instantiate(cfg.model, **overrides)


def _stage1(cfg, stage_cfg, name, data, dist, runtime, manager) -> dict[str, Any]:
    model = _build_model(cfg, name, grid=[1, 1]).to(dist.device)
    optimizer = instantiate(cfg.optim.optimizer)(model.parameters(), lr=float(stage_cfg.lr))
    scheduler = instantiate(cfg.optim.scheduler)(optimizer, max_lr=float(stage_cfg.lr), total_steps=int(stage_cfg.steps))
    objects = {"models": {"model": model}, "optimizers": {"optimizer": optimizer}, "schedulers": {"scheduler": scheduler}}
    start, _ = _restore(manager, dist, **objects)
    runtime.checkpoint = _checkpoint_fn(
        manager, dist,
        lambda step: make_payload(step=step, stage=name, config=OmegaConf.to_container(cfg, resolve=True), **objects),
    )
    batches = ResumableBatches(
        data.frame_dataset(), int(stage_cfg.batch_size), seed=int(cfg.seed), rank=dist.rank,
        world_size=dist.world_size, num_workers=int(cfg.num_workers),
    ).stream(start)
    wrapped = dist.wrap_ddp(model)
    last = run_stage1(wrapped, optimizer, scheduler, batches, start, int(stage_cfg.steps), runtime,
                      max_grad_norm=stage_cfg.max_grad_norm)
    _finish(manager, dist, name, cfg, int(stage_cfg.steps), objects, {"final": last})
    return {"final": last}


def _recurrent(cfg, stage_cfg, name, data, dist, runtime, manager, previous: Path | None) -> dict[str, Any]:
    joint = stage_cfg.kind == "joint"
    model = _build_model(cfg, name).to(dist.device)
    if previous is not None:
        missing, unexpected = model.load_state_dict(_weights(previous), strict=False)
        if unexpected or any(not k.startswith("attention.") for k in missing):
            raise RuntimeError(f"{previous} does not fit the model: missing {missing}, unexpected {unexpected}")
    else:
        log.warning("%s starts without a previous stage's weights", name)
    if model.attention is None:
        raise ValueError(f"{name} needs a model with an attention network (a grid with more than one window)")
    for parameter_name, parameter in model.named_parameters():
        parameter.requires_grad_(joint or parameter_name.startswith("attention."))
    target = copy.deepcopy(model.attention)
    for parameter in target.parameters():
        parameter.requires_grad_(False)
    attention_optimizer = instantiate(cfg.optim.optimizer)(model.attention.parameters(), lr=float(stage_cfg.lr_attention))
    main_optimizer = None
    optimizers = {"attention": attention_optimizer}
    if joint:
        main = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("attention.")]
        main_optimizer = instantiate(cfg.optim.optimizer)(main, lr=float(stage_cfg.lr_main))
        optimizers["main"] = main_optimizer
    generator = torch.Generator().manual_seed(int(cfg.seed) * 7919 + dist.rank)
    q = QLearning(
        model=model, target=target, optimizer=attention_optimizer, replay=None,
        policy=EpsilonGreedyPolicy(instantiate(cfg.policy.epsilon)), generator=generator,
        gamma=float(cfg.policy.gamma), batch_size=int(cfg.policy.batch_size), warmup=int(cfg.policy.warmup),
        target_update=cfg.policy.target_update, target_every=int(cfg.policy.target_every), tau=float(cfg.policy.tau),
        max_grad_norm=cfg.policy.max_grad_norm,
    )
    models = {"model": model, "target_attention": target}
    payload = manager.resume() if cfg.resume else None
    start = 0
    if payload is not None:
        if payload.get("replay_buffer") is not None:
            # The buffer's shapes come from the data; build it from the checkpoint's.
            q.replay = ReplayBuffer.from_state_dict(payload["replay_buffer"])
        start = restore_payload(payload, models=models, optimizers=optimizers, replay_buffer=q.replay,
                                generators={"policy": generator}, rank=dist.rank)
    runtime.checkpoint = _checkpoint_fn(
        manager, dist,
        lambda step: make_payload(step=step, stage=name, config=OmegaConf.to_container(cfg, resolve=True),
                                  models=models, optimizers=optimizers, replay_buffer=q.replay,
                                  generators={"policy": generator}),
    )
    clips = ResumableBatches(
        data.clip_dataset(), int(stage_cfg.streams), seed=int(cfg.seed) + 1, rank=dist.rank,
        world_size=dist.world_size, num_workers=int(cfg.num_workers),
    )
    length = int(stage_cfg.val_clip_length)
    val_clips = validation_clips(data.val_clip_dataset(length), length, int(stage_cfg.streams), int(stage_cfg.val_batches))
    evaluate = lambda: policy_quality(model, val_clips, GreedyPolicy(), dist.device)["quality"]  # noqa: E731
    last = run_recurrent_stage(
        int(name[-1]) if name[-1].isdigit() else 0, q, main_optimizer, clips.stream(start), start,
        int(stage_cfg.steps), runtime, replay_capacity=int(cfg.policy.replay_capacity), bptt=int(stage_cfg.bptt),
        max_grad_norm=stage_cfg.max_grad_norm, evaluate=evaluate, evaluate_every=int(stage_cfg.evaluate_every),
    )
    result = {"final": last}
    learned = policy_quality(model, val_clips, GreedyPolicy(), dist.device)
    random = policy_quality(model, val_clips, RandomPolicy(model.num_actions), dist.device)
    result.update({"val_reward_dqn": learned["reward"], "val_reward_random": random["reward"],
                   "val_quality_dqn": learned["quality"], "val_quality_random": random["quality"]})
    runtime.logger.scalars({f"val/{k}": v for k, v in result.items() if k.startswith("val_")}, int(stage_cfg.steps))
    _finish(manager, dist, name, cfg, int(stage_cfg.steps), {"models": models, "optimizers": optimizers}, result,
            generators={"policy": generator})
    return result


def validation_clips(dataset: Any, length: int, streams: int, batches: int) -> list[dict[str, Any]]:
    """The first ``batches`` batches of ``streams`` full-length clips of a sequential clip dataset.

    A fixed set, so validation numbers of different steps (and policies) compare like for like;
    a video's shorter last clip is left out so the streams of a batch stay in step.
    """
    full = []
    for index in range(len(dataset)):
        sample = dataset[index]
        if sample["frames"].shape[0] == length:
            full.append(sample)
        if len(full) == streams * batches:
            break
    if len(full) < streams:
        raise ValueError(f"validation set has {len(full)} full clips, fewer than the {streams} streams of one batch")
    return [dataset.collate(full[i : i + streams]) for i in range(0, len(full) - streams + 1, streams)]


def _finish(manager, dist, name, cfg, step: int, objects, result, generators=None) -> None:
    """Mark the stage complete in its final checkpoint (resume then skips it; no replay buffer,
    which only a stage in progress needs)."""
    if dist.is_main:
        payload = make_payload(step=step, stage=name, config=OmegaConf.to_container(cfg, resolve=True),
                               generators=generators, extra={"complete": True, "summary": result}, **objects)
        manager.save(payload, step)
    dist.barrier()
