"""Experience replay for the attention Q-network (Sec. 3.3; DDQN with replay, van Hasselt et al. 2016).

Transitions ``(S_t, A_t, R_{t+1}, S_{t+1}, done)`` of many video streams are written at
once into preallocated circular storage; uniform sampling breaks the strong correlation
between consecutive frames of one stream (Sec. 3.4 names that correlation as a main
training difficulty).

Memory. Storage is allocated once, so the footprint is fixed and known up front::

    bytes_per_transition = 2 * sum_k prod(shape_k) * itemsize_k    # obs and next_obs
                         + 8 * prod(action_shape)                 # int64 action
                         + 4 + 1                                  # float32 reward, bool done

where ``itemsize_k`` is that of ``storage_dtype`` (float16 by default) for floating
observations and of the observation's own dtype otherwise. ``S_{t+1}`` is stored
separately from ``S_t`` rather than shared with the next transition: streams end and
restart independently, and the factor of 2 keeps indexing trivial.

Paper default (384x384 frames, MobileNetV2 width 1.0, the attention observation being the
restored 1280 x 12 x 12 stride-32 memory plus the action history), float16 storage::

    memory:   1280 * 12 * 12 = 184,320 values * 2 B = 368,640 B
    history:  9 (M=4,N=2) or 16 (M=4,N=1) values * 2 B = 18 or 32 B
    per transition: 2 * (368,640 + 18) + 8 + 4 + 1 = 737,329 B (M=4,N=2)
                    2 * (368,640 + 32) + 8 + 4 + 1 = 737,357 B (M=4,N=1)

so ``ReplayBuffer.capacity_for_budget(4 * 2**30, spec)`` is 5,825 / 5,824 transitions
(5,424 for 4e9 B) and :data:`DEFAULT_CAPACITY` = 5,000 transitions take 3.687e9 B =
3.43 GiB, under 4 GB either way. (Width 1.4, 1792 channels: 1,032,241 / 1,032,269 B per
transition; 5,000 would need 4.81 GiB, so size that buffer with ``capacity_for_budget``:
4,160 fit in 4 GiB.) In float32 the same
budget holds half as many transitions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

#: Observation spec: name -> (shape without the batch dimension, dtype returned by ``sample``).
ObservationSpec = Mapping[str, tuple[tuple[int, ...], torch.dtype]]

#: Capacity that keeps the paper-default buffer under 4 GB (see the module docstring).
DEFAULT_CAPACITY = 5000


def _storage_dtype(dtype: torch.dtype, storage_dtype: torch.dtype) -> torch.dtype:
    """Floating observations are compressed to ``storage_dtype``; integer/bool ones are kept exact."""
    return storage_dtype if dtype.is_floating_point else dtype


def _bytes_per_transition(
    observation_spec: ObservationSpec, storage_dtype: torch.dtype, action_shape: tuple[int, ...]
) -> int:
    obs_bytes = sum(
        math.prod(shape) * _storage_dtype(dtype, storage_dtype).itemsize for shape, dtype in observation_spec.values()
    )
    action_bytes = math.prod(action_shape) * torch.int64.itemsize
    return 2 * obs_bytes + action_bytes + torch.float32.itemsize + torch.bool.itemsize


class ReplayBuffer:
    """Fixed-size circular replay memory for ``B`` streams written together.

    Args:
        capacity: maximum number of transitions kept; the oldest are overwritten.
        observation_spec: ``{name: (shape, dtype)}`` for one stream's observation, e.g.
            ``{"memory": ((1280, 12, 12), torch.float32), "history": ((9,), torch.float32)}``.
            ``sample`` returns observations in these dtypes.
        device: where the storage lives (and ``sample`` returns tensors).
        storage_dtype: dtype that floating observations are stored in (float16 halves the
            memory; the Q-network's input features are post-ReLU6 activations in ``[0, 6]``
            and history values in ``[0, 1]``, well within float16's range).
        action_shape: shape of one stream's action; ``()`` for Patchwork's single window
            index, ``(num_blocks,)`` for per-block decisions (BlockCopy).
    """

    def __init__(
        self,
        capacity: int,
        observation_spec: ObservationSpec,
        device: torch.device | str = "cpu",
        storage_dtype: torch.dtype = torch.float16,
        action_shape: tuple[int, ...] = (),
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = int(capacity)
        self.observation_spec = {name: (tuple(shape), dtype) for name, (shape, dtype) in observation_spec.items()}
        self.device = torch.device(device)
        self.storage_dtype = storage_dtype
        self.action_shape = tuple(action_shape)
        self.position = 0  # next slot to write
        self.size = 0  # number of valid transitions
        self._obs = self._allocate_observations()
        self._next_obs = self._allocate_observations()
        self._actions = torch.zeros(self.capacity, *self.action_shape, dtype=torch.long, device=self.device)
        self._rewards = torch.zeros(self.capacity, dtype=torch.float32, device=self.device)
        self._dones = torch.zeros(self.capacity, dtype=torch.bool, device=self.device)

    def _allocate_observations(self) -> dict[str, Tensor]:
        return {
            name: torch.zeros(
                self.capacity, *shape, dtype=_storage_dtype(dtype, self.storage_dtype), device=self.device
            )
            for name, (shape, dtype) in self.observation_spec.items()
        }

    def __len__(self) -> int:
        return self.size

    @property
    def bytes_per_transition(self) -> int:
        """Bytes one transition occupies (formula in the module docstring)."""
        return _bytes_per_transition(self.observation_spec, self.storage_dtype, self.action_shape)

    @property
    def nbytes(self) -> int:
        """Total bytes of the preallocated storage, ``capacity * bytes_per_transition``."""
        return self.capacity * self.bytes_per_transition

    @classmethod
    def capacity_for_budget(
        cls,
        budget_bytes: int,
        observation_spec: ObservationSpec,
        storage_dtype: torch.dtype = torch.float16,
        action_shape: tuple[int, ...] = (),
    ) -> int:
        """The largest capacity whose storage fits in ``budget_bytes``."""
        return int(budget_bytes) // _bytes_per_transition(observation_spec, storage_dtype, tuple(action_shape))

    def add(
        self,
        obs: Mapping[str, Tensor],
        actions: Tensor,
        rewards: Tensor,
        next_obs: Mapping[str, Tensor],
        dones: Tensor,
    ) -> None:
        """Append one transition per stream, vectorised over streams.

        Args:
            obs: ``{name: (B, *shape)}``, ``S_t``.
            actions: LongTensor ``(B, *action_shape)``, ``A_t``.
            rewards: ``(B,)``, ``R_{t+1}``.
            next_obs: ``{name: (B, *shape)}``, ``S_{t+1}``.
            dones: BoolTensor ``(B,)``, True where ``S_{t+1}`` is terminal (no bootstrapping).
        If ``B > capacity`` only the last ``capacity`` transitions are kept, as if added one by one.
        """
        batch = actions.shape[0]
        keep = min(batch, self.capacity)
        # Slots written, oldest first; the skipped leading transitions would have been
        # overwritten anyway. Indices are distinct, so the scatter is deterministic.
        start = (self.position + batch - keep) % self.capacity
        slots = (start + torch.arange(keep, device=self.device)) % self.capacity  # (keep,)
        for name in self.observation_spec:
            self._obs[name][slots] = obs[name][batch - keep :].to(self.device, self._obs[name].dtype)
            self._next_obs[name][slots] = next_obs[name][batch - keep :].to(self.device, self._next_obs[name].dtype)
        self._actions[slots] = actions[batch - keep :].to(self.device, torch.long)
        self._rewards[slots] = rewards[batch - keep :].to(self.device, torch.float32)
        self._dones[slots] = dones[batch - keep :].to(self.device, torch.bool)
        self.position = (self.position + batch) % self.capacity
        self.size = min(self.size + batch, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict:
        """Draw ``batch_size`` transitions uniformly with replacement.

        Args:
            batch_size: number of transitions ``N``.
            generator: RNG for the indices (seed it for reproducible sampling); indices are
                drawn on the generator's device and moved to the buffer's.
        Returns:
            ``{"obs": {name: (N, *shape)}, "actions": (N, *action_shape) long,
            "rewards": (N,) float32, "next_obs": {...}, "dones": (N,) bool,
            "indices": (N,) long}``, observations in their spec dtypes, on ``device``.
        """
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        rng_device = generator.device if generator is not None else torch.device("cpu")
        indices = torch.randint(0, self.size, (batch_size,), generator=generator, device=rng_device).to(self.device)
        return {
            "obs": self._gather(self._obs, indices),
            "actions": self._actions[indices],
            "rewards": self._rewards[indices],
            "next_obs": self._gather(self._next_obs, indices),
            "dones": self._dones[indices],
            "indices": indices,
        }

    def _gather(self, storage: dict[str, Tensor], indices: Tensor) -> dict[str, Tensor]:
        return {name: storage[name][indices].to(self.observation_spec[name][1]) for name in self.observation_spec}

    def state_dict(self) -> dict:
        """Everything needed to resume: position, size and the ``size`` filled slots.

        Slots ``0 .. size-1`` are exactly the filled ones (the buffer fills from slot 0 and
        only wraps once full), so saving them and ``position`` restores the buffer exactly.
        Tensors are returned on the buffer's device, in storage dtype.
        """
        return {
            "capacity": self.capacity,
            "observation_spec": self.observation_spec,
            "storage_dtype": self.storage_dtype,
            "action_shape": self.action_shape,
            "position": self.position,
            "size": self.size,
            "obs": {name: value[: self.size].clone() for name, value in self._obs.items()},
            "next_obs": {name: value[: self.size].clone() for name, value in self._next_obs.items()},
            "actions": self._actions[: self.size].clone(),
            "rewards": self._rewards[: self.size].clone(),
            "dones": self._dones[: self.size].clone(),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping, device: torch.device | str = "cpu") -> "ReplayBuffer":
        """A buffer rebuilt from a :meth:`state_dict` alone (its spec travels with it)."""
        buffer = cls(state["capacity"], state["observation_spec"], device, state["storage_dtype"], state["action_shape"])
        buffer.load_state_dict(state)
        return buffer

    def load_state_dict(self, state: Mapping) -> None:
        """Restore a :meth:`state_dict`; the capacity and observation names must match."""
        if state["capacity"] != self.capacity:
            raise ValueError(f"replay capacity mismatch: checkpoint {state['capacity']}, buffer {self.capacity}")
        if set(state["obs"]) != set(self.observation_spec):
            raise ValueError(
                f"replay observation names mismatch: checkpoint {sorted(state['obs'])}, "
                f"buffer {sorted(self.observation_spec)}"
            )
        size = int(state["size"])
        for name in self.observation_spec:
            self._obs[name][:size] = state["obs"][name].to(self.device, self._obs[name].dtype)
            self._next_obs[name][:size] = state["next_obs"][name].to(self.device, self._next_obs[name].dtype)
        self._actions[:size] = state["actions"].to(self.device)
        self._rewards[:size] = state["rewards"].to(self.device)
        self._dones[:size] = state["dones"].to(self.device)
        self.position = int(state["position"])
        self.size = size
