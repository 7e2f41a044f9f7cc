"""The one stream runner: ``B`` streams, one frame at a time, policy -> model -> observation -> scores.

Training rollouts, streaming evaluation, theoretical cost, latency and the notebook API all
step models through :class:`StreamRunner`, so a method behaves the same everywhere::

    runner = StreamRunner(model, policy, seed=0)
    runner.start(B, (H, W), device, videos=torch.arange(B))
    for t in range(T):
        step = runner.step(frames[:, t])    # step.actions ran on this frame; step.out, step.scores

Each frame: the policy network scores the previous frame's observation
(``model.policy_network(model.policy_input(model.observe(out), frames))``, only when the
policy reads scores; ``policy_input`` adds the incoming frame for a policy that reads it), the policy
picks ``A_t`` from them, and the model runs the frame under ``A_t``. Scoring at the start of
the frame that uses the scores, rather than at the end of the one before, means a learner
that updates the policy network between frames always differentiates scores of the current
weights, and a frame's cost includes choosing its own action.

**The first-action rule.** A model without an action space gets ``actions=None``. A policy
that reads no scores (random, scanning, fixed, fixed interleaving) chooses every frame,
the first too. A policy that reads scores has none for a stream's first frame: that
frame takes the action space's first action (:func:`~patchwork.nn.spaces.first_actions`:
Patchwork a random window, LFS f0, BlockCopy every block), drawn from the runner's
generator, or, when the runner is told which videos it plays, from a generator seeded by
``(seed, video)`` alone so a video starts alike whatever shares its batch. While a model
has no observation after the first frame (a delayed keyframe not finished yet), each stream
keeps its previous action.

**A policy that learns while it acts** (BlockCopy's online protocol,
:class:`~patchwork.engine.online.OnlineLearning`) has ``observe_step(model, frames, step, t)``;
the runner calls it after every frame, and computes the scores with autograd when the policy's
``needs_score_graph`` says so. Evaluation, cost and latency then run it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from patchwork.models.streaming import StepOutput, StreamingModel
from patchwork.nn import StreamState
from patchwork.nn.flops import count_frame_flops
from patchwork.nn.spaces import first_actions


@dataclass
class RunnerStep:
    """One frame of ``B`` streams.

    Attributes:
        actions: ``A_t``, what the frame ran under (``None`` without an action space).
        out: the model's step output (``predictions`` filled when the runner decodes).
        observation: ``S_t = model.observe(out)`` (may alias the state; ``None`` without one).
        scores: the policy network's scores on ``S_{t-1}`` that chose ``actions`` (``None`` when
            the policy reads none, and at the first frame).
        flops: FLOPs (2 x multiply-adds) the frame computed for all ``B`` streams, choosing its actions
            included, learning excluded (:mod:`patchwork.nn.flops`), when the runner counts them, else ``None``.
    """

    actions: Tensor | None
    out: StepOutput
    observation: dict[str, Tensor] | None
    scores: Tensor | None
    flops: int | None = None


class StreamRunner:
    """Steps a streaming model under a policy.

    Args:
        model: any :class:`~patchwork.models.streaming.StreamingModel`.
        policy: a policy for the model's action space (``None`` for a model without one).
        seed: seeds the runner's generator and the per-video first actions.
        generator: the generator of the policy and of random first actions (default: a
            fresh one seeded with ``seed``); a learner passes its own.
        decode: decode predictions each frame (eval mode); otherwise ``forward_raw``.
        score_graph: compute scores with autograd (an on-policy learner's gradient);
            otherwise without (values only).
        learn: let a policy that learns while it acts learn from the frames (``False``: it only
            acts, e.g. while the cost of inference is counted).
        count_flops: count each frame's FLOPs of inference (``RunnerStep.flops``): what a content-dependent
            method computes on the frames it is evaluated on. Learning is not counted (the cost of
            inference, :mod:`patchwork.evaluation.cost`).
    """

    def __init__(
        self,
        model: StreamingModel,
        policy: Any | None,
        seed: int = 0,
        generator: torch.Generator | None = None,
        decode: bool = True,
        score_graph: bool = False,
        learn: bool = True,
        count_flops: bool = False,
    ) -> None:
        space = model.action_space
        if space is not None and policy is None:
            raise ValueError(f"{type(model).__name__} has an action space ({space}): give it a policy")
        if policy is not None and policy.needs_scores and space is not None and model.policy_network is None:
            raise ValueError(f"{policy!r} reads scores but {type(model).__name__} has no policy network")
        self.model = model
        self.policy = None if space is None else policy
        self.seed = int(seed)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(self.seed)
        self.decode = decode
        self.learn = getattr(self.policy, "observe_step", None) if learn else None
        self.score_graph = score_graph or (self.learn is not None and bool(getattr(self.policy, "needs_score_graph", False)))
        self.count_flops = bool(count_flops)
        self.state: StreamState | None = None

    def start(
        self,
        batch_size: int,
        image_size: tuple[int, int],
        device: torch.device | str = "cpu",
        videos: Tensor | None = None,
        state: StreamState | None = None,
    ) -> None:
        """Begin ``batch_size`` streams of ``image_size`` frames (all at frame 0).

        Args:
            videos: LongTensor ``(B,)`` of the videos the streams play: random first actions
                are then seeded per video (see the module docstring).
            state: a state to start from (default: the model's empty state).
        """
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.videos = videos
        self.state = self.model.init_state(batch_size, self.image_size, self.device) if state is None else state
        self.t = 0
        self.actions: Tensor | None = None
        self.observation: dict[str, Tensor] | None = None

    def choose(self, frames: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """``(A_t, the scores that chose it)`` of every stream at the current frame ``frames (B, 3, H, W)``."""
        space, policy = self.model.action_space, self.policy
        if space is None:
            return None, None
        steps = torch.full((self.batch_size,), self.t, dtype=torch.long, device=self.device)
        if not policy.needs_scores:
            return policy.select(None, steps, self.generator).to(self.device), None
        if self.t == 0 or self.actions is None:
            if self.videos is None:
                first = space.fixed_first(self.batch_size, self.image_size) if space.first != "random" else \
                    space.sample(self.batch_size, self.image_size, self.generator)
            else:
                first = first_actions(space, self.videos, self.image_size, self.seed)
            return first.to(self.device), None
        if self.observation is None:
            return self.actions, None
        with torch.set_grad_enabled(self.score_graph):
            scores = self.model.policy_network(self.model.policy_input(self.observation, frames))
        return policy.select(scores, steps, self.generator).to(self.device), scores

    def _act(self, frames: Tensor) -> tuple[Tensor | None, Tensor | None, StepOutput, dict[str, Tensor] | None]:
        """``(A_t, its scores, the model's output, S_t)`` of frame ``t``: what inference computes."""
        actions, scores = self.choose(frames)
        model = self.model
        out = model(frames, actions, self.state) if self.decode else model.forward_raw(frames, actions, self.state)
        return actions, scores, out, model.observe(out)

    def step(self, frames: Tensor) -> RunnerStep:
        """Run frame ``t`` of every stream, ``frames (B, 3, H, W)`` on the runner's device."""
        if self.state is None:
            raise RuntimeError("call StreamRunner.start before step")
        if self.count_flops:
            acted: list[Any] = []
            flops = count_frame_flops(lambda: acted.append(self._act(frames)))[0]
            actions, scores, out, self.observation = acted[0]
        else:
            (actions, scores, out, self.observation), flops = self._act(frames), None
        self.state, self.actions = out.state, actions
        step = RunnerStep(actions, out, self.observation, scores, flops)
        if self.learn is not None:
            self.learn(self.model, frames, step, self.t)
        self.t += 1
        return step
