"""Atomic, complete, device-agnostic training checkpoints and a ``last`` / ``best`` manager.

Payload convention (one plain dict per checkpoint; every stage writes the same keys)::

    {
        "step": int,                      # optimizer steps done; training resumes at this step
        "stage": str,                     # "stage1" | "stage2" | "stage3" (Sec. 3.4's three stages)
        "config": dict,                   # the resolved run config as plain containers
                                          # (OmegaConf.to_container(cfg, resolve=True))
        "models": {name: state_dict},     # of the unwrapped modules (no DDP "module." prefix)
        "optimizers": {name: state_dict},
        "schedulers": {name: state_dict},
        "replay_buffer": state_dict | None,   # ReplayBuffer.state_dict(); None outside Q-learning
        "rng": rng_state(),               # patchwork.engine.reproducibility; under DDP a list with
                                          # one entry per rank (DistributedContext.all_gather_object)
        "extra": dict,                    # anything else the stage needs (e.g. a GradScaler's state)
        # written by CheckpointManager.save:
        "metric": float | None,           # this checkpoint's validation metric
        "best_metric": float | None,      # best metric so far, so a resumed run keeps comparing
    }

:func:`make_payload` and :func:`restore_payload` build and apply it. Values must be what
``torch.load(weights_only=True)`` accepts: tensors, numbers, strings, ``None``, torch dtypes
and devices, and ``dict`` / ``list`` / ``tuple`` / ``set`` of those. :func:`save_checkpoint`
checks this before writing, so a bad value (a numpy scalar, an OmegaConf node) fails at the
first save, naming its key, and not at resume time when the run is already lost.

Tensors are saved from whatever device they live on and loaded with ``map_location`` (CPU by
default); ``load_state_dict`` of modules, optimizers and the replay buffer moves them to the
devices of their owners, so a checkpoint written on a GPU resumes on a CPU and vice versa.
"""

from __future__ import annotations

import collections
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch

from patchwork.engine.distributed import unwrap_model
from patchwork.engine.reproducibility import rng_state, set_rng_state

PathLike = str | os.PathLike

_LEAF_TYPES = (type(None), bool, int, float, complex, str, bytes, bytearray, torch.dtype, torch.device, torch.Size)
_CONTAINER_TYPES = (dict, collections.OrderedDict, collections.Counter, list, tuple, set)


class HasStateDict(Protocol):
    """Anything checkpointable: modules, optimizers, schedulers, ``GradScaler``, ``ReplayBuffer``."""

    def state_dict(self) -> Mapping: ...

    def load_state_dict(self, state: Mapping) -> Any: ...


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or read; the message names the file."""


def _check_loadable(value: object, where: str) -> None:
    """Raise ``TypeError`` naming the first value ``torch.load(weights_only=True)`` would reject."""
    if type(value) in _LEAF_TYPES or type(value) in (torch.Tensor, torch.nn.Parameter):
        return
    if type(value) not in _CONTAINER_TYPES:
        raise TypeError(
            f"checkpoint value {where} has type {type(value).__module__}.{type(value).__qualname__}; checkpoints "
            "hold only tensors, numbers, strings, None, torch dtypes/devices and dict/list/tuple/set of them "
            "(they are read back with torch.load(weights_only=True)); convert it, e.g. float(x), "
            "torch.as_tensor(x), dict(x) or OmegaConf.to_container(cfg, resolve=True)"
        )
    if isinstance(value, dict):
        for key, item in value.items():
            _check_loadable(key, f"{where} (key {key!r})")
            _check_loadable(item, f"{where}[{key!r}]")
    else:
        for index, item in enumerate(value):
            _check_loadable(item, f"{where}[{index}]")


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable: the directory entry itself must reach the disk (POSIX)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def _write_temp(path: Path, payload: Mapping) -> Path:
    """Serialise ``payload`` into a flushed and fsynced temporary file beside ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory as the target: os.replace is atomic only within one filesystem.
    fd, temp_name = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def save_checkpoint(path: PathLike, payload: Mapping) -> Path:
    """Write ``payload`` to ``path`` atomically.

    The bytes go to a temporary file in the same directory, are flushed and fsynced, and the
    file is renamed over ``path`` with ``os.replace``; a crash at any moment (even SIGKILL or
    power loss) leaves either the previous file or the new one, never a torn mixture. A killed
    writer may leave a hidden ``.<name>.*.tmp`` file behind; :class:`CheckpointManager` removes
    those.

    Args:
        path: target file (parent directories are created).
        payload: see the module docstring for the convention and the allowed value types.
    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    payload = dict(payload)
    _check_loadable(payload, "payload")
    temp = _write_temp(path, payload)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def load_checkpoint(path: PathLike, map_location: str | torch.device | None = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the checkpoint file.
        map_location: where tensors are placed (``"cpu"`` by default, so loading never needs the
            device the checkpoint was written on).
    Returns:
        The payload dict.
    Raises:
        FileNotFoundError: no file at ``path`` (the message names it).
        CheckpointError: the file exists but cannot be read (truncated, not a checkpoint, or
            holding types ``weights_only`` loading refuses).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(error).__name__}: {error}") from error
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(payload).__name__}, expected a dict payload")
    return payload


def _is_improvement(metric: float, best: float | None, higher_is_better: bool) -> bool:
    if math.isnan(metric):
        return False
    if best is None:
        return True
    return metric > best if higher_is_better else metric < best


class CheckpointManager:
    """Keeps ``last.pt`` (every save) and ``best.pt`` (when the metric improves) in one directory.

    The best metric so far is written into every payload (``"best_metric"``) and restored by
    :meth:`resume`, so a resumed run compares new metrics against the true best, not against
    nothing. Under DDP call :meth:`save` on the main rank only; every rank may call
    :meth:`latest` / :meth:`resume`.

    Args:
        directory: where ``last.pt`` and ``best.pt`` live (created on the first save).
        higher_is_better: default direction of the metric (``True`` for mAP, J, reward).
    """

    LAST = "last.pt"
    BEST = "best.pt"

    def __init__(self, directory: PathLike, higher_is_better: bool = True) -> None:
        self.directory = Path(directory)
        self.higher_is_better = higher_is_better
        self.best_metric: float | None = None

    @property
    def last_path(self) -> Path:
        return self.directory / self.LAST

    @property
    def best_path(self) -> Path:
        return self.directory / self.BEST

    def latest(self) -> Path | None:
        """Path of ``last.pt`` if it exists, else ``None``."""
        return self.last_path if self.last_path.is_file() else None

    def best(self) -> Path | None:
        """Path of ``best.pt`` if it exists, else ``None``."""
        return self.best_path if self.best_path.is_file() else None

    def _remove_stale_temp_files(self) -> None:
        # Leftovers of a writer killed mid-save; this manager is the directory's only writer.
        for name in (self.LAST, self.BEST):
            for stale in self.directory.glob(f"{_temp_prefix(Path(name))}*.tmp"):
                stale.unlink(missing_ok=True)

    def save(
        self, payload: Mapping, step: int, metric: float | None = None, higher_is_better: bool | None = None
    ) -> Path:
        """Write ``last.pt``, and ``best.pt`` too when ``metric`` beats the best so far.

        Args:
            payload: the checkpoint dict (module docstring); ``"step"``, ``"metric"`` and
                ``"best_metric"`` are set here (a ``"step"`` already present must equal ``step``).
            step: the training step the payload belongs to.
            metric: validation metric of this checkpoint; ``None`` never updates ``best.pt``,
                NaN never counts as an improvement.
            higher_is_better: overrides the manager's default direction for this call.
        Returns:
            The path of ``last.pt``.
        """
        if "step" in payload and payload["step"] != step:
            raise ValueError(f"payload['step'] = {payload['step']} disagrees with step = {step}")
        direction = self.higher_is_better if higher_is_better is None else higher_is_better
        metric = None if metric is None else float(metric)
        improved = metric is not None and _is_improvement(metric, self.best_metric, direction)
        best_metric = metric if improved else self.best_metric
        full = {**payload, "step": step, "metric": metric, "best_metric": best_metric}
        _check_loadable(full, "payload")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temp_files()
        temp = _write_temp(self.last_path, full)
        try:
            if improved:
                # best.pt is a hard link to the same bytes (no second serialisation of a
                # possibly multi-GB replay buffer); the next save replaces last.pt's directory
                # entry, not the shared inode, so best.pt keeps its content. best.pt is renamed
                # into place before last.pt: a crash in between leaves an older last.pt whose
                # best_metric is older too, so the resumed run re-earns the same best.pt.
                best_temp = temp.with_name(f"{temp.name[: -len('.tmp')]}.best.tmp")
                try:
                    os.link(temp, best_temp)
                except OSError:  # filesystems without hard links
                    best_temp = _write_temp(self.best_path, full)
                os.replace(best_temp, self.best_path)
            os.replace(temp, self.last_path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_directory(self.directory)
        self.best_metric = best_metric
        return self.last_path

    def resume(self, map_location: str | torch.device | None = "cpu") -> dict | None:
        """Load ``last.pt`` and restore the best metric from it; ``None`` when there is none yet."""
        path = self.latest()
        if path is None:
            return None
        payload = load_checkpoint(path, map_location)
        self.best_metric = payload.get("best_metric")
        return payload

    def state_dict(self) -> dict:
        return {"best_metric": self.best_metric, "higher_is_better": self.higher_is_better}

    def load_state_dict(self, state: Mapping) -> None:
        self.best_metric = state["best_metric"]
        self.higher_is_better = state["higher_is_better"]


def state_dicts(objects: Mapping[str, HasStateDict]) -> dict[str, Mapping]:
    """``{name: obj.state_dict()}``, with DDP / ``torch.compile`` wrappers removed from modules.

    Saving the unwrapped module keeps checkpoints free of ``module.`` prefixes, so one written
    under ``torchrun`` loads in a single process and the other way round.
    """
    return {
        name: (unwrap_model(obj) if isinstance(obj, torch.nn.Module) else obj).state_dict()
        for name, obj in objects.items()
    }


def load_state_dicts(objects: Mapping[str, HasStateDict], states: Mapping[str, Mapping], kind: str) -> None:
    """Call ``load_state_dict`` on each object; the names must match the checkpoint's exactly.

    Args:
        objects: ``{name: module | optimizer | scheduler}`` of the running job.
        states: the checkpoint's ``{name: state_dict}`` for the same kind.
        kind: ``"models"``, ``"optimizers"`` or ``"schedulers"``, for the error message.
    """
    if set(objects) != set(states):
        raise CheckpointError(
            f"checkpoint {kind} are {sorted(states)}, this run has {sorted(objects)}; "
            "resume with the configuration the checkpoint was written with"
        )
    for name, obj in objects.items():
        (unwrap_model(obj) if isinstance(obj, torch.nn.Module) else obj).load_state_dict(states[name])


def make_payload(
    *,
    step: int,
    stage: str,
    config: Mapping,
    models: Mapping[str, torch.nn.Module],
    optimizers: Mapping[str, HasStateDict] | None = None,
    schedulers: Mapping[str, HasStateDict] | None = None,
    replay_buffer: HasStateDict | None = None,
    generators: Mapping[str, torch.Generator] | None = None,
    rng: Mapping | list | None = None,
    extra: Mapping | None = None,
    learners: Mapping[str, Mapping] | None = None,
) -> dict:
    """Build a payload following the module's convention.

    Args:
        step, stage, config: as in the convention; ``config`` must be plain containers.
        models, optimizers, schedulers: live objects; their state dicts are taken here.
        replay_buffer: the ``ReplayBuffer`` (or ``None``).
        generators: named ``torch.Generator`` s included in the RNG state.
        rng: an RNG state to store instead of this process's :func:`rng_state` (under DDP the
            list of every rank's states gathered on the main rank).
        extra: any further plain values.
        learners: state dicts of the stage's learners (:mod:`patchwork.rl.roles`), already taken
            (a finished stage stores them without their replay buffer).
    """
    return {
        "step": int(step),
        "stage": stage,
        "config": dict(config),
        "models": state_dicts(models),
        "optimizers": state_dicts(optimizers or {}),
        "schedulers": state_dicts(schedulers or {}),
        "replay_buffer": None if replay_buffer is None else replay_buffer.state_dict(),
        "rng": rng_state(generators) if rng is None else rng,
        "extra": dict(extra or {}),
        "learners": dict(learners or {}),
    }


def restore_payload(
    payload: Mapping,
    *,
    models: Mapping[str, torch.nn.Module],
    optimizers: Mapping[str, HasStateDict] | None = None,
    schedulers: Mapping[str, HasStateDict] | None = None,
    replay_buffer: HasStateDict | None = None,
    generators: Mapping[str, torch.Generator] | None = None,
    rank: int = 0,
    restore_rng: bool = True,
    learners: Mapping[str, HasStateDict] | None = None,
) -> int:
    """Load a payload into the live objects and RNGs; returns the step to resume from.

    Args:
        payload: a checkpoint dict (from :func:`load_checkpoint` / :meth:`CheckpointManager.resume`).
        models, optimizers, schedulers, replay_buffer, generators: as in :func:`make_payload`;
            ``None`` skips that part (e.g. only the weights when a stage starts from the
            previous stage's checkpoint). A mapping given must name exactly the checkpoint's.
        rank: which entry to restore when ``payload["rng"]`` is a per-rank list.
        restore_rng: ``False`` to keep the current RNG streams (e.g. when starting a new stage
            from the previous stage's weights).
    """
    load_state_dicts(models, payload["models"], "models")
    if optimizers is not None:
        load_state_dicts(optimizers, payload.get("optimizers", {}), "optimizers")
    if schedulers is not None:
        load_state_dicts(schedulers, payload.get("schedulers", {}), "schedulers")
    if replay_buffer is not None:
        if payload.get("replay_buffer") is None:
            raise CheckpointError("checkpoint holds no replay buffer but this run has one")
        replay_buffer.load_state_dict(payload["replay_buffer"])
    if learners is not None:
        load_state_dicts(learners, payload.get("learners", {}), "learners")
    if restore_rng:
        rng = payload["rng"]
        if isinstance(rng, list):
            if rank >= len(rng):
                raise CheckpointError(f"checkpoint holds RNG states of {len(rng)} ranks, cannot restore rank {rank}")
            rng = rng[rank]
        set_rng_state(rng, generators)
    return int(payload["step"])
