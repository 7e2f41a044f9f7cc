"""What a streaming evaluation produced: per-video actions and predictions, ground truth, metrics.

Predictions are kept at the model's ``image_size``; metrics are computed in each video's
original resolution (``original_size``): boxes are scaled back and made inclusive integer
pixels (``x2 - 1``, ``y2 - 1``, the ImageNet VID devkit convention), masks are resized back
with nearest neighbour.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

from patchwork.evaluation.bootstrap import RESAMPLES, detection_bootstrap, mean_bootstrap, resample_weights
from patchwork.evaluation.coco_ap50 import coco_ap50
from patchwork.evaluation.davis import evaluate_davis
from patchwork.evaluation.vid import evaluate_vid
from patchwork.models.baselines import rescale_prediction

Prediction = dict[str, Tensor]

#: The prediction entries kept per frame (the rest, e.g. a segmenter's float score map, is dropped to save memory).
KEPT_KEYS = {"detection": ("boxes", "scores", "labels"), "segmentation": ("mask",)}


class LazySequence(Sequence):
    """A read-only sequence whose item ``i`` is ``load(i)``, computed on access (masks stay on disk)."""

    def __init__(self, length: int, load: Callable[[int], Any]) -> None:
        self.length = int(length)
        self.load = load

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:  # type: ignore[override]
        if isinstance(index, slice):
            return [self.load(i) for i in range(self.length)[index]]
        if not -self.length <= index < self.length:
            raise IndexError(index)
        return self.load(index % self.length)


@dataclass
class VideoResult:
    """One video's outputs.

    Attributes:
        name: the video's name.
        frame_indices: LongTensor ``(T,)``, the frames evaluated (corrupt frames are skipped by the data).
        actions: ``(T, *action_shape)`` what the method chose for each frame (Patchwork: the
            window index; LFS: the extractor; BlockCopy: the executed blocks), ``None`` for a
            model without an action space.
        predictions: ``T`` per-frame predictions at the model's ``image_size`` (CPU; boxes
            ``(N, 4)`` xyxy continuous pixels, ``scores``, ``labels``; or ``mask`` bool ``(H, W)``).
        ground_truth: ``T`` per-frame targets in the original resolution (``boxes``
            continuous xyxy, ``labels``; ``mask`` bool for segmentation), possibly lazy.
        original_size: ``(H0, W0)`` of the source frames.
    """

    name: str
    frame_indices: Tensor
    actions: Tensor | None
    predictions: list[Prediction]
    ground_truth: Sequence[dict[str, Tensor]]
    original_size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.predictions)


def inclusive_boxes(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Continuous xyxy pixel boxes ``(N, 4)`` -> inclusive integer boxes inside an ``(H, W)`` image.

    ``(x1, y1, x2, y2) -> (round(x1), round(y1), round(x2) - 1, round(y2) - 1)`` clamped to
    ``[0, W - 1] x [0, H - 1]``: the inverse of the data's ImageNet VID conversion
    (inclusive ``xmax`` becomes ``xmax + 1``), as the devkit's ``+1`` IoU expects.
    """
    boxes = boxes.detach().float().reshape(-1, 4).round()
    boxes[:, 2:] -= 1
    height, width = size
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height - 1)
    return boxes


@dataclass
class StreamResult:
    """Everything one streaming evaluation produced, and its task metric.

    Attributes:
        task: ``"detection"`` or ``"segmentation"``.
        image_size: ``(H, W)`` the model ran at.
        videos: per-video results, in dataset order.
        num_classes: number of object classes (detection), else ``None``.
        flops: FLOPs of inference over all evaluated frames, when the evaluation counted them
            (:func:`~patchwork.evaluation.streaming.evaluate_streams`), else ``None``.
    """

    task: str
    image_size: tuple[int, int]
    videos: list[VideoResult]
    num_classes: int | None = None
    flops: float | None = None
    _metrics: dict[tuple[bool, int | None], dict[str, Any]] = field(default_factory=dict, init=False, repr=False)

    @property
    def frame_counts(self) -> dict[str, int]:
        """Frames evaluated per video, ``{name: T}``."""
        return {video.name: len(video) for video in self.videos}

    @property
    def num_frames(self) -> int:
        """Frames evaluated in total."""
        return sum(len(video) for video in self.videos)

    @property
    def mflops_avg(self) -> float | None:
        """Average MFLOPs per evaluated frame (``None`` when the FLOPs were not counted)."""
        return None if self.flops is None else self.flops / max(self.num_frames, 1) / 1e6

    def original_predictions(self, video: int) -> Sequence[Prediction]:
        """One video's predictions mapped to its original resolution (boxes scaled, masks resized nearest), lazily."""
        result = self.videos[video]
        return LazySequence(
            len(result), lambda t: rescale_prediction(result.predictions[t], self.image_size, result.original_size)
        )

    def detection_frames(self) -> tuple[list[dict[str, Tensor]], list[dict[str, Tensor]]]:
        """All frames' detections and ground truth as inclusive integer boxes in original pixels (VID devkit form)."""
        detections, ground_truth = [], []
        for v, video in enumerate(self.videos):
            predictions = self.original_predictions(v)
            for t in range(len(video)):
                p, g = predictions[t], video.ground_truth[t]
                detections.append({"boxes": inclusive_boxes(p["boxes"], video.original_size),
                                   "scores": p["scores"], "labels": p["labels"]})
                ground_truth.append({"boxes": inclusive_boxes(g["boxes"], video.original_size), "labels": g["labels"]})
        return detections, ground_truth

    def metrics(self, exclude_first_last: bool = True, num_classes: int | None = None) -> dict[str, Any]:
        """The task metric in ``[0, 1]`` units.

        Detection: ``{"mAP", "AP" (per class, NaN without ground truth), "num_gt",
        "AP50 (COCO, extra)"}`` (the official VID rule; COCO AP50 through pycocotools only as an
        extra). Segmentation: ``{"J": {"mean", "recall", "decay"}, "F": {...}, "J&F",
        "per_sequence"}`` of :func:`~patchwork.evaluation.davis.evaluate_davis`;
        ``exclude_first_last`` is the DAVIS 2016 protocol's first/last-frame exclusion.
        Computed once per set of arguments (masks are decoded again otherwise).
        """
        key = (bool(exclude_first_last), num_classes)
        if key not in self._metrics:
            self._metrics[key] = self._compute_metrics(exclude_first_last, num_classes)
        return self._metrics[key]

    def bootstrap(self, resamples: int = RESAMPLES, seed: int = 0, exclude_first_last: bool = True,
                  num_classes: int | None = None) -> dict[str, np.ndarray]:
        """The task metric on ``resamples`` bootstrap resamples of the videos (:mod:`~patchwork.evaluation.bootstrap`).

        The resamples depend on the number of videos and ``seed`` alone, so rows of different
        methods on the same videos are paired. Returns ``{"mAP": (R,)}`` or ``{"J": (R,), "F": (R,)}``
        in ``[0, 1]`` units.
        """
        weights = resample_weights(len(self.videos), resamples, seed)
        if self.task == "detection":
            classes = num_classes if num_classes is not None else self.num_classes
            if classes is None:
                raise ValueError("detection metrics need num_classes")
            detections, ground_truth = self.detection_frames()
            frame_video = np.repeat(np.arange(len(self.videos)), [len(video) for video in self.videos])
            return {"mAP": detection_bootstrap(detections, ground_truth, frame_video, classes, weights)}
        per_sequence = self.metrics(exclude_first_last)["per_sequence"]
        names = [video.name for video in self.videos]
        return {measure: mean_bootstrap(np.array([per_sequence[n][measure]["mean"] for n in names]), weights)
                for measure in ("J", "F")}

    def _compute_metrics(self, exclude_first_last: bool, num_classes: int | None) -> dict[str, Any]:
        if self.task == "detection":
            classes = num_classes if num_classes is not None else self.num_classes
            if classes is None:
                raise ValueError("detection metrics need num_classes")
            detections, ground_truth = self.detection_frames()
            vid = evaluate_vid(detections, ground_truth, classes)
            return {"mAP": vid["mAP"], "AP": vid["AP"].tolist(), "num_gt": vid["num_gt"].tolist(),
                    "AP50 (COCO, extra)": coco_ap50(detections, ground_truth, classes)}
        sequences = {}
        for v, video in enumerate(self.videos):
            predictions = self.original_predictions(v)
            masks = LazySequence(len(video), lambda t, p=predictions: p[t]["mask"])
            truth = LazySequence(len(video), lambda t, g=video.ground_truth: g[t]["mask"])
            sequences[video.name] = (truth, masks)
        return evaluate_davis(sequences, exclude_first_last=exclude_first_last)
