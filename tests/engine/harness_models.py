"""Two test-only streaming models that the shared harness must host without knowing them.

* :class:`ToySwitch`: ``Discrete(2)``, in the manner of Looking Fast and Slow: action 0 runs a
  3x3 conv on the frame, action 1 keeps the previous logits (and counts their age).
* :class:`ToyBlocks`: ``MultiBinary``, in the manner of BlockCopy: the executed blocks take the
  new logits, the others keep their previous ones.

Both are binary segmenters (``task = "segmentation"``) on frames whose sides are multiples of 16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from patchwork.models.streaming import Description, StepOutput, StreamingModel
from patchwork.nn import StreamState
from patchwork.nn.spaces import Discrete, MultiBinary


class _ToySegmenter(StreamingModel):
    task = "segmentation"

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 1, 3, padding=1)

    def check_image_size(self, image_size):
        if image_size[0] % 16 or image_size[1] % 16:
            raise ValueError(f"{image_size} is not a multiple of 16")

    def predict(self, out, min_score=None):
        probabilities = torch.sigmoid(out.raw["logits"][:, 0])
        return [{"mask": p > 0.5, "scores": p} for p in probabilities]

    def empty_prediction(self, image_size, device):
        return {"mask": torch.zeros(image_size, dtype=torch.bool, device=device),
                "scores": torch.zeros(image_size, device=device)}

    def loss(self, out, targets):
        masks = torch.stack([t["mask"] for t in targets]).float().to(out.raw["logits"])
        return {"mask": F.binary_cross_entropy_with_logits(out.raw["logits"][:, 0], masks)}


class ToySwitch(_ToySegmenter):
    """Action 0 computes, action 1 reuses. Observation: the logits' age and mean, ``(B, 2)``."""

    def __init__(self) -> None:
        super().__init__()
        self.action_space = Discrete(2, first=0)
        self.q = nn.Linear(2, 2)

    def init_state(self, batch_size, image_size, device=None):
        self.check_image_size(image_size)
        return StreamState({"logits": torch.zeros(batch_size, 1, *image_size, device=device),
                            "age": torch.zeros(batch_size, device=device)})

    def forward_raw(self, frames: Tensor, actions: Tensor | None, state: StreamState) -> StepOutput:
        frames = frames.float() / 255 if frames.dtype == torch.uint8 else frames
        run = actions == 0
        logits = state["logits"].clone()
        streams = run.nonzero().squeeze(1)
        if streams.numel():  # only the streams that chose to compute run the conv
            logits[streams] = self.head(frames[streams])
        age = torch.where(run, torch.zeros_like(state["age"]), state["age"] + 1)
        return StepOutput({"logits": logits}, StreamState({"logits": logits, "age": age}))

    def observe(self, out):
        return {"age": out.state["age"][:, None] / 10, "mean": out.state["logits"].mean((1, 2, 3))[:, None]}

    @property
    def policy_network(self):
        return _Concatenated(self.q)

    def policy_parameters(self):
        return list(self.q.parameters())

    def describe(self):
        return Description("ToySwitch", ("reuse",), {"switch": True})

    def action_overlay(self, actions, image_size, state=None):
        return {"text": "compute" if int(actions) == 0 else "reuse"}


class _Concatenated(nn.Module):
    """Observation dict -> the linear layer on its entries concatenated in name order."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, observation: dict[str, Tensor]) -> Tensor:
        return self.linear(torch.cat([observation[k] for k in sorted(observation)], dim=1))


class ToyBlocks(_ToySegmenter):
    """One decision per 16-pixel block. Observation: the frame and the logits at 1/4 resolution."""

    BLOCK = 16

    def __init__(self) -> None:
        super().__init__()
        self.action_space = MultiBinary(self.BLOCK, first=True)
        self.scorer = nn.Conv2d(4, 1, 4, stride=4)  # (B, 4, H/4, W/4) -> one logit per block

    def init_state(self, batch_size, image_size, device=None):
        self.check_image_size(image_size)
        return StreamState({"logits": torch.zeros(batch_size, 1, *image_size, device=device),
                            "frame": torch.zeros(batch_size, 3, *image_size, device=device)})

    def forward_raw(self, frames, actions, state):
        frames = frames.float() / 255 if frames.dtype == torch.uint8 else frames
        executed = actions[:, None].float().repeat_interleave(self.BLOCK, 2).repeat_interleave(self.BLOCK, 3) > 0
        logits = torch.where(executed, self.head(frames), state["logits"])
        shown = torch.where(executed, frames, state["frame"])  # per block: the frame it last executed on
        return StepOutput({"logits": logits}, StreamState({"logits": logits, "frame": shown}))

    def observe(self, out):
        return {"frame": F.avg_pool2d(out.state["frame"], 4), "logits": F.avg_pool2d(out.state["logits"], 4)}

    @property
    def policy_network(self):
        return _BlockScores(self.scorer)

    def policy_parameters(self):
        return list(self.scorer.parameters())

    def describe(self):
        return Description("ToyBlocks", ("blocks",))

    def action_overlay(self, actions, image_size, state=None):
        return {"blocks": actions}


class _BlockScores(nn.Module):
    def __init__(self, scorer: nn.Conv2d) -> None:
        super().__init__()
        self.scorer = scorer

    def forward(self, observation: dict[str, Tensor]) -> Tensor:
        return self.scorer(torch.cat((observation["frame"], observation["logits"]), dim=1))[:, 0]
