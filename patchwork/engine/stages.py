"""Training stages as configurable objects (``configs/stage/*.yaml`` name one by ``_target_``).

* :class:`SupervisedStage`: a model trained with its task loss on single frames mixing video
  frames and stills (Patchwork's stage 1, Chai 2019, Sec. 3.4).
* :class:`ClipSupervisedStage`: the task loss on clips unrolled under a hand-designed policy
  (Looking Fast and Slow's detection training, Liu et al. 2019, Sec. 3.3).
* :class:`PolicyStage`: streams of clips through the model under a learner's behaviour policy;
  the learner (Double DQN, REINFORCE) improves the model's policy network from a reward
  (Patchwork's stage 2); with ``lr_task`` the task network is fine-tuned jointly with the task
  loss, BatchNorm frozen (Patchwork's stage 3).

Which parameters train is declared by the model (``policy_parameters`` / ``task_parameters``),
never matched by name. Each stage runs from ``start`` to ``steps`` and checkpoints regularly;
everything it needs to resume is in its checkpoint (:mod:`patchwork.engine.checkpoint`).
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from tqdm import tqdm

from patchwork.engine.batches import ResumableBatches
from patchwork.engine.checkpoint import CheckpointManager, load_checkpoint, make_payload, restore_payload
from patchwork.engine.distributed import DistributedContext
from patchwork.engine.guards import check_finite
from patchwork.engine.rollout import stream_clip
from patchwork.engine.runner import StreamRunner
from patchwork.engine.tb_logging import ExperimentLogger
from patchwork.models.streaming import StreamingModel
from patchwork.nn.spaces import Discrete
from patchwork.policies import RandomPolicy
from patchwork.rl.roles import Learner, Reward, Transition

log = logging.getLogger(__name__)


@dataclass
class StageRuntime:
    """What every stage needs from the run around it."""

    dist: DistributedContext
    logger: ExperimentLogger
    checkpoint: Callable[[int, float | None], None]  # (step, metric) -> saves everything
    last_checkpoint: Callable[[], str | None]
    log_every: int
    checkpoint_every: int
    progress: bool = True
    on_step_end: Callable[[int, nn.Module], None] | None = None  # (step, model) after each optimiser step
    amp: bool = False  # bfloat16 autocast of the forward passes on CUDA (ignored on the CPU)

    def autocast(self) -> torch.autocast:
        """Mixed precision for a forward pass: bfloat16 on CUDA when ``amp``, else a no-op.

        bfloat16 keeps float32's exponent range, so no loss scaling is needed.
        """
        device = self.dist.device.type
        return torch.autocast(device, dtype=torch.bfloat16, enabled=self.amp and device == "cuda")


@dataclass
class StageContext:
    """The run around a stage: its config, data, processes, logging and checkpoints.

    Attributes:
        cfg: the whole run config (``model``, ``optim``, ``learner``, ``reward``, ``seed``, ...).
        name: the stage's name (``stage1`` ...), which seeds its model and names its checkpoints.
        previous: the checkpoint whose weights the stage starts from (the previous stage's, or
            ``init_from``), or ``None``.
    """

    cfg: DictConfig
    name: str
    data: Any
    dist: DistributedContext
    runtime: StageRuntime
    manager: CheckpointManager
    previous: Path | None

    def build_model(self, **overrides: Any) -> StreamingModel:
        """The stage's model, initialised from a seed of its own: the same on every rank and
        whatever ran before in this process (a resumed run builds it after other RNG history)."""
        with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
            torch.manual_seed(int(self.cfg.seed) * 1000 + zlib.crc32(self.name.encode()) % 1000)
            return instantiate(self.cfg.model, **overrides)

    def optimizer(self, lr: float) -> Callable[[Any], torch.optim.Optimizer]:
        """``parameters -> optimiser`` of the run's ``optim.optimizer`` at learning rate ``lr``."""
        return partial(instantiate(self.cfg.optim.optimizer), lr=float(lr))

    def config(self) -> dict[str, Any]:
        return OmegaConf.to_container(self.cfg, resolve=True)  # type: ignore[return-value]

    def save_fn(self, build_payload: Callable[[int], dict]) -> Callable[[int, float | None], None]:
        """``(step, metric) -> None`` saving ``build_payload(step)`` with every rank's RNG states."""

        def save(step: int, metric: float | None) -> None:
            payload = build_payload(step)
            rng = self.dist.all_gather_object(payload["rng"])
            if self.dist.is_main:
                self.manager.save({**payload, "rng": rng}, step, metric)
            self.dist.barrier()

        return save

    def finish(self, step: int, objects: dict[str, Any], result: dict[str, Any], **extra: Any) -> None:
        """Mark the stage complete in its final checkpoint (resume then skips it)."""
        if self.dist.is_main:
            payload = make_payload(step=step, stage=self.name, config=self.config(),
                                   extra={"complete": True, "summary": result}, **objects, **extra)
            self.manager.save(payload, step)
        self.dist.barrier()


def to_device_targets(targets: Any, device: torch.device) -> Any:
    """Move (nested lists of) per-frame target dicts to ``device``."""
    if isinstance(targets, dict):
        return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in targets.items()}
    return [to_device_targets(t, device) for t in targets]


def _frames(batch: Tensor, device: torch.device) -> Tensor:
    return batch.to(device).float().div_(255.0)


def average_gradients(parameters: list[nn.Parameter], dist: DistributedContext) -> None:
    """All-reduce (mean) the gradients of ``parameters`` across ranks.

    The policy stages call the model once per frame before one backward pass, which
    DistributedDataParallel's one-forward-one-backward reducer does not allow; averaging
    gradients explicitly gives the same synchronous data parallelism.
    """
    if not dist.is_distributed:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= dist.world_size
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def _progress(runtime: StageRuntime, start: int, steps: int, name: str) -> tqdm:
    return tqdm(total=steps, initial=start, desc=name, disable=not (runtime.progress and runtime.dist.is_main))


def freeze_batchnorm(model: nn.Module) -> None:
    """BatchNorm layers use and keep their trained statistics and affine weights (Chai 2019, Sec. 3.4, stage 3)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            for parameter in module.parameters():
                parameter.requires_grad_(False)


def _task_training(ctx: StageContext, model: nn.Module, parameters: Any, lr: float, steps: int,
                   generators: dict[str, torch.Generator] | None = None) -> tuple[Any, Any, dict[str, Any], int]:
    """The optimiser and scheduler of a task-training stage, restored from its last checkpoint when
    resuming, and the stage's checkpoint function; returns ``(optimizer, scheduler, objects, start)``."""
    optimizer = ctx.optimizer(lr)(parameters)
    try:
        scheduler = instantiate(ctx.cfg.optim.scheduler)(optimizer, max_lr=float(lr), total_steps=int(steps))
    except ZeroDivisionError as error:
        # OneCycleLR divides by its warm-up length minus one step: pct_start * steps == 1 fails.
        raise ValueError(f"stage {ctx.name}: the scheduler {ctx.cfg.optim.scheduler.get('_target_')} cannot run "
                         f"{steps} steps with {OmegaConf.to_container(ctx.cfg.optim.scheduler)}; change the steps "
                         "or optim.scheduler.pct_start (OneCycleLR needs pct_start * steps != 1)") from error
    objects: dict[str, Any] = {"models": {"model": model}, "optimizers": {"optimizer": optimizer},
                               "schedulers": {"scheduler": scheduler}}
    if generators:
        objects["generators"] = generators
    start = _restore(ctx, **objects)
    ctx.runtime.checkpoint = ctx.save_fn(
        lambda step: make_payload(step=step, stage=ctx.name, config=ctx.config(), **objects))
    return optimizer, scheduler, objects, start


def _restore(ctx: StageContext, **objects: Any) -> int:
    payload = ctx.manager.resume() if ctx.cfg.resume else None
    if payload is None:
        return 0
    step = restore_payload(payload, rank=ctx.dist.rank, **objects)
    log.info("resumed %s at step %d", ctx.manager.directory, step)
    return step


# --------------------------------------------------------------------------- supervised
@dataclass
class SupervisedStage:
    """A model trained with its task loss on single frames (Chai 2019, Sec. 3.4, stage 1).

    Args:
        steps: optimiser steps.
        batch_size: frames per step (per rank).
        lr: the peak learning rate of the run's ``optim.scheduler``.
        max_grad_norm: gradient clipping (``None``: none).
        checkpoint_every: steps between checkpoints.
        model_overrides: arguments the model config is instantiated with for this stage
            (Patchwork's stage 1 is the single-frame model: ``{grid: [1, 1]}``).
    """

    steps: int
    batch_size: int
    lr: float
    max_grad_norm: float | None = 10.0
    checkpoint_every: int = 1000
    model_overrides: dict[str, Any] = field(default_factory=dict)

    trains_policy = False

    def run(self, ctx: StageContext) -> dict[str, Any]:
        """Train from the stage's last checkpoint (or step 0) to ``steps``; returns the last logged losses."""
        cfg, dist, runtime = ctx.cfg, ctx.dist, ctx.runtime
        model = ctx.build_model(**dict(self.model_overrides or {})).to(dist.device)
        optimizer, scheduler, objects, start = _task_training(ctx, model, model.parameters(), self.lr, self.steps)
        batches = ResumableBatches(
            ctx.data.frame_dataset(), int(self.batch_size), seed=int(cfg.seed), rank=dist.rank,
            world_size=dist.world_size, num_workers=int(cfg.num_workers),
        ).stream(start)
        last = self._train(model, dist.wrap_ddp(model), optimizer, scheduler, batches, start, runtime)
        ctx.finish(int(self.steps), objects, {"final": last})
        return {"final": last}

    def _train(self, inner: StreamingModel, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
               batches: Iterator[dict[str, Any]], start: int, runtime: StageRuntime) -> dict[str, float]:
        device = runtime.dist.device
        model.train()
        bar = _progress(runtime, start, self.steps, "stage 1")
        last: dict[str, float] = {}
        tic = time.perf_counter()
        for step in range(start, self.steps):
            batch = next(batches)
            frames = _frames(batch["image"], device)
            targets = to_device_targets(batch["target"], device)
            actions = None
            if inner.action_space is not None:  # a model with choices trains on its first action
                actions = inner.action_space.fixed_first(frames.shape[0], tuple(frames.shape[-2:])).to(device)
            with runtime.autocast():
                out = model(frames, actions, inner.init_state(frames.shape[0], tuple(frames.shape[-2:]), device))
                losses = inner.loss(out, targets)
            loss = sum(losses.values())
            check_finite({**losses, "loss": loss}, step, runtime.last_checkpoint())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), self.max_grad_norm)
            optimizer.step()
            scheduler.step()
            if runtime.on_step_end is not None:
                runtime.on_step_end(step + 1, inner)
            bar.update(1)
            if (step + 1) % runtime.log_every == 0 or step + 1 == self.steps:
                elapsed, tic = time.perf_counter() - tic, time.perf_counter()
                last = {f"losses/{k}": float(v.detach()) for k, v in losses.items()} | {"losses/total": float(loss.detach())}
                runtime.logger.scalars(
                    {**last, "charts/lr": scheduler.get_last_lr()[0],
                     "perf/frames_per_s": runtime.log_every * frames.shape[0] / max(elapsed, 1e-9)},
                    step + 1,
                )
                bar.set_postfix(loss=f"{last['losses/total']:.3f}")
            if (step + 1) % self.checkpoint_every == 0 or step + 1 == self.steps:
                runtime.checkpoint(step + 1, None)
        bar.close()
        return last


# --------------------------------------------------------------------------- clips
@dataclass
class ClipSupervisedStage:
    """The task network trained on clips, unrolled over each clip's frames under a hand-designed
    policy, every frame's task loss backpropagated through the model's state (Looking Fast and
    Slow, Liu et al. 2019, Sec. 3.3: clips of six steps, a uniformly random extractor per step).

    Args:
        steps: optimiser steps (one batch of clips each).
        streams: clips per step (per rank).
        lr: the peak learning rate of the run's ``optim.scheduler``.
        policy: the actions the clips run under (a policy that reads no scores).
        max_grad_norm: gradient clipping (``None``: none).
        checkpoint_every: steps between checkpoints.
        model_overrides: arguments the model config is instantiated with for this stage.
        clip_length: frames unrolled per clip (``None``: the data's ``clip_length``, which the
            policy stages use too).
    """

    steps: int
    streams: int
    lr: float
    policy: Any
    max_grad_norm: float | None = 10.0
    checkpoint_every: int = 500
    model_overrides: dict[str, Any] = field(default_factory=dict)
    clip_length: int | None = None

    trains_policy = False

    def run(self, ctx: StageContext) -> dict[str, Any]:
        """Train from the stage's last checkpoint (or step 0) to ``steps``; returns the last logged losses."""
        cfg, dist, runtime = ctx.cfg, ctx.dist, ctx.runtime
        if self.policy.needs_scores:
            raise ValueError(f"{ctx.name} unrolls clips under a hand-designed policy, got {self.policy!r}")
        model = ctx.build_model(**dict(self.model_overrides)).to(dist.device)
        if ctx.previous is not None:
            _load_task_weights(model, ctx.previous)
        parameters = model.task_parameters()
        generator = torch.Generator().manual_seed(int(cfg.seed) * 7919 + dist.rank)
        optimizer, scheduler, objects, start = _task_training(ctx, model, parameters, self.lr, self.steps,
                                                              {"policy": generator})
        batches = ResumableBatches(
            ctx.data.clip_dataset(self.clip_length), int(self.streams), seed=int(cfg.seed) + 1, rank=dist.rank,
            world_size=dist.world_size, num_workers=int(cfg.num_workers),
        ).stream(start)
        bar = _progress(runtime, start, self.steps, ctx.name)
        last: dict[str, float] = {}
        for step in range(start, self.steps):
            batch = next(batches)
            frames = _frames(batch["frames"], dist.device)
            targets = to_device_targets(batch["targets"], dist.device)
            model.train()
            runner = StreamRunner(model, self.policy, generator=generator, decode=False)
            runner.start(frames.shape[0], tuple(frames.shape[-2:]), dist.device)
            frame_losses: list[dict[str, Tensor]] = []
            with runtime.autocast():
                for t in range(frames.shape[1]):
                    out = runner.step(frames[:, t]).out
                    frame_losses.append(model.loss(out, [clip[t] for clip in targets]))
            losses = {k: torch.stack([f[k] for f in frame_losses]).mean() for k in frame_losses[0]}
            loss = sum(losses.values())
            check_finite({**losses, "loss": loss}, step, runtime.last_checkpoint())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            average_gradients(parameters, dist)
            if self.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(parameters, self.max_grad_norm)
            optimizer.step()
            scheduler.step()
            if runtime.on_step_end is not None:
                runtime.on_step_end(step + 1, model)
            bar.update(1)
            if (step + 1) % runtime.log_every == 0 or step + 1 == self.steps:
                last = {f"losses/{k}": float(v.detach()) for k, v in losses.items()} | {"losses/total": float(loss.detach())}
                runtime.logger.scalars({**last, "charts/lr": scheduler.get_last_lr()[0]}, step + 1)
                bar.set_postfix(loss=f"{last['losses/total']:.3f}")
            if (step + 1) % self.checkpoint_every == 0 or step + 1 == self.steps:
                runtime.checkpoint(step + 1, None)
        bar.close()
        ctx.finish(int(self.steps), objects, {"final": last})
        return {"final": last}


# --------------------------------------------------------------------------- policy
@dataclass
class PolicyStage:
    """The model's policy network learnt by the run's learner from the run's reward, on clips.

    Patchwork's stage 2 (only the attention learns) and, with ``lr_task``, stage 3 (the task
    network fine-tuned with the task loss, BatchNorm frozen, jointly with the policy) of
    Chai 2019, Sec. 3.4. One training step streams one batch of ``streams`` clips; every
    frame's transition goes to the learner, which updates as it is due.

    Args:
        steps: training steps (batches of clips).
        streams: clips per step (per rank).
        lr_policy: the policy network's learning rate (the learner's optimiser).
        checkpoint_every: steps between checkpoints.
        evaluate_every: steps between validations of the learnt policy (0: never).
        val_clip_length, val_batches: the fixed validation clips.
        lr_task: fine-tune the task network at this learning rate (``None``: frozen, eval mode).
        bptt: with ``lr_task``, frames the task loss reaches back through the model's state
            (truncated BPTT: the state is detached every ``bptt`` frames).
        max_grad_norm: with ``lr_task``, clipping of the task network's gradients.
        policy_optimizer: the learner's optimiser, ``parameters, lr -> Optimizer`` (a partial; its
            ``lr`` is ``lr_policy``), when it is not the run's ``optim.optimizer`` (BlockCopy:
            RMSprop with weight decay).
    """

    steps: int
    streams: int
    lr_policy: float
    checkpoint_every: int = 500
    evaluate_every: int = 1000
    val_clip_length: int = 16
    val_batches: int = 4
    lr_task: float | None = None
    bptt: int = 4
    max_grad_norm: float | None = 10.0
    policy_optimizer: Any = None

    trains_policy = True

    def run(self, ctx: StageContext) -> dict[str, Any]:
        """Train from the stage's last checkpoint (or step 0) to ``steps``; returns validation figures."""
        cfg, dist, runtime = ctx.cfg, ctx.dist, ctx.runtime
        model = ctx.build_model().to(dist.device)
        if ctx.previous is not None:
            _load_task_weights(model, ctx.previous)
        else:
            log.warning("%s starts without a previous stage's weights", ctx.name)
        if model.policy_network is None:
            raise ValueError(f"{ctx.name} learns a policy; {model.describe().label} has no policy network")
        joint = self.lr_task is not None
        policy_ids = {id(p) for p in model.policy_parameters()}
        for parameter in model.parameters():
            parameter.requires_grad_(joint or id(parameter) in policy_ids)
        generator = torch.Generator().manual_seed(int(cfg.seed) * 7919 + dist.rank)
        learner: Learner = instantiate(cfg.learner)(
            network=model.policy_network, optimizer=self.learner_optimizer(cfg),
            generator=generator, reduce_gradients=partial(average_gradients, dist=dist),
        )
        reward: Reward = instantiate(cfg.reward)
        task_optimizer = None
        optimizers: dict[str, Any] = {}
        if joint:
            freeze_batchnorm(model)
            task_optimizer = ctx.optimizer(self.lr_task)([p for p in model.task_parameters() if p.requires_grad])
            optimizers["task"] = task_optimizer
        models = {"model": model}
        # A reward with a running statistic (BlockCopy's cost average M_t) is checkpointed with the learner.
        stateful_reward = {"reward": reward} if hasattr(reward, "state_dict") else {}
        start = _restore(ctx, models=models, optimizers=optimizers, learners={"policy": learner, **stateful_reward},
                         generators={"policy": generator})

        def learner_states(policy: dict[str, Any]) -> dict[str, Any]:
            return {"policy": policy, **{k: v.state_dict() for k, v in stateful_reward.items()}}

        runtime.checkpoint = ctx.save_fn(
            lambda step: make_payload(step=step, stage=ctx.name, config=ctx.config(), models=models,
                                      optimizers=optimizers, learners=learner_states(learner.state_dict()),
                                      generators={"policy": generator}))
        clips = ResumableBatches(
            ctx.data.clip_dataset(), int(self.streams), seed=int(cfg.seed) + 1, rank=dist.rank,
            world_size=dist.world_size, num_workers=int(cfg.num_workers),
        )
        length = int(self.val_clip_length)
        val_clips = validation_clips(ctx.data.val_clip_dataset(length), length, int(self.streams), int(self.val_batches))
        evaluation_policy = learner.evaluation_policy

        def evaluate() -> dict[str, float]:
            return policy_quality(model, val_clips, evaluation_policy, reward, dist.device)

        last = self._train(ctx, model, learner, reward, task_optimizer, clips.stream(start), start, evaluate)
        result: dict[str, Any] = {"final": last}
        learned = policy_quality(model, val_clips, evaluation_policy, reward, dist.device)
        result.update({"val_reward_learned": learned["reward"], "val_quality_learned": learned["quality"]})
        result.update({f"val_{k.split('/', 1)[-1]}_learned": v for k, v in learned.items() if k.startswith("actions/")})
        space = model.action_space
        if isinstance(space, Discrete):
            uniform = policy_quality(model, val_clips, RandomPolicy(space.n), reward, dist.device)
            result.update({"val_reward_random": uniform["reward"], "val_quality_random": uniform["quality"]})
        runtime.logger.scalars({f"val/{k}": v for k, v in result.items() if k.startswith("val_")}, int(self.steps))
        ctx.finish(int(self.steps), {"models": models, "optimizers": optimizers}, result,
                   learners=learner_states(learner.without_replay()), generators={"policy": generator})
        return result

    def learner_optimizer(self, cfg: DictConfig) -> Callable[[Any], torch.optim.Optimizer]:
        """``parameters -> optimiser`` of the learner: ``policy_optimizer``, else the run's, at ``lr_policy``."""
        optimizer = instantiate(cfg.optim.optimizer) if self.policy_optimizer is None else self.policy_optimizer
        return partial(optimizer, lr=float(self.lr_policy))

    def _train(self, ctx: StageContext, model: StreamingModel, learner: Learner, reward: Reward,
               task_optimizer: torch.optim.Optimizer | None, batches: Iterator[dict[str, Any]], start: int,
               evaluate: Callable[[], dict[str, float]]) -> dict[str, float]:
        runtime, device = ctx.runtime, ctx.dist.device
        joint = task_optimizer is not None
        task_params = [p for p in model.task_parameters() if p.requires_grad] if joint else []
        bar = _progress(runtime, start, self.steps, ctx.name)
        last: dict[str, float] = {}
        for step in range(start, self.steps):
            learner.start(step)
            batch = next(batches)
            frames = _frames(batch["frames"], device)
            targets = to_device_targets(batch["targets"], device)
            if joint:
                model.train()
                freeze_batchnorm(model)
            else:
                model.eval()
            pending: list[Tensor] = []
            step_losses: dict[str, float] = {}

            def add_task_loss(t: int, out: Any) -> None:
                if joint:
                    losses = model.loss(out, [clip[t] for clip in targets])
                    pending.append(sum(losses.values()))
                    for k, v in losses.items():
                        step_losses[f"losses/{k}"] = step_losses.get(f"losses/{k}", 0.0) + float(v.detach()) / frames.shape[1]

            rewards, qualities, learner_stats, actions = [], [], [], []
            transition: Transition | None = None
            runner = StreamRunner(model, learner.behaviour, generator=learner.generator, decode=False,
                                  score_graph=learner.needs_score_graph)
            with torch.set_grad_enabled(joint), runtime.autocast():
                for t, transition in enumerate(stream_clip(runner, frames, targets, reward, on_step=add_task_loss)):
                    rewards.append(transition.rewards.float().mean())
                    qualities.append(transition.quality.float().mean())
                    if transition.actions is not None:
                        actions.append(transition.actions.detach())
                    learner.observe(transition)
                    if joint and ((t + 1) % self.bptt == 0 or t + 1 == frames.shape[1]):
                        loss = torch.stack(pending).mean()
                        check_finite(loss, step, runtime.last_checkpoint())
                        task_optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        average_gradients(task_params, ctx.dist)
                        if self.max_grad_norm:
                            torch.nn.utils.clip_grad_norm_(task_params, self.max_grad_norm)
                        task_optimizer.step()
                        pending.clear()
                        # Truncated BPTT: later frames still read the memories, not their history.
                        runner.state.update(runner.state.detach())
                    stats = learner.update(step)
                    if stats:
                        learner_stats.append(stats)
                stats = learner.end_step(step)
                if stats:
                    learner_stats.append(stats)
            for stats in learner_stats:
                loss_key = next((k for k in stats if k.startswith("losses/")), None)
                if loss_key is not None:
                    check_finite(stats[loss_key], step, runtime.last_checkpoint())
            if runtime.on_step_end is not None:
                runtime.on_step_end(step + 1, model)
            bar.update(1)
            if (step + 1) % runtime.log_every == 0 or step + 1 == self.steps:
                # The behaviour policy's actions of this step (LFS: the f0 rate, Liu et al. 2019, Fig. 8).
                taken = model.action_statistics(torch.stack(actions)) if actions else {}
                last = {"rewards/mean": float(torch.stack(rewards).mean()),
                        "rewards/quality": float(torch.stack(qualities).mean()), **learner.stats, **step_losses,
                        **taken}
                if learner_stats:
                    keys = set().union(*learner_stats)
                    last.update({k: sum(s[k] for s in learner_stats if k in s) / sum(k in s for s in learner_stats)
                                 for k in sorted(keys)})
                runtime.logger.scalars(last, step + 1)
                _log_images(runtime.logger, model, frames[0, -1], targets[0][-1], transition, step + 1)
                bar.set_postfix(reward=f"{last['rewards/mean']:.3f}")
            metric = None
            if self.evaluate_every and ((step + 1) % self.evaluate_every == 0 or step + 1 == self.steps):
                validation = evaluate()
                metric = validation["quality"]
                # The learnt (evaluation) policy's actions on the validation clips, e.g. its f0 rate.
                runtime.logger.scalars({"val/quality": metric, **{f"val/{k.split('/', 1)[-1]}": v for k, v in
                                                                   validation.items() if k.startswith("actions/")}},
                                       step + 1)
            if (step + 1) % self.checkpoint_every == 0 or step + 1 == self.steps or metric is not None:
                runtime.checkpoint(step + 1, metric)
        bar.close()
        return last


def _load_task_weights(model: StreamingModel, path: Path) -> None:
    """The task network's weights from another stage's checkpoint (the policy network may be new)."""
    missing, unexpected = model.load_state_dict(load_checkpoint(path)["models"]["model"], strict=False)
    if unexpected or set(missing) - model.policy_state_names():
        raise RuntimeError(f"{path} does not fit the model: missing {missing}, unexpected {unexpected}")


@torch.no_grad()
def _log_images(logger: ExperimentLogger, model: StreamingModel, frame: Tensor, target: dict,
                transition: Transition | None, step: int) -> None:
    """Stream 0's last frame with what the policy chose, its predictions and ground truth, and the
    model's memory image (Patchwork: the patchwork of remembered windows of Chai 2019, Fig. 2)."""
    if transition is None or not logger.enabled:
        return
    image_size = tuple(frame.shape[-2:])
    overlay = {} if transition.actions is None else model.action_overlay(transition.actions[0], image_size)
    window = overlay.get("box", (0.0, 0.0, float(image_size[1]), float(image_size[0])))
    prediction = model.predict(transition.out)[0]
    logger.attention_frame("images/attention", frame, window, boxes=prediction.get("boxes"), step=step,
                           ground_truth=target.get("boxes"), mask=prediction.get("mask"))
    memory = model.memory_image(transition.out.state)
    if memory is not None:
        name, image = memory
        logger.memory_mosaic(f"images/memory_{name}", image[0].detach().float(), step, window_box=window)


@torch.no_grad()
def policy_quality(
    model: StreamingModel, clips: list[dict[str, Any]], policy: Any, reward: Reward, device: torch.device,
    seed: int = 0,
) -> dict[str, float]:
    """Mean reward and mean task quality of ``policy`` on fixed validation clips, plus the model's
    :meth:`~patchwork.models.streaming.StreamingModel.action_statistics` of the actions taken."""
    model.eval()
    runner = StreamRunner(model, policy, seed=seed, decode=False)
    rewards, qualities, actions = [], [], []
    for batch in clips:
        frames = _frames(batch["frames"], device)
        targets = to_device_targets(batch["targets"], device)
        for transition in stream_clip(runner, frames, targets, reward):
            rewards.append(transition.rewards.float().reshape(transition.rewards.shape[0], -1).mean(1))
            qualities.append(transition.quality)
            if transition.actions is not None:
                actions.append(transition.actions)
    taken = model.action_statistics(torch.cat(actions)) if actions else {}
    return {"reward": float(torch.cat(rewards).mean()), "quality": float(torch.cat(qualities).mean()), **taken}


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
