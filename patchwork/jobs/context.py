"""What a method's part of the main job sees: training sub-runs, the shared data, one row format."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra import compose
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from patchwork.engine.train import train
from patchwork.evaluation.rows import evaluate_method, method_label, to_builtin
from patchwork.evaluation.tables import write_json
from patchwork.models.streaming import StreamingModel

log = logging.getLogger(__name__)
METRICS = ("mAP", "J", "F")


@dataclass
class MethodJob:
    """One main job's shared services for its methods.

    Attributes:
        run_dir: the main job's directory; sub-runs train in ``run_dir/train/<name>``.
        task: ``"detection"`` or ``"segmentation"``.
        profile: the training experiment (``configs/experiment/``) of sub-runs that name none.
        base_overrides: overrides every training sub-run gets first (seed, progress, ...).
        resume: continue sub-runs from their checkpoints (a finished sub-run is not retrained).
        seed: the evaluation seed (first actions, stochastic policies).
        eval: the evaluation options (``streams``, ``threads``, ``latency_videos``,
            ``latency_frames``, ``max_videos``).
    """

    run_dir: Path
    task: str
    profile: str
    base_overrides: list[str]
    resume: bool
    seed: int
    eval: DictConfig
    _data: dict[str, Any] = field(default_factory=dict, repr=False)
    _trained: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    _rows: int = field(default=0, repr=False)

    def train_dir(self, name: str) -> Path:
        """The directory of the training sub-run ``name``."""
        return self.run_dir / "train" / name

    def checkpoint(self, name: str, stage: str) -> Path:
        """The last checkpoint of ``stage`` in the sub-run ``name``."""
        return self.train_dir(name) / "checkpoints" / stage / "last.pt"

    def train(self, name: str, overrides: list[str], profile: str | None = None) -> dict[str, Any]:
        """Run ``scripts/train.py experiment=<profile>`` with ``base_overrides + overrides`` in
        :meth:`train_dir` (``profile`` default: the job's).

        Returns the training summary. With ``resume`` a finished sub-run returns at once (its
        stages see their final checkpoints).
        """
        directory = self.train_dir(name)
        cfg = self.compose([*overrides, f"run_dir={directory}", f"resume={str(self.resume).lower()}"], profile)
        log.info("training %s in %s", name, directory)
        return train(cfg)

    def compose(self, overrides: list[str] = (), profile: str | None = None) -> DictConfig:
        """The training config a sub-run with these overrides gets (e.g. to read the profile's widths)."""
        return compose(config_name="train",
                       overrides=[f"experiment={profile or self.profile}", *self.base_overrides, *overrides])

    def train_once(self, name: str, overrides: list[str], profile: str | None = None) -> dict[str, Any]:
        """:meth:`train`, at most once per job: methods that share a sub-run (BlockCopy and the
        single-frame baselines share the stage-1 model) call this with the same ``name``."""
        if name not in self._trained:
            self._trained[name] = self.train(name, overrides, profile)
        return self._trained[name]

    def data(self, config: dict[str, Any]) -> Any:
        """The evaluation data of a run config's ``data`` section, built (and indexed) once per job."""
        key = json.dumps(config, sort_keys=True, default=str)
        if key not in self._data:
            self._data[key] = instantiate(OmegaConf.create(config))
        return self._data[key]

    def evaluate(self, model: StreamingModel, data: Any, policy: Any, method: str | None = None,
                 extra: dict[str, Any] | None = None, measured: dict[str, Any] | None = None) -> dict[str, Any]:
        """One table row (:func:`~patchwork.evaluation.rows.evaluate_method`) with the job's options.

        ``extra`` entries are part of the row's identity (options, e.g. ``tau``); ``measured`` ones
        replace the row's own after evaluation and are not (e.g. a latency measured another way, which
        differs from run to run).

        The global RNG is reseeded first so that a row does not depend on which rows ran before it.
        Each row is saved in ``run_dir/rows``; with ``resume`` a saved row is returned as it is (a
        job interrupted while evaluating continues at the first row it had not finished).
        """
        torch.manual_seed(self.seed)
        label = method if method is not None else method_label(model, policy)
        self._rows += 1
        key = json.dumps([self.task, label, extra], sort_keys=True, default=str)
        saved = self.run_dir / "rows" / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.json"
        if self.resume and saved.exists():
            log.info("row %d: %s (saved)", self._rows, label)
            return json.loads(saved.read_text())
        log.info("evaluating row %d: %s", self._rows, label)
        start = time.perf_counter()
        row, _ = evaluate_method(model, data, policy, label, streams=self.eval.streams, threads=self.eval.threads,
                                 generator_seed=self.seed, latency_videos=self.eval.latency_videos,
                                 latency_frames=self.eval.latency_frames, max_videos=self.eval.max_videos,
                                 extra=extra)
        row.update(measured or {})
        log.info("%s: %s (%.0f s)", label, {k: round(row[k], 1) for k in ("mflops_max", "ms_p95", *METRICS) if k in row},
                 time.perf_counter() - start)
        row = to_builtin(row)
        write_json(saved, row)
        return row
