"""Streaming a batch of clips through a model under a policy: rewards and transitions.

The Markov decision process of Sec. 3.3: after frame ``t`` the attention network sees
``S_t`` (the restored full-frame memory and the action history) and its Q-values pick
``A_{t+1}``, the window of frame ``t + 1``; the reward ``R_{t+1}`` (Eq. 2) is what that
window's prediction gained over re-using frame ``t``'s. The first window of a clip has no
observation to be chosen from; it is drawn uniformly at random.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from patchwork.models.streaming import ACTION_HISTORY, StepOutput, StreamingModel
from patchwork.nn import StreamState
from patchwork.policies import RandomPolicy
from patchwork.rl.rewards import detection_quality_batch, detection_rewards, segmentation_quality, segmentation_rewards


class AttentionQ(nn.Module):
    """Adapter: a replay observation ``{"memory", "history"}`` -> the attention network's Q-values."""

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.attention = attention

    def forward(self, observation: dict[str, Tensor]) -> Tensor:
        """``(N, C, h, w)`` memory and ``(N, A)`` history -> ``(N, A)``."""
        return self.attention(observation["memory"], observation["history"])


def observe(model: StreamingModel, out: StepOutput) -> dict[str, Tensor]:
    """``S_t`` as the replay buffer stores it: a detached copy (memories are updated in place)."""
    return {
        "memory": model.attention_input(out).detach().clone(),
        "history": out.state[ACTION_HISTORY].detach().clone(),
    }


def _masks(predictions: list[dict[str, Tensor]]) -> Tensor:
    return torch.stack([p["mask"] for p in predictions])


def step_rewards(
    task: str, predictions: list[dict[str, Tensor]], previous: list[dict[str, Tensor]], targets: list[dict[str, Tensor]]
) -> Tensor:
    """Eq. 2 for ``B`` streams: ``max(0, f(gt_t, p_t) - f(gt_t, p_{t-1}))``, shape ``(B,)``."""
    if task == "detection":
        return detection_rewards(predictions, previous, targets)
    gt = torch.stack([t["mask"] for t in targets]).to(_masks(predictions).device)
    return segmentation_rewards(_masks(predictions), _masks(previous), gt)


def frame_quality(task: str, predictions: list[dict[str, Tensor]], targets: list[dict[str, Tensor]]) -> Tensor:
    """The task measure ``f`` of Sec. 3.3 per stream, ``(B,)``."""
    if task == "detection":
        return detection_quality_batch(
            [p["boxes"] for p in predictions], [p["scores"] for p in predictions], [t["boxes"] for t in targets]
        )
    gt = torch.stack([t["mask"] for t in targets]).to(_masks(predictions).device)
    return segmentation_quality(_masks(predictions), gt)


@dataclass
class Transition:
    """One step of ``B`` streams: ``(S_t, A_{t+1}, R_{t+1}, S_{t+1})`` (``obs`` is ``None`` at a clip's start)."""

    obs: dict[str, Tensor] | None
    actions: Tensor
    rewards: Tensor
    next_obs: dict[str, Tensor]
    quality: Tensor
    out: StepOutput


def stream_clip(
    model: StreamingModel,
    frames: Tensor,
    targets: list[list[dict[str, Tensor]]],
    select: Callable[[Tensor | None, Tensor], Tensor],
    state: StreamState | None = None,
    on_step: Callable[[int, StepOutput], None] | None = None,
) -> Iterator[Transition]:
    """Stream ``B`` clips of ``T`` frames, yielding one :class:`Transition` per frame.

    Args:
        model: a streaming model with an attention network.
        frames: ``(B, T, 3, H, W)`` floats in ``[0, 1]`` (or uint8), on the model's device.
        targets: ``B`` lists of ``T`` per-frame targets.
        select: ``(q_values or None, steps (B,)) -> actions (B,)``, the policy.
        state: initial state (fresh when ``None``).
        on_step: called with ``(t, out)`` before the transition is yielded (e.g. to add the
            step's task loss in stage 3, with the graph intact).

    Predictions for rewards are decoded without gradients; the model's mode decides
    everything else (stage 3 streams with autograd on).
    """
    batch, length = frames.shape[:2]
    device = frames.device
    if state is None:
        state = model.init_state(batch, tuple(frames.shape[-2:]), device)
    empty = model.empty_prediction(tuple(frames.shape[-2:]), device)
    previous = [empty] * batch
    obs, q_values = None, None
    for t in range(length):
        steps = torch.full((batch,), t, dtype=torch.long, device=device)
        actions = select(q_values, steps)
        out = model.forward_raw(frames[:, t], actions, state)
        with torch.no_grad():
            predictions = model.reward_predictions(out)
        frame_targets = [clip[t] for clip in targets]
        rewards = step_rewards(model.task, predictions, previous, frame_targets)
        quality = frame_quality(model.task, predictions, frame_targets)
        if on_step is not None:
            on_step(t, out)
        next_obs = observe(model, out)
        yield Transition(obs, actions, rewards, next_obs, quality, out)
        obs, q_values, state, previous = next_obs, out.q_values, out.state, predictions
        if q_values is not None:
            q_values = q_values.detach()


def random_first(num_windows: int, policy_select: Callable, generator: torch.Generator) -> Callable:
    """A ``select`` that draws the first window uniformly and defers to ``policy_select`` after."""
    uniform = RandomPolicy(num_windows)

    def select(q_values: Tensor | None, steps: Tensor) -> Tensor:
        if q_values is None:
            return uniform.select(None, steps, generator).to(steps.device)
        return policy_select(q_values, steps)

    return select
