"""The attention reward of Patchwork (Sec. 3.3, Eq. 2 and 3).

``R_t = max(0, f(gt_t, p_t) - f(gt_t, p_{t-1}))``: the task quality ``f`` of the
prediction made with the new window, minus the quality of simply re-using the previous
frame's prediction on the current frame's ground truth. The previous prediction acts as a
per-frame baseline, so the reward tracks what the *action* added rather than how hard the
scene is (Sec. 3.3); it is clipped at 0 because a fresh view should never hurt, so a
negative difference is noise (Sec. 3.3).

Quality measures ``f``:

- detection (Eq. 3): predictions with score > 0.5 are greedily matched to ground-truth
  boxes, the matched IoUs are averaged over all ``K`` ground-truth boxes (a missed box
  counts 0), class labels are ignored (:func:`detection_quality`);
- segmentation: the frame IoU, DAVIS's J measure (:func:`segmentation_quality`).

Training calls the batched forms, :func:`detection_rewards` and
:func:`segmentation_rewards`, which return one reward per stream, shape ``(B,)``.
Everything stays a tensor on the input device (no ``.item()``), so computing rewards
never forces a GPU synchronisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import box_iou

from patchwork.rl.roles import RewardContext, RewardResult

#: Sec. 3.3: only predictions "with a score larger than 0.5" take part in the matching.
SCORE_THRESHOLD = 0.5

#: ``f`` on a frame without ground-truth boxes. ``f`` is a coverage measure that never
#: penalises extra predictions when ``K > 0`` (unmatched predictions are ignored), so for
#: consistency it does not on empty frames either: it is the same constant whatever is
#: predicted, and the reward, a difference of two ``f`` on the same ``gt_t``, is exactly 0.
#: The constant is 1 ("nothing to find, nothing missed"), so a logged mean quality is not
#: dragged down by empty frames. The alternative "1 if no confident prediction else 0"
#: would pay a whole 1.0, as much as perfectly finding every object, for a window that
#: merely removed a false positive on an empty frame, and nothing for removing the same
#: false positive next to a real object.
EMPTY_GT_QUALITY = 1.0


def greedy_matched_iou_sum(iou: Tensor) -> Tensor:
    """Sum of the IoUs of a greedy one-to-one matching, for a padded batch of IoU matrices.

    Greedy order: repeatedly take the remaining (prediction, ground truth) pair with the
    highest IoU, then remove that prediction and that ground truth; i.e. all pairs sorted by
    IoU, largest first, a pair kept when neither side is used yet. Why this order: ``f``
    measures how well the ground truth is localised (labels and scores beyond the
    threshold play no part in Eq. 3), so each ground-truth box should take the prediction
    that overlaps it best, and the best-overlapping pair is the one to settle first. Ties
    go to the lowest flat index ``pred * K + gt`` (``torch.argmax`` returns the first
    maximum), i.e. the earlier prediction (detectors list them by descending score), then
    the earlier ground truth. Pairs with IoU 0 add nothing, so matching them or not is
    immaterial.

    Args:
        iou: ``(B, P, K)`` IoU matrices; entries < 0 mark padding or excluded
            predictions and are never matched.
    Returns:
        ``(B,)`` sum of matched IoUs (divide by ``K`` for Eq. 3).
    """
    batch, num_preds, num_gt = iou.shape
    iou = iou.clone()
    total = iou.new_zeros(batch)
    rows = torch.arange(batch, device=iou.device)
    # At most min(P, K) pairs can be matched; a fixed number of fully batched steps, with
    # no data-dependent Python branching, keeps it free of device synchronisations.
    for _ in range(min(num_preds, num_gt)):
        best, flat = iou.flatten(1).max(dim=1)  # (B,), (B,)
        total += best.clamp(min=0)
        pred, gt = flat // num_gt, flat % num_gt
        iou[rows, pred, :] = -1.0
        iou[rows, :, gt] = -1.0
    return total


def _pad_iou(
    pred_boxes: Sequence[Tensor], pred_scores: Sequence[Tensor], gt_boxes: Sequence[Tensor], score_threshold: float
) -> tuple[Tensor, Tensor]:
    """IoU of confident predictions vs. ground truth, padded to ``(B, P_max, K_max)`` with -1; and ``K`` ``(B,)``."""
    device = gt_boxes[0].device
    num_preds = max((b.shape[0] for b in pred_boxes), default=0)
    num_gt = max((b.shape[0] for b in gt_boxes), default=0)
    iou = torch.full((len(gt_boxes), num_preds, num_gt), -1.0, device=device)
    for i, (boxes, scores, gt) in enumerate(zip(pred_boxes, pred_scores, gt_boxes)):
        pair_iou = box_iou(boxes.to(device=device, dtype=torch.float32), gt.to(dtype=torch.float32))  # (P_i, K_i)
        # Predictions at or below the threshold are excluded by marking their rows, not by
        # boolean indexing, whose data-dependent size would synchronise the device.
        confident = (scores.to(device) > score_threshold).unsqueeze(1)  # (P_i, 1)
        iou[i, : boxes.shape[0], : gt.shape[0]] = torch.where(confident, pair_iou, -1.0)
    counts = torch.tensor([gt.shape[0] for gt in gt_boxes], device=device, dtype=torch.float32)
    return iou, counts


def detection_quality_batch(
    pred_boxes: Sequence[Tensor],
    pred_scores: Sequence[Tensor],
    gt_boxes: Sequence[Tensor],
    score_threshold: float = SCORE_THRESHOLD,
) -> Tensor:
    """Eq. 3 for ``B`` frames at once.

    Args:
        pred_boxes: ``B`` tensors ``(P_i, 4)``, ``(x1, y1, x2, y2)`` in pixels.
        pred_scores: ``B`` tensors ``(P_i,)``, confidences in ``[0, 1]``.
        gt_boxes: ``B`` tensors ``(K_i, 4)``, same coordinates as the predictions.
        score_threshold: only predictions with score strictly above it are matched.
    Returns:
        ``(B,)`` float32 on the ground truth's device, each in ``[0, 1]``;
        :data:`EMPTY_GT_QUALITY` where ``K_i = 0``.
    """
    if not (len(pred_boxes) == len(pred_scores) == len(gt_boxes)):
        raise ValueError(
            f"need one prediction per frame: got {len(pred_boxes)} box sets, {len(pred_scores)} score sets "
            f"and {len(gt_boxes)} ground-truth sets"
        )
    if len(gt_boxes) == 0:
        return torch.zeros(0)
    iou, counts = _pad_iou(pred_boxes, pred_scores, gt_boxes, score_threshold)
    matched = greedy_matched_iou_sum(iou)  # (B,)
    return torch.where(counts > 0, matched / counts.clamp(min=1), EMPTY_GT_QUALITY)


def detection_quality(
    pred_boxes: Tensor, pred_scores: Tensor, gt_boxes: Tensor, score_threshold: float = SCORE_THRESHOLD
) -> Tensor:
    """Eq. 3: mean IoU of greedily matched confident predictions over all ``K`` ground-truth boxes.

    See :func:`greedy_matched_iou_sum` for the matching order and :data:`EMPTY_GT_QUALITY`
    for frames without ground truth. Class labels are ignored (Sec. 3.3).

    Args:
        pred_boxes: ``(P, 4)`` ``(x1, y1, x2, y2)`` in pixels.
        pred_scores: ``(P,)`` confidences.
        gt_boxes: ``(K, 4)`` same coordinates.
        score_threshold: predictions with score ``> score_threshold`` are matched.
    Returns:
        0-dim float32 tensor in ``[0, 1]`` (``float(...)`` for a Python number).
    """
    return detection_quality_batch([pred_boxes], [pred_scores], [gt_boxes], score_threshold)[0]


def segmentation_quality(pred_mask: Tensor, gt_mask: Tensor) -> Tensor:
    """Frame IoU, DAVIS's J measure: ``|pred & gt| / |pred | gt|``, 1 when both are empty.

    Args:
        pred_mask: ``(..., H, W)`` bool (or 0/1) foreground mask; threshold logits first.
        gt_mask: ``(..., H, W)`` bool (or 0/1) ground truth.
    Returns:
        float32 tensor of shape ``(...)``: 0-dim for one frame, ``(B,)`` for a batch.
    """
    if pred_mask.shape != gt_mask.shape:
        raise ValueError(f"mask shapes differ: {tuple(pred_mask.shape)} vs {tuple(gt_mask.shape)}")
    pred, gt = pred_mask.bool(), gt_mask.bool()
    intersection = (pred & gt).sum(dim=(-2, -1)).float()
    union = (pred | gt).sum(dim=(-2, -1)).float()
    # Both empty: the prediction is exactly right (the DAVIS convention, Perazzi et al. 2016).
    return torch.where(union > 0, intersection / union.clamp(min=1), 1.0)


def patchwork_reward(quality_now: Tensor | float, quality_prev: Tensor | float) -> Tensor:
    """Eq. 2: ``R_t = max(0, f(gt_t, p_t) - f(gt_t, p_{t-1}))``.

    Args:
        quality_now: ``f(gt_t, p_t)``, the quality with the new window; any shape.
        quality_prev: ``f(gt_t, p_{t-1})``, the previous prediction scored on the
            *current* ground truth; same shape.
    Returns:
        The non-negative reward, a float tensor of the broadcast shape.
    """
    return (torch.as_tensor(quality_now) - torch.as_tensor(quality_prev)).clamp(min=0)


def detection_rewards(
    preds_t: Sequence[dict[str, Tensor]],
    preds_prev: Sequence[dict[str, Tensor]],
    gts: Sequence[dict[str, Tensor]],
    score_threshold: float = SCORE_THRESHOLD,
) -> Tensor:
    """Eq. 2 with the detection ``f`` for ``B`` streams.

    Args:
        preds_t: ``B`` torchvision-style detections ``{"boxes": (P, 4), "scores": (P,),
            "labels": (P,)}`` of frame ``t`` (made with the new window); labels ignored.
        preds_prev: ``B`` detections of frame ``t - 1``, scored against frame ``t``'s
            ground truth (the "do nothing" baseline).
        gts: ``B`` ground truths ``{"boxes": (K, 4), "labels": (K,)}`` of frame ``t``.
        score_threshold: see :func:`detection_quality`.
    Returns:
        ``(B,)`` float32 rewards in ``[0, 1]``.
    """
    batch = len(gts)
    if not (len(preds_t) == len(preds_prev) == batch):
        raise ValueError(f"got {len(preds_t)} and {len(preds_prev)} predictions for {batch} ground truths")
    preds = [*preds_t, *preds_prev]
    # Both qualities in one padded batch: one greedy matching loop instead of two.
    quality = detection_quality_batch(
        [p["boxes"] for p in preds], [p["scores"] for p in preds], [g["boxes"] for g in gts] * 2, score_threshold
    )  # (2B,)
    return patchwork_reward(quality[:batch], quality[batch:])


def segmentation_rewards(masks_t: Tensor, masks_prev: Tensor, gt_masks: Tensor) -> Tensor:
    """Eq. 2 with the segmentation ``f`` (frame IoU) for ``B`` streams, vectorised.

    Args:
        masks_t: ``(B, H, W)`` bool predicted foreground of frame ``t``.
        masks_prev: ``(B, H, W)`` bool prediction of frame ``t - 1``.
        gt_masks: ``(B, H, W)`` bool ground truth of frame ``t``.
    Returns:
        ``(B,)`` float32 rewards in ``[0, 1]``.
    """
    return patchwork_reward(segmentation_quality(masks_t, gt_masks), segmentation_quality(masks_prev, gt_masks))


# --------------------------------------------------------------------------- reward objects
def _masks(predictions: Sequence[dict[str, Tensor]]) -> Tensor:
    return torch.stack([p["mask"] for p in predictions])


class DetectionQualityGain:
    """Eq. 2 with the detection ``f`` (Eq. 3): the reward a Patchwork detector's window earns.

    Only predictions above ``min_score`` (0.5, Sec. 3.3) are looked at, so the stage decodes
    only those.
    """

    min_score: float | None = SCORE_THRESHOLD
    task = "detection"

    def __call__(self, context: RewardContext) -> RewardResult:
        rewards = detection_rewards(context.predictions, context.previous, context.targets)
        quality = detection_quality_batch(
            [p["boxes"] for p in context.predictions],
            [p["scores"] for p in context.predictions],
            [t["boxes"] for t in context.targets],
        )
        return RewardResult(rewards, quality)

    def __repr__(self) -> str:
        return "DetectionQualityGain()"


class SegmentationQualityGain:
    """Eq. 2 with the segmentation ``f``, the frame IoU (J)."""

    min_score: float | None = None
    task = "segmentation"

    def __call__(self, context: RewardContext) -> RewardResult:
        masks = _masks(context.predictions)
        gt = torch.stack([t["mask"] for t in context.targets]).to(masks.device)
        rewards = segmentation_rewards(masks, _masks(context.previous), gt)
        return RewardResult(rewards, segmentation_quality(masks, gt))

    def __repr__(self) -> str:
        return "SegmentationQualityGain()"
