"""BlockCopy's stochastic execution policy (Verelst and Tuytelaars, ICCV 2021, Sec. 3.5).

Each block executes with probability ``p_b = sigmoid(logit_b)`` from the policy network,
sampled independently (Eq. 3, 4): sampling rather than thresholding explores, which the
REINFORCE gradient needs. A video's first frame executes every block (Sec. 3.2: only the
first frame of a clip is executed completely).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from patchwork.policies.policy import rng_device


class BernoulliPolicy:
    """``a_b ~ Bernoulli(sigmoid(logit_b))`` per block; every block on a stream's first frame.

    Same ``select`` signature as the other policies: the scores are the policy network's
    logits ``(B, h, w)``, the actions a BoolTensor ``(B, h, w)`` (True = execute).
    """

    needs_q_values = True

    def select(self, q_values: Tensor | None, steps: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``logits (B, h, w)`` and frame indices ``steps (B,)`` -> BoolTensor ``(B, h, w)``.

        Uniforms are drawn for every block on every call (first frames included), so the RNG
        advances by the same amount each step and a seeded run is reproducible.
        """
        if q_values is None:
            raise ValueError("BernoulliPolicy needs the policy network's logits")
        uniforms = torch.rand(q_values.shape, generator=generator, device=rng_device(generator)).to(q_values.device)
        actions = uniforms < torch.sigmoid(q_values.detach())
        first = (steps.to(q_values.device) == 0).view(-1, *([1] * (q_values.dim() - 1)))
        return actions | first

    @staticmethod
    def log_prob(logits: Tensor, actions: Tensor) -> Tensor:
        """``log pi(a_b | S_t)`` ``(B, h, w)``, differentiable in ``logits`` (REINFORCE, Eq. 7)."""
        return torch.where(actions.to(torch.bool), F.logsigmoid(logits), F.logsigmoid(-logits))

    def __repr__(self) -> str:
        return "BernoulliPolicy()"
