"""Streaming a batch of clips through a model under a learner's policy: rewards and transitions.

After frame ``t`` the policy reads ``S_t`` (``model.observe``) and chooses ``A_{t+1}``, the
action of frame ``t + 1``; the reward ``R_{t+1}`` scores what frame ``t + 1``'s predictions
gained (:mod:`patchwork.rl.roles`). One :class:`~patchwork.rl.roles.Transition` per frame.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from patchwork.engine.runner import RunnerStep, StreamRunner
from patchwork.models.streaming import Prediction, StepOutput, StreamingModel
from patchwork.rl.roles import Reward, RewardContext, Transition


def _copy(observation: dict[str, Tensor] | None) -> dict[str, Tensor] | None:
    """A detached copy: the model updates its memories in place, the transition must not change."""
    return None if observation is None else {k: v.detach().clone() for k, v in observation.items()}


def frame_transition(
    model: StreamingModel,
    reward: Reward,
    frames: Tensor,
    step: RunnerStep,
    previous: list[Prediction],
    targets: list[dict[str, Tensor]],
    obs: dict[str, Tensor] | None = None,
    state_before: object = None,
) -> tuple[Transition, list[Prediction]]:
    """One frame's transition (``S_t`` = ``obs``, the rest from ``step``) and the frame's predictions.

    Predictions are the step's when the runner decoded them, else decoded only as far as the
    reward reads them (``reward.min_score``);
    ``targets`` may be empty where no ground truth exists (online learning during evaluation).
    """
    predictions = step.out.predictions
    if predictions is None:
        with torch.no_grad():
            predictions = model.predict(step.out, reward.min_score)
    context = RewardContext(model, frames, step.actions, step.out, predictions, previous, targets, state_before)
    result = reward(context)
    transition = Transition(obs, step.actions, result.rewards, _copy(step.observation), result.quality, step.scores,
                            step.out)
    return transition, predictions


def stream_clip(
    runner: StreamRunner,
    frames: Tensor,
    targets: list[list[dict[str, Tensor]]],
    reward: Reward,
    on_step: Callable[[int, StepOutput], None] | None = None,
) -> Iterator[Transition]:
    """Stream ``B`` clips of ``T`` frames from their first frame, yielding one transition per frame.

    Args:
        runner: the model and the behaviour policy (``decode=False``: predictions are decoded
            here, only as far as the reward reads them).
        frames: ``(B, T, 3, H, W)`` floats in ``[0, 1]`` (or uint8), on the model's device.
        targets: ``B`` lists of ``T`` per-frame targets.
        reward: the stage's reward.
        on_step: called with ``(t, out)`` before the transition is yielded (e.g. to add the
            step's task loss, with the graph intact).
    """
    model = runner.model
    batch, length = frames.shape[:2]
    image_size = tuple(frames.shape[-2:])
    runner.start(batch, image_size, frames.device)
    previous = [model.empty_prediction(image_size, frames.device)] * batch
    obs = None
    for t in range(length):
        state_before = runner.state
        step = runner.step(frames[:, t])
        transition, predictions = frame_transition(model, reward, frames[:, t], step, previous,
                                                   [clip[t] for clip in targets], obs, state_before)
        if on_step is not None:
            on_step(t, step.out)
        yield transition
        obs, previous = transition.next_obs, predictions
