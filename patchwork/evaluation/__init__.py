"""Evaluation: VID mAP, DAVIS J and F, COCO AP50 (extra), latency and FLOPs, tables.

Streaming evaluation of models lives in :mod:`patchwork.evaluation.streaming` (not imported
here: it depends on :mod:`patchwork.models`, which itself uses the cost accounting).
"""

from patchwork.evaluation.coco_ap50 import coco_ap50
from patchwork.evaluation.cost import FrameCost, count_flops, stream_cost
from patchwork.evaluation.davis import db_eval_boundary, db_eval_iou, evaluate_davis, evaluate_davis_sequence
from patchwork.evaluation.latency_stats import summarize_flops, summarize_latency
from patchwork.evaluation.vid import evaluate_vid

__all__ = [
    "FrameCost",
    "coco_ap50",
    "count_flops",
    "db_eval_boundary",
    "db_eval_iou",
    "evaluate_davis",
    "evaluate_davis_sequence",
    "evaluate_vid",
    "stream_cost",
    "summarize_flops",
    "summarize_latency",
]
