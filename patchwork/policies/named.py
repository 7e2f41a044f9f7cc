"""Policies by the names scripts, configs and notebooks use (``attention_policy=scanning``)."""

from __future__ import annotations

from typing import Any

from patchwork.nn.spaces import ActionSpace, Discrete
from patchwork.policies.hand_designed import FixedPolicy, RandomPolicy, ScanningPolicy
from patchwork.policies.q_learned import GreedyPolicy
from patchwork.policies.stochastic import BernoulliPolicy

#: The names :func:`build_policy` knows.
POLICY_NAMES = ("dqn", "random", "scanning", "fixed", "bernoulli")


def build_policy(name: str, space: ActionSpace | None, window: int = 0, order: str = "raster") -> Any:
    """The policy named ``name`` for a model with action space ``space``.

    ``dqn`` (greedy on the learned Q-values), ``random`` (uniform), ``scanning`` (a fixed
    cycle over the space's ``layout``, ``order`` raster or snake), ``fixed`` (always action
    ``window``), ``bernoulli`` (sampling per-decision logits). A model without an action space
    needs no policy: ``None`` is returned whatever the name.
    """
    if space is None:
        return None
    if name == "dqn":
        return GreedyPolicy()
    if name == "fixed":
        return FixedPolicy(window)
    if name == "bernoulli":
        return BernoulliPolicy()
    if name in ("random", "scanning") and not isinstance(space, Discrete):
        raise ValueError(f"policy {name!r} needs a Discrete action space, got {space}")
    if name == "random":
        return RandomPolicy(space.n)
    if name == "scanning":
        if space.layout is None:
            raise ValueError(f"policy 'scanning' needs a Discrete space with a layout, got {space}")
        return ScanningPolicy(space.layout, order)  # type: ignore[arg-type]
    raise ValueError(f"unknown policy {name!r}: choose one of {', '.join(POLICY_NAMES)}")


def policy_label(policy: Any) -> str:
    """The policy's name in tables (``"Single-frame"`` when there is none)."""
    return "Single-frame" if policy is None else getattr(policy, "label", type(policy).__name__)


__all__ = ["POLICY_NAMES", "build_policy", "policy_label"]
