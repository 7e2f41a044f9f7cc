"""Where the time of one ONLINE BlockCopy frame goes (Verelst and Tuytelaars 2021, Tab. 3).

The frames run through the harness's own loop, a :class:`~patchwork.engine.runner.StreamRunner`
under :class:`~patchwork.engine.online.OnlineLearning` (the policy learns while it streams, as the
main job's online rows run), and each frame is split by
:func:`~patchwork.models.blockcopy.profiling.frame_time_split`. The model marks its own parts:
the sparse-execution overhead and the feature transfer (its network), the policy network with its
input (its ``observe``, ``policy_input`` and policy network). The shared roles know nothing of
BlockCopy, so :func:`mark_online_parts` marks their calls where the benchmark builds them:

* the policy's choice (``select``) and the learner's ``observe`` (the log-probability of the
  chosen blocks, the policy's term of Eq. 12) count as the policy;
* the reward's call (the information gain, Eq. 1 / Algorithm 1, and the per-block rewards of
  Eq. 8-12) as the information gain;
* the learner's ``optimize`` (REINFORCE's backward pass and optimiser step, which its ``update``
  runs every ``update_every`` frames: zero on the other frames) as the update.

What is left is the task network's ops, its decoding (box coding, NMS) included.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from patchwork.engine.online import OnlineLearning
from patchwork.engine.runner import StreamRunner
from patchwork.models.blockcopy import BlockCopyModel
from patchwork.models.blockcopy.profiling import INFORMATION_GAIN, PARTS, POLICY, UPDATE, frame_time_split, part, timed

#: Tab. 3's columns here, the rest (``ops``) last.
COLUMNS = (POLICY, INFORMATION_GAIN, UPDATE, *(p for p in PARTS if p not in (POLICY, INFORMATION_GAIN, UPDATE)),
           "ops")


class _TimedReward:
    """A reward whose calls count as the information gain; everything else is the reward's own."""

    def __init__(self, reward: Any) -> None:
        self.reward = reward

    def __call__(self, context: Any) -> Any:
        with part(INFORMATION_GAIN):
            return self.reward(context)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reward, name)


def mark_online_parts(online: OnlineLearning) -> OnlineLearning:
    """Mark ``online``'s choice, reward and learner calls with Tab. 3's parts (see the module docstring), in place."""
    learner = online.learner
    online.select = timed(online.select, POLICY)
    learner.observe = timed(learner.observe, POLICY)
    learner.optimize = timed(learner.optimize, UPDATE)
    online.reward = _TimedReward(online.reward)
    return online


def online_frame_splits(model: BlockCopyModel, online: OnlineLearning, video: Tensor, seed: int = 0
                        ) -> list[dict[str, float]]:
    """Stream ``video (T, B, 3, H, W)`` (in ``[0, 1]``) through ``model`` under ``online``, one split per frame.

    ``online`` should be marked (:func:`mark_online_parts`). Runs as evaluation does (no gradients
    but the policy's scores'). Frame 0 executes every block (the first-action rule).

    Returns:
        Per frame, :func:`frame_time_split`'s milliseconds plus ``"executed"``, the frame's executed
        fraction of blocks.
    """
    runner = StreamRunner(model, online, seed=seed)
    batch, image_size = video.shape[1], tuple(video.shape[-2:])
    splits = []
    with torch.no_grad():
        runner.start(batch, image_size, video.device, videos=torch.arange(batch))
        for frames in video:
            split = frame_time_split(lambda: runner.step(frames))
            split["executed"] = float(runner.actions.float().mean())
            splits.append(split)
    return splits


def online_frame_row(splits: Sequence[dict[str, float]], setting: str) -> dict[str, Any]:
    """Tab. 3's row: the mean per frame of each part in ms (``<part>_ms``) and in percent of the mean frame (``<part>_%``).

    Means, not medians, so that the parts add up to the frame; the update is amortised over the
    frames (``updates`` says on how many of them it ran).
    """
    mean = {key: sum(s[key] for s in splits) / len(splits) for key in ("total", "executed", *COLUMNS)}
    row: dict[str, Any] = {"setting": setting, "frames": len(splits), "updates": sum(s[UPDATE] > 0 for s in splits),
                           "executed": mean["executed"], "frame_ms": mean["total"]}
    for key in COLUMNS:
        row[f"{key}_ms"] = mean[key]
        row[f"{key}_%"] = 100 * mean[key] / mean["total"]
    return row
