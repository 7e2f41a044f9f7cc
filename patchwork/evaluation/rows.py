"""One table row of a method: cost, latency and accuracy (Chai 2019, Tab. 4/5; Liu et al. 2019, Tab. 2;
Verelst and Tuytelaars 2021, Tab. 1).

The row's label and its method-specific columns (Patchwork's ``M``, ``N``, ``cells``; a
baseline's ``interval``) come from the model's :meth:`~patchwork.models.streaming.StreamingModel.describe`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from patchwork.evaluation.bootstrap import RESAMPLES, interval
from patchwork.evaluation.cost import theoretical_cost
from patchwork.evaluation.latency import latency_clips, measure_latency
from patchwork.evaluation.results import StreamResult
from patchwork.evaluation.streaming import clip_dataset, evaluate_streams
from patchwork.models.streaming import StreamingModel
from patchwork.policies import policy_label


def method_label(model: StreamingModel, policy: Any = None) -> str:
    """The method's name in tables: the model's label, plus the policy's when it is not the method's
    learnt one (a policy that reads no scores, e.g. ``"Patchwork M=4, N=2, depth=0.5, scanning"``)."""
    description = model.describe()
    if policy is None or model.action_space is None or policy.needs_scores:
        return description.label
    return description.with_options(after=(policy_label(policy).lower(),)).label


def metrics_row(task: str, metrics: dict[str, Any]) -> dict[str, float]:
    """A task metric as table numbers in percent (Tab. 4/5 units).

    Detection: ``mAP``, ``AP50_coco_extra``. Segmentation: ``J``, ``F`` (Mean), ``J_recall``,
    ``J_decay``, ``F_recall``, ``F_decay``, ``J&F``.
    """
    if task == "detection":
        return {"mAP": 100 * metrics["mAP"], "AP50_coco_extra": 100 * metrics["AP50 (COCO, extra)"]}
    row = {}
    for measure in ("J", "F"):
        row[measure] = 100 * metrics[measure]["mean"]
        row[f"{measure}_recall"] = 100 * metrics[measure]["recall"]
        row[f"{measure}_decay"] = 100 * metrics[measure]["decay"]
    row["J&F"] = 100 * metrics["J&F"]
    return row


def to_builtin(value: Any) -> Any:
    """Metrics as JSON-ready Python values: arrays and tensors become lists, numpy scalars numbers."""
    if isinstance(value, dict):
        return {str(k): to_builtin(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_builtin(v) for v in value]
    if isinstance(value, Tensor):
        return value.tolist()
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    return value


def bootstrap_row(result: StreamResult, resamples: int, seed: int, exclude_first_last: bool = True) -> dict[str, Any]:
    """``<metric>_low``, ``<metric>_high`` (the 95% interval, percent) and ``bootstrap`` (the resamples, percent)."""
    samples = {metric: 100 * values for metric, values in
               result.bootstrap(resamples, seed, exclude_first_last).items()}
    row: dict[str, Any] = {}
    for metric, values in samples.items():
        row[f"{metric}_low"], row[f"{metric}_high"] = interval(values)
    row["bootstrap"] = {metric: [round(float(v), 3) for v in values] for metric, values in samples.items()}
    return row


def latency_row(summary: dict[str, Any], prefix: str = "ms") -> dict[str, float]:
    """``{prefix}_p95``, ``_p99``, ``_mean``, ``_std``, ``_count`` from a latency summary."""
    return {f"{prefix}_{key}": summary[key] for key in ("p95", "p99", "mean", "std", "count")}


def evaluate_method(
    model: StreamingModel,
    data: Any,
    policy: Any,
    method: str | None = None,
    streams: int = 8,
    device: torch.device | str = "cpu",
    generator_seed: int = 0,
    max_videos: int | None = None,
    num_workers: int = 0,
    exclude_first_last: bool = True,
    latency_videos: int = 2,
    latency_frames: int = 32,
    fold_bn: bool = True,
    threads: int = 1,
    extra: dict[str, Any] | None = None,
    resamples: int = RESAMPLES,
) -> tuple[dict[str, Any], StreamResult]:
    """One row of Tab. 4/5 (and Tab. 1/2): cost, latency and accuracy of a method.

    Order matters for :class:`~patchwork.models.KeyframeDelay`: latency is measured first,
    on a copy of the untouched model, then FLOPs, then accuracy.

    Args:
        model: the method (a streaming model, possibly wrapped in baselines).
        data: a :class:`~patchwork.data.VideoTaskData` or a whole-video clip dataset.
        policy: the policy for the model's action space (``None`` without one).
        method: the row's label (default :func:`method_label`).
        extra: further entries copied into the row (e.g. baseline options).
        resamples: bootstrap resamples over videos for the metric's 95% interval (0: none).
    Returns:
        ``(row, result)``: ``row`` has ``method``, ``family``, ``task``, ``policy``, the model's
        description fields, ``mflops_max``, ``mflops_avg``, CPU latency ``ms_p95``, ``ms_p99``,
        ``ms_mean``, ``ms_std``, ``ms_count`` (plus ``gpu_ms_*`` when the model is on CUDA),
        the metric in percent (:func:`metrics_row`) with its interval ``<metric>_low`` /
        ``<metric>_high`` and the paired resamples ``bootstrap`` (``{metric: [R values]}``, seeded by
        ``generator_seed``, for :func:`~patchwork.evaluation.bootstrap.ordering`), ``mflops_avg_over``
        (``"schedule"``: the average over the schedule's cycles, on the first latency clip;
        ``"evaluation"``: for a policy that reads scores, over every evaluated frame, as they ran, the
        max still from the clip), the model's action
        statistics (LFS: ``f0_rate``), ``videos`` and ``frames``; ``result`` is
        the :class:`StreamResult` (predictions and actions, for strips).
    """
    dataset = clip_dataset(data)
    image_size = tuple(int(s) for s in dataset.image_size)
    device = torch.device(device)
    model.to(device)
    clips = latency_clips(dataset, latency_videos, latency_frames)
    latency = measure_latency(model, clips, policy, latency_frames, "cpu", fold_bn, threads,
                              generator_seed=generator_seed)
    gpu: dict[str, Any] = {}
    if device.type == "cuda":
        gpu = latency_row(measure_latency(model, clips, policy, latency_frames, device, fold_bn,
                                          generator_seed=generator_seed), "gpu_ms")
    cost = theoretical_cost(model, image_size, policy, generator_seed=generator_seed,
                            frames=clips[0].float() / 255.0 if clips[0].dtype == torch.uint8 else clips[0])
    # A policy that reads scores acts on the content (a learnt schedule, BlockCopy's blocks): its
    # average cost is counted on the evaluated frames themselves, as the accuracy is.
    content_dependent = model.action_space is not None and policy is not None and policy.needs_scores
    result = evaluate_streams(model, dataset, policy, streams, device, generator_seed, max_videos, num_workers,
                              count_flops=content_dependent)
    description = model.describe()
    taken = [video.actions for video in result.videos if video.actions is not None and video.actions.numel()]
    # The actions as run (e.g. LFS's f0 rate), without their curve namespace.
    actions = {k.split("/", 1)[-1]: v for k, v in model.action_statistics(torch.cat(taken)).items()} if taken else {}
    row = {
        "method": method if method is not None else method_label(model, policy),
        "family": description.family,
        "task": result.task,
        "policy": policy_label(None if model.action_space is None else policy),
        **description.fields,
        "mflops_max": cost.mflops_max,
        "mflops_avg": result.mflops_avg if content_dependent else cost.mflops_avg,
        "mflops_avg_over": "evaluation" if content_dependent else "schedule",
        **latency_row(latency),
        **gpu,
        **metrics_row(result.task, result.metrics(exclude_first_last)),
        **(bootstrap_row(result, resamples, generator_seed, exclude_first_last) if resamples else {}),
        **actions,
        "videos": len(result.videos),
        "frames": result.num_frames,
        **(extra or {}),
    }
    return row, result
