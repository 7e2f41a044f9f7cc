"""Evaluation: VID mAP, DAVIS J and F, COCO AP50 (extra), latency statistics, streaming evaluation, tables.

Streaming evaluation of any method lives in :mod:`patchwork.evaluation.streaming` (runs models
through :mod:`patchwork.engine.runner`); FLOPs counting in the leaf :mod:`patchwork.nn.flops`.
"""

from patchwork.evaluation.coco_ap50 import coco_ap50
from patchwork.evaluation.davis import db_eval_boundary, db_eval_iou, evaluate_davis, evaluate_davis_sequence
from patchwork.evaluation.latency_stats import summarize_flops, summarize_latency
from patchwork.evaluation.vid import evaluate_vid

__all__ = [
    "coco_ap50",
    "db_eval_boundary",
    "db_eval_iou",
    "evaluate_davis",
    "evaluate_davis_sequence",
    "evaluate_vid",
    "summarize_flops",
    "summarize_latency",
]
