"""BlockCopy's rows of the main job (Verelst and Tuytelaars 2021, Tab. 1 / Fig. 6): the shared stage-1
model as the task network, a policy initialised on training clips per target cost ``tau``, evaluated
online (the policy keeps learning on the validation videos, the paper's protocol) and frozen, and the
lower-resolution baseline of the stage-1 model at about the executed fraction of the frame."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from patchwork.engine.loading import load_model
from patchwork.evaluation.claims import Claim
from patchwork.engine.online import online_policy_from_checkpoint
from patchwork.jobs.context import MethodJob
from patchwork.jobs.single_frame import train_single_frame
from patchwork.models.baselines import wrap_baselines
from patchwork.models.streaming import StreamingModel
from patchwork.policies import BernoulliPolicy

STAGE = "blockcopy_policy"


def run_name(tau: float) -> str:
    """``0.5`` -> ``"blockcopy_tau05"``: the sub-run's name."""
    return f"blockcopy_tau{tau:g}".replace(".", "")


def nearest_area(model: StreamingModel, image_size: tuple[int, int], fraction: float) -> float:
    """The image-area factor closest to ``fraction`` among the downscaled sizes ``model`` can run on."""
    height, width = image_size
    best: float | None = None
    for side in range(8, height + 1, 8):
        size = (side, round(width * side / height))
        try:
            model.check_image_size(size)
        except ValueError:
            continue
        area = size[0] * size[1] / (height * width)
        if best is None or abs(area - fraction) < abs(best - fraction):
            best = area
    if best is None:
        raise ValueError(f"{model.describe().label} runs on no downscaled size of {height}x{width}")
    return best


def run(job: MethodJob, options: DictConfig) -> dict[str, list[dict[str, Any]]]:
    """Train and evaluate BlockCopy.

    Options:
        taus: target costs, one policy each ("BlockCopy tau=T").
        profile: the training experiment of the policy sub-runs (``null``: ``blockcopy_<job profile>``).
        frozen: also a row per ``tau`` with the policy frozen ("BlockCopy tau=T, frozen").
        resolution_baseline: the stage-1 model at the area closest to the online rows' executed fraction.
    """
    stage1 = train_single_frame(job)
    single_frame = load_model(stage1)
    data = job.data(single_frame.config["data"])
    profile = options.profile or f"blockcopy_{job.profile}"
    comparison, frozen = [], []
    baselines: dict[float, dict[str, Any]] = {}  # area -> row (several taus may match one area)
    for tau in options.taus:
        name = run_name(float(tau))
        job.train(name, [f"stage=[{STAGE}]", "model=blockcopy_checkpoint", f"model.task_model.path='{stage1}'",
                         f"init_from='{stage1}'", f"model.target_cost={float(tau)}"], profile)
        checkpoint = job.checkpoint(name, STAGE)
        model = load_model(checkpoint).model
        online = online_policy_from_checkpoint(model, checkpoint, seed=job.seed)
        label = model.describe().label
        row = job.evaluate(model, data, online, method=label, extra={"mode": "online"})
        fraction = row["executed_fraction"]  # every frame streamed, first frames included
        comparison.append(row)
        if options.frozen:
            model = load_model(checkpoint).model
            frozen.append(job.evaluate(model, data, BernoulliPolicy(), method=f"{label}, frozen",
                                       extra={"mode": "frozen"}))
        if options.resolution_baseline:
            sf = load_model(stage1).model
            area = nearest_area(sf, single_frame.image_size, fraction)
            if area in baselines:
                baselines[area]["matches"] += f", {label}"
                continue
            baselines[area] = job.evaluate(wrap_baselines(sf, area=area), data, None,
                                           extra={"baseline": {"area": area}, "matches": label})
            comparison.append(baselines[area])
    return {"comparison": comparison + frozen}


#: "Within 2 mAP of single-frame at no more than 60% of its FLOPs" (Verelst and Tuytelaars 2021, Tab. 1; the issue).
SF_MARGIN = -2.0
SF_COST_RATIO = 0.6


def claims(tables: dict[str, list[dict[str, Any]]]) -> list[Claim]:
    """Each online BlockCopy row within :data:`SF_MARGIN` of its task network's single-frame row at no
    more than :data:`SF_COST_RATIO` of its average MFLOPs, and above the lower-resolution baseline of
    about its executed fraction."""
    comparison = tables.get("comparison", [])
    found: list[Claim] = []
    for row in (r for r in comparison if r["family"] == "BlockCopy" and r.get("mode") == "online"):
        single = next((r for r in comparison if r["family"] == "SF" and "baseline" not in r
                       and r.get("depth") == row.get("depth")), None)
        if single is not None:
            found.append(Claim("Verelst 2021, Tab. 1", row["method"], single["method"], SF_MARGIN, SF_COST_RATIO))
        for baseline in (r for r in comparison if row["method"] in r.get("matches", "").split(", ")):
            found.append(Claim("Verelst 2021, Tab. 1", row["method"], baseline["method"]))
    return found
