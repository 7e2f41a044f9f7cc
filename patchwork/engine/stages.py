"""The three training stages of Sec. 3.4.

1. **Single-image model** (:func:`run_stage1`): the model with ``WindowGrid(1, 1)`` trained
   with its task loss and BatchNorm on single frames mixing video frames and stills.
2. **Attention only** (:func:`run_stage2`): the stage-1 weights in the recurrent Patchwork
   setting on clips of many streams; only the attention network learns, by Double DQN.
3. **Joint fine-tuning** (:func:`run_stage3`): BatchNorm frozen; the main network fine-tuned
   with the task loss at a lower learning rate, jointly with Q-learning.

Each stage function runs from ``start`` to ``steps`` and calls ``checkpoint(step, ...)``
regularly; everything it needs to resume is in the objects it gets, which the caller
saves and restores (:mod:`patchwork.engine.train`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from patchwork.engine.distributed import DistributedContext
from patchwork.engine.guards import check_finite
from patchwork.engine.rollout import AttentionQ, random_first, stream_clip
from patchwork.engine.tb_logging import ExperimentLogger
from patchwork.models.streaming import StreamingModel
from patchwork.policies import EpsilonGreedyPolicy, RandomPolicy
from patchwork.rl import ReplayBuffer, ddqn_loss, hard_update, polyak_update
from patchwork.rl.ddqn import ddqn_update


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


def to_device_targets(targets: list[Any], device: torch.device) -> list[Any]:
    """Move (nested lists of) per-frame target dicts to ``device``."""
    if isinstance(targets, dict):
        return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in targets.items()}
    return [to_device_targets(t, device) for t in targets]


def _frames(batch: Tensor, device: torch.device) -> Tensor:
    return batch.to(device).float().div_(255.0)


def average_gradients(parameters: list[nn.Parameter], dist: DistributedContext) -> None:
    """All-reduce (mean) the gradients of ``parameters`` across ranks.

    The recurrent stages call the model once per frame before one backward pass, which
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


# --------------------------------------------------------------------------- stage 1
def run_stage1(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    batches: Iterator[dict[str, Any]],
    start: int,
    steps: int,
    runtime: StageRuntime,
    max_grad_norm: float | None = 10.0,
) -> dict[str, float]:
    """Supervised single-frame training (Sec. 3.4, stage 1).

    Args:
        model: the single-frame model, possibly DDP-wrapped; BatchNorm trains.
        batches: collated single-frame batches (``image`` uint8 ``(B, 3, H, W)``, ``target``).
    Returns:
        The last logged losses.
    """
    inner: StreamingModel = getattr(model, "module", model)
    device = runtime.dist.device
    model.train()
    bar = _progress(runtime, start, steps, "stage 1")
    last: dict[str, float] = {}
    tic = time.perf_counter()
    for step in range(start, steps):
        batch = next(batches)
        frames = _frames(batch["image"], device)
        targets = to_device_targets(batch["target"], device)
        zeros = torch.zeros(frames.shape[0], dtype=torch.long, device=device)
        with runtime.autocast():
            out = model(frames, zeros, inner.init_state(frames.shape[0], tuple(frames.shape[-2:]), device))
            losses = inner.loss(out, targets)
        loss = sum(losses.values())
        check_finite({**losses, "loss": loss}, step, runtime.last_checkpoint())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        scheduler.step()
        if runtime.on_step_end is not None:
            runtime.on_step_end(step + 1, inner)
        bar.update(1)
        if (step + 1) % runtime.log_every == 0 or step + 1 == steps:
            elapsed, tic = time.perf_counter() - tic, time.perf_counter()
            last = {f"losses/{k}": float(v.detach()) for k, v in losses.items()} | {"losses/total": float(loss.detach())}
            runtime.logger.scalars(
                {**last, "charts/lr": scheduler.get_last_lr()[0],
                 "perf/frames_per_s": runtime.log_every * frames.shape[0] / max(elapsed, 1e-9)},
                step + 1,
            )
            bar.set_postfix(loss=f"{last['losses/total']:.3f}")
        if (step + 1) % runtime.checkpoint_every == 0 or step + 1 == steps:
            runtime.checkpoint(step + 1, None)
    bar.close()
    return last


# ---------------------------------------------------------------------- stages 2, 3
@dataclass
class QLearning:
    """The Double DQN side of stages 2 and 3 (Eq. 4, 5)."""

    model: StreamingModel
    target: nn.Module  # delayed copy of model.attention
    optimizer: torch.optim.Optimizer
    replay: ReplayBuffer | None
    policy: EpsilonGreedyPolicy
    generator: torch.Generator
    gamma: float
    batch_size: int
    warmup: int
    target_update: str  # "hard" or "polyak"
    target_every: int
    tau: float
    max_grad_norm: float | None

    def ensure_replay(self, obs: dict[str, Tensor], capacity: int) -> None:
        """Allocate the buffer from the first observation's shapes (they depend on the image size)."""
        if self.replay is None:
            spec = {name: (tuple(value.shape[1:]), value.dtype) for name, value in obs.items()}
            self.replay = ReplayBuffer(capacity, spec, device="cpu")

    def select(self, q_values: Tensor | None, steps: Tensor) -> Tensor:
        return random_first(self.model.num_actions, self._greedy_or_explore, self.generator)(q_values, steps)

    def _greedy_or_explore(self, q_values: Tensor, steps: Tensor) -> Tensor:
        return self.policy.select(q_values, steps, self.generator).to(q_values.device)

    def update(self, step: int, dist: DistributedContext) -> dict[str, float]:
        """One DDQN gradient step from the replay buffer (nothing before ``warmup`` transitions)."""
        if self.replay is None or len(self.replay) < max(self.warmup, self.batch_size):
            return {}
        batch = self.replay.sample(self.batch_size, self.generator)
        batch = {k: ({n: t.to(dist.device) for n, t in v.items()} if isinstance(v, dict) else v.to(dist.device))
                 for k, v in batch.items()}
        online, target = AttentionQ(self.model.attention), AttentionQ(self.target)
        if dist.is_distributed:
            loss, stats = ddqn_loss(online, target, batch, self.gamma)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            params = list(self.model.attention.parameters())
            average_gradients(params, dist)
            if self.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
            self.optimizer.step()
            stats = {"losses/td": loss.detach(), **stats}
        else:
            stats = ddqn_update(online, target, self.optimizer, batch, self.gamma, self.max_grad_norm)
        if self.target_update == "polyak":
            polyak_update(self.target, self.model.attention, self.tau)
        elif (step + 1) % self.target_every == 0:
            hard_update(self.target, self.model.attention)
        return {k: float(v) for k, v in stats.items()}


def freeze_batchnorm(model: nn.Module) -> None:
    """Stage 3 (Sec. 3.4): BatchNorm layers use and keep their stage-1 statistics and affine weights."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            for parameter in module.parameters():
                parameter.requires_grad_(False)


def run_recurrent_stage(
    stage: int,
    q: QLearning,
    main_optimizer: torch.optim.Optimizer | None,
    batches: Iterator[dict[str, Any]],
    start: int,
    steps: int,
    runtime: StageRuntime,
    replay_capacity: int,
    bptt: int = 4,
    max_grad_norm: float | None = 10.0,
    evaluate: Callable[[], float] | None = None,
    evaluate_every: int = 0,
) -> dict[str, float]:
    """Stage 2 (``main_optimizer=None``: only the attention learns) or stage 3 (joint).

    One training step streams one batch of ``B`` clips of ``T`` frames. Every frame's
    transition goes into the replay buffer and is followed by one DDQN update. In stage 3
    the task loss of every frame is backpropagated through the cell memories for up to
    ``bptt`` frames (truncated BPTT: the state is detached every ``bptt`` frames).
    """
    model, device = q.model, runtime.dist.device
    joint = main_optimizer is not None
    main_params = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("attention.")]
    bar = _progress(runtime, start, steps, f"stage {stage}")
    last: dict[str, float] = {}
    for step in range(start, steps):
        q.policy.global_step = step
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

        rewards, qualities, q_stats = [], [], []
        transition = None
        with torch.set_grad_enabled(joint), runtime.autocast():
            transitions = stream_clip(model, frames, targets, q.select, on_step=add_task_loss)
            for t, transition in enumerate(transitions):
                rewards.append(transition.rewards.mean())
                qualities.append(transition.quality.mean())
                q.ensure_replay(transition.next_obs, replay_capacity)
                if transition.obs is not None:
                    q.replay.add(transition.obs, transition.actions, transition.rewards, transition.next_obs,
                                 torch.zeros_like(transition.rewards, dtype=torch.bool))
                if joint and ((t + 1) % bptt == 0 or t + 1 == frames.shape[1]):
                    loss = torch.stack(pending).mean()
                    check_finite(loss, step, runtime.last_checkpoint())
                    main_optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    average_gradients(main_params, runtime.dist)
                    if max_grad_norm:
                        torch.nn.utils.clip_grad_norm_(main_params, max_grad_norm)
                    main_optimizer.step()
                    pending.clear()
                    # Truncated BPTT: later frames still read the memories, not their history.
                    transition.out.state.update(transition.out.state.detach())
                with torch.enable_grad():
                    stats = q.update(step, runtime.dist)
                if stats:
                    check_finite(stats["losses/td"], step, runtime.last_checkpoint())
                    q_stats.append(stats)
        if runtime.on_step_end is not None:
            runtime.on_step_end(step + 1, model)
        bar.update(1)
        if (step + 1) % runtime.log_every == 0 or step + 1 == steps:
            last = {
                "rewards/mean": float(torch.stack(rewards).mean()),
                "rewards/quality": float(torch.stack(qualities).mean()),
                "charts/epsilon": q.policy.current_epsilon,
                "charts/replay_size": float(len(q.replay)) if q.replay is not None else 0.0,
                **step_losses,
            }
            if q_stats:
                last.update({k: sum(s[k] for s in q_stats) / len(q_stats) for k in q_stats[0]})
            runtime.logger.scalars(last, step + 1)
            _log_images(runtime.logger, model, frames[0, -1], targets[0][-1], transition, step + 1)
            bar.set_postfix(reward=f"{last['rewards/mean']:.3f}")
        metric = None
        if evaluate is not None and evaluate_every and ((step + 1) % evaluate_every == 0 or step + 1 == steps):
            metric = evaluate()
            runtime.logger.scalars({"val/quality": metric}, step + 1)
        if (step + 1) % runtime.checkpoint_every == 0 or step + 1 == steps or metric is not None:
            runtime.checkpoint(step + 1, metric)
    bar.close()
    return last


@torch.no_grad()
def _log_images(logger: ExperimentLogger, model: StreamingModel, frame: Tensor, target: dict, transition: Any,
                step: int) -> None:
    """Stream 0's last frame with its window, predictions and ground truth, and the first cell's
    memory: the patchwork of remembered windows of the paper's Fig. 2."""
    if transition is None or not logger.enabled:
        return
    image_size = tuple(frame.shape[-2:])
    window = model.grid.boxes(image_size)[int(transition.actions[0])]
    prediction = model.predict(transition.out)[0]
    logger.attention_frame("images/attention", frame, window, boxes=prediction.get("boxes"), step=step,
                           ground_truth=target.get("boxes"), mask=prediction.get("mask"))
    names = [name for name, _ in model.backbone.named_memories()]
    memory = model.backbone.memory(transition.out.state, names[0])[0].detach().float()
    logger.memory_mosaic(f"images/memory_{names[0]}", memory, step, window_box=window)


@torch.no_grad()
def policy_quality(
    model: StreamingModel, clips: list[dict[str, Any]], policy: Any, device: torch.device, seed: int = 0
) -> dict[str, float]:
    """Mean reward and mean task quality ``f`` of ``policy`` on fixed validation clips."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)

    uniform = RandomPolicy(model.num_actions)

    def select(q_values: Tensor | None, steps: Tensor) -> Tensor:
        if policy.needs_q_values and q_values is None:  # a clip's first frame
            return uniform.select(None, steps, generator).to(device)
        return policy.select(q_values if policy.needs_q_values else None, steps, generator).to(device)

    rewards, qualities = [], []
    for batch in clips:
        frames = _frames(batch["frames"], device)
        targets = to_device_targets(batch["targets"], device)
        for transition in stream_clip(model, frames, targets, select):
            rewards.append(transition.rewards)
            qualities.append(transition.quality)
    return {"reward": float(torch.cat(rewards).mean()), "quality": float(torch.cat(qualities).mean())}
