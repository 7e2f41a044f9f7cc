"""Looking Fast and Slow's rows of the main job (Liu et al. 2019, Tab. 2, Fig. 6 and 7).

One detection-stage sub-run (``lfs``: both extractors, the LSTM and SSDLite, trained with a random
extractor per step) serves every fixed schedule; one policy-stage sub-run per speed bonus gamma
(``lfs_gamma<g>``, the detector frozen, ``init_from`` the detection stage) gives each adaptive row.
Rows: "LFS f0 only", "LFS f1 only", "LFS interleaved tau=T" (Fig. 6), "LFS adaptive gamma=g"
(Fig. 7) and "LFS interleaved async tau=T" (Sec. 3.5).

The paper starts f0 and f1 from ImageNet-pretrained MobileNetV2 (Sec. 4); with no downloads, f0
starts from the job's single-frame stage-1 model's backbone instead (``init_f0``), trained on the
same data and shared with the other methods; f1 (another width) trains from scratch.

The asynchronous row's accuracy and FLOPs are the simulated mode's (f0's memory update lands
``async_delay`` frames late; its per-frame max is the f1 path, its average all the work, as
Tab. 2's "84 (190)"); its latency columns are the real mode's
(:class:`~patchwork.models.lfs.ThreadedAsynchronousInference`: f0 in a worker thread with
``eval.threads`` threads beside the main thread's f1, frames back to back), ``latency: threaded``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from patchwork.engine.checkpoint import save_checkpoint
from patchwork.engine.loading import load_model
from patchwork.evaluation.claims import Claim
from patchwork.evaluation.latency import latency_clips, measure_latency
from patchwork.evaluation.rows import latency_row
from patchwork.evaluation.streaming import clip_dataset
from patchwork.jobs.context import MethodJob
from patchwork.jobs.single_frame import train_single_frame
from patchwork.models.builders import mobilenet_v2_backbone_state
from patchwork.models.lfs import F1, SimulatedAsynchronousInference, ThreadedAsynchronousInference
from patchwork.policies import FixedInterleavingPolicy, FixedPolicy, build_policy

log = logging.getLogger(__name__)

DETECTION = "lfs"
#: Where ``init_f0: single_frame`` writes f0's starting weights, under the job's run dir.
INIT_F0_FILE = Path("init") / "lfs_f0_single_frame.pt"


def gamma_name(gamma: float) -> str:
    """``0.5`` -> ``"lfs_gamma0p5"``: the policy sub-run's name."""
    return f"{DETECTION}_gamma{gamma:g}".replace(".", "p").replace("-", "m")


def matched_tau(f0_rate: float) -> int:
    """The fixed schedule with about the same share of f0 frames, ``1 / (tau + 1) ~ f0_rate``."""
    return max(0, round(1.0 / max(f0_rate, 1e-6)) - 1)


def run(job: MethodJob, options: DictConfig) -> dict[str, list[dict[str, Any]]]:
    """Train and evaluate Looking Fast and Slow (detection only).

    Options:
        profile: the training experiment of the sub-runs (``lfs_quick``; its data are the quick profile's).
        taus: fixed interleaving ratios of the sweep (Fig. 6); ``comparison_tau`` goes in the comparison.
        gammas: speed bonuses of the adaptive policy (Fig. 7), a policy sub-run each;
            ``comparison_gamma`` (one of them) goes in the comparison.
        async_tau, async_delay: the asynchronous row's schedule and the frames f0's update lands late.
        match_adaptive: add, per gamma, the fixed schedule at the adaptive policy's measured f0 rate.
        init_f0: ``single_frame``: f0 starts from the job's stage-1 single-frame model's backbone
            (:func:`single_frame_f0`, our analogue of the paper's ImageNet-pretrained MobileNetV2,
            Sec. 4); ``null``: f0 trains from scratch (or from the profile's ``model.weights_f0``).
    Returns:
        ``"comparison"``: f0 only, f1 only, interleaved ``comparison_tau``, adaptive ``comparison_gamma``,
        async; ``"lfs"``: every row (the sweep).
    """
    if job.task != "detection":
        log.info("LFS is a detector: no rows for task %r", job.task)
        return {}
    overrides = ["stage=[lfs_detection]"]
    init_f0 = options.get("init_f0")
    if init_f0 == "single_frame":
        overrides.append(f"model.weights_f0='{single_frame_f0(job, options.profile)}'")
    elif init_f0 is not None:
        raise ValueError(f"lfs.init_f0 must be 'single_frame' or null, got {init_f0!r}")
    job.train(DETECTION, overrides, profile=options.profile)
    detection = job.checkpoint(DETECTION, "lfs_detection")
    loaded = load_model(detection)
    data = job.data(loaded.config["data"])

    def fixed_row(tau: int, **extra: Any) -> dict[str, Any]:
        method = "LFS f0 only" if tau == 0 else f"LFS interleaved tau={tau}"
        return job.evaluate(load_model(detection).model, data, FixedInterleavingPolicy(tau), method,
                            extra={"tau": tau, **extra})

    f0_only = fixed_row(0)
    f1_only = job.evaluate(loaded.model, data, FixedPolicy(F1), "LFS f1 only")
    interleaved = {tau: fixed_row(tau) for tau in options.taus if tau != 0}
    fixed = {0: f0_only, **interleaved}
    adaptive, matched = {}, []
    for gamma in options.gammas:
        name = gamma_name(gamma)
        job.train(name, ["stage=[lfs_policy]", f"reward.gamma={gamma}", f"init_from={detection}"],
                  profile=options.profile)
        model = load_model(job.checkpoint(name, "lfs_policy")).model
        adaptive[gamma] = job.evaluate(model, data, build_policy("dqn", model.action_space),
                                       f"LFS adaptive gamma={gamma:g}", extra={"gamma": gamma})
        if options.match_adaptive:
            tau = matched_tau(adaptive[gamma]["f0_rate"])
            if tau not in fixed:
                fixed[tau] = fixed_row(tau, matched_gamma=gamma)
                matched.append(fixed[tau])
    asynchronous = _async_row(job, detection, data, int(options.async_tau), int(options.async_delay))
    comparison = [f0_only, f1_only]
    if options.comparison_tau in interleaved:
        comparison.append(interleaved[options.comparison_tau])
    if options.comparison_gamma in adaptive:
        comparison.append(adaptive[options.comparison_gamma])
    comparison.append(asynchronous)
    sweep = [f0_only, f1_only, *interleaved.values(), *adaptive.values(), *matched, asynchronous]
    return {"comparison": comparison, "lfs": sweep}


def single_frame_f0(job: MethodJob, profile: str) -> Path:
    """f0's starting weights: the backbone of the job's stage-1 single-frame detector
    (:func:`~patchwork.jobs.single_frame.train_single_frame`, trained once per job and shared with
    the other methods) as a torchvision ``mobilenet_v2`` state dict in ``run_dir/``:data:`INIT_F0_FILE`.

    The file is written atomically and rewritten on every call (resume gives the same tensors).

    Raises:
        ValueError: the job profile's ``model.width_mult`` is not ``profile``'s ``model.width_f0``.
    """
    width = float(job.compose().model.width_mult)
    width_f0 = float(job.compose(profile=profile).model.width_f0)
    if width != width_f0:
        raise ValueError(
            f"lfs.init_f0=single_frame needs one width: the single-frame model of profile {job.profile!r} has "
            f"width_mult {width:g}, LFS profile {profile!r} has width_f0 {width_f0:g} (set lfs.init_f0=null "
            "to train f0 from scratch)"
        )
    checkpoint = train_single_frame(job)
    state = mobilenet_v2_backbone_state(load_model(checkpoint).model)
    path = save_checkpoint(job.run_dir / INIT_F0_FILE, state)
    log.info("LFS f0 (width %g) starts from the single-frame backbone of %s: %d tensors in %s",
             width_f0, checkpoint, len(state), path)
    return path


def _async_row(job: MethodJob, checkpoint: Any, data: Any, tau: int, delay: int) -> dict[str, Any]:
    """The asynchronous row: the simulated mode's accuracy and FLOPs, the threaded mode's latency."""
    policy = FixedInterleavingPolicy(tau)
    clips = latency_clips(clip_dataset(data), job.eval.latency_videos, job.eval.latency_frames)
    with ThreadedAsynchronousInference(load_model(checkpoint).model, tau, worker_threads=job.eval.threads) as real:
        latency = measure_latency(real, clips, policy, job.eval.latency_frames, threads=job.eval.threads,
                                  generator_seed=job.seed)
    simulated = SimulatedAsynchronousInference(load_model(checkpoint).model, tau, delay)
    return job.evaluate(simulated, data, policy, f"LFS interleaved async tau={tau}",
                        extra={"tau": tau, "delay": delay, "latency": "threaded"}, measured=latency_row(latency))



#: "At most a few points below f0 only" (issue), "at least matches" (Fig. 7), as margins in mAP points.
F0_MARGIN = -3.0
MATCH_MARGIN = -1.0


def claims(tables: dict[str, list[dict[str, Any]]]) -> list[Claim]:
    """Liu et al. 2019's orderings: interleaved above f1 only and within :data:`F0_MARGIN` of f0 only
    (Fig. 6, at every swept tau); the adaptive policy within :data:`MATCH_MARGIN` of, or above, the fixed
    schedule at its own f0 rate (Fig. 7)."""
    found: list[Claim] = []
    sweep = tables.get("lfs", [])
    for row in sweep:
        if row["method"].startswith("LFS interleaved tau=") and "matched_gamma" not in row:
            found.append(Claim("Liu 2019, Fig. 6", row["method"], "LFS f1 only"))
            found.append(Claim("Liu 2019, Fig. 6", row["method"], "LFS f0 only", margin=F0_MARGIN))
    for row in sweep:
        if "gamma" in row and row["method"].startswith("LFS adaptive"):
            tau = matched_tau(row["f0_rate"])
            label = "LFS f0 only" if tau == 0 else f"LFS interleaved tau={tau}"
            found.append(Claim("Liu 2019, Fig. 7", row["method"], label, margin=MATCH_MARGIN))
    return found
