"""Seeding and exact capture/restore of every random number generator a training run draws from.

A resumed run must continue the *same* random streams as an uninterrupted one (epsilon-greedy
exploration, fake-video sampling, replay sampling, dropout), so checkpoints store
:func:`rng_state` and resuming calls :func:`set_rng_state`.

The state is made of plain Python values and CPU tensors only, so it survives
``torch.save`` / ``torch.load(weights_only=True)`` (numpy's key array is stored as an int64
tensor for that reason).
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Mapping

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global RNG, torch's CPU RNG and every CUDA device's RNG.

    Args:
        seed: an integer in ``[0, 2**32)`` (numpy's limit).
    Does not switch on deterministic kernels (``torch.use_deterministic_algorithms``); on CPU the
    ops used here are deterministic already, on GPU some are not and bit-exact resumes there are
    not guaranteed.
    """
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    # torch.manual_seed also seeds all CUDA devices (lazily when CUDA is not initialised yet).
    torch.manual_seed(seed)


def rng_state(generators: Mapping[str, torch.Generator] | None = None) -> dict:
    """Capture the state of all global RNGs and of optional named generators.

    Args:
        generators: ``{name: torch.Generator}`` the caller owns (e.g. the replay buffer's
            sampling generator); their states are stored under ``"generators"``.
    Returns:
        ``{"python": tuple, "numpy": {...}, "torch": ByteTensor, "cuda": [ByteTensor per
        device] (empty without CUDA), "generators": {name: ByteTensor}}``; all tensors on CPU.
    """
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    return {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": str(name),
            "keys": torch.from_numpy(keys.astype(np.int64)),  # uint32 (624,) as int64: loadable with weights_only
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": {key: generator.get_state() for key, generator in (generators or {}).items()},
    }


def set_rng_state(state: Mapping, generators: Mapping[str, torch.Generator] | None = None) -> None:
    """Restore a :func:`rng_state` exactly: the next draws equal those after the capture.

    Args:
        state: the dict returned by :func:`rng_state` (possibly after a save/load round trip).
        generators: ``{name: torch.Generator}`` to restore in place; each name must be in
            ``state["generators"]``.
    CUDA states are restored for the devices both the checkpoint and this process have: a run
    saved on a GPU resumes on a CPU-only machine (with a warning) and vice versa.
    """
    python_state = state["python"]
    # A save/load round trip may turn the inner tuple into a list; random.setstate needs tuples.
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["bit_generator"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = list(state.get("cuda", []))
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if cuda_states and available:
        for device, device_state in enumerate(cuda_states[:available]):
            torch.cuda.set_rng_state(device_state.cpu(), device)
    if len(cuda_states) != available and (cuda_states or available):
        warnings.warn(
            f"checkpoint holds RNG states for {len(cuda_states)} CUDA device(s), this process sees {available}; "
            "restored the common ones only, CUDA random streams differ from an uninterrupted run",
            stacklevel=2,
        )
    saved_generators = state.get("generators", {})
    for key, generator in (generators or {}).items():
        if key not in saved_generators:
            raise KeyError(f"RNG state has no generator named {key!r}; it holds {sorted(saved_generators)}")
        generator.set_state(saved_generators[key].cpu())
