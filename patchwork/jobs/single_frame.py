"""The single-frame rows of the main job (Chai 2019, Tab. 4/5 "SF ..."): the stage-1 model and its
baselines of similar maximum cost (lower resolution, keyframe interval with and without delay,
flip, lower depth)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from patchwork.engine.loading import load_model
from patchwork.jobs.context import MethodJob
from patchwork.models.baselines import wrap_baselines

log = logging.getLogger(__name__)

SINGLE_FRAME = "single_frame"


def train_single_frame(job: MethodJob) -> Path:
    """Stage 1 of the job's profile, trained once per job; returns its checkpoint.

    Shared by the single-frame rows, every Patchwork grid (stages 2 and 3 start from it, as in the
    paper) and BlockCopy (its task network)."""
    job.train_once(SINGLE_FRAME, ["stage=[stage1]"])
    return job.checkpoint(SINGLE_FRAME, "stage1")


def _depth_run(depth: float) -> str:
    return f"{SINGLE_FRAME}_depth{depth:g}".replace(".", "")


def run(job: MethodJob, options: DictConfig) -> dict[str, list[dict[str, Any]]]:
    """Train and evaluate the single-frame rows.

    Options:
        baselines: list of ``{interval, delay, area, flip}`` (each optional), each a row of the
            stage-1 model wrapped by :func:`~patchwork.models.baselines.wrap_baselines`.
        depths: width multipliers relative to the profile's, each a separately trained stage-1
            model ("SF depth=d").
    """
    checkpoint = train_single_frame(job)
    loaded = load_model(checkpoint)
    data = job.data(loaded.config["data"])
    rows = [job.evaluate(loaded.model, data, None)]
    for baseline in options.baselines:
        variant = dict(baseline)
        model = wrap_baselines(load_model(checkpoint).model, **variant)
        rows.append(job.evaluate(model, data, None, extra={"baseline": variant}))
    if options.depths:
        width = float(job.compose().model.width_mult)
        for depth in options.depths:
            name = _depth_run(depth)
            job.train_once(name, ["stage=[stage1]", f"model.width_mult={width * depth:g}"])
            rows.append(job.evaluate(load_model(job.checkpoint(name, "stage1")).model, data, None))
    return {"comparison": rows}
