"""patchwork.data: datasets, fake videos and samplers for Patchwork (paper Sec. 3.4, 4.1, 4.2).

Contract (what the rest of patchwork relies on)
------------------------------------------------

**Boxes** are float xyxy in continuous pixel coordinates, torchvision style: pixel ``i`` covers
``[i, i + 1)``. Conversions from the on-disk formats:

- ImageNet VID XML (0-based inclusive): ``(xmin, ymin, xmax + 1, ymax + 1)``
- Pascal VOC XML (1-based inclusive): ``(xmin - 1, ymin - 1, xmax, ymax)``
- COCO ``[x, y, w, h]``: ``(x, y, x + w, y + h)``

**Classes** are the 30 ImageNet VID classes (:data:`VID_CLASSES`, official order, index
``0..29``; background is not a class index). COCO (16 classes) and VOC (13 classes) map to VID by
name (:data:`COCO_TO_VID`, :data:`VOC_TO_VID`); still-image objects of other classes are
dropped from the boxes. Foreground masks of still images use *all* objects (any class): the
segmentation task is class-agnostic foreground, as in DAVIS 2016 (``foreground_all_classes``
on :class:`CocoStills` switches this to mapped classes only).

**Per-frame target**: ``{"boxes": float32 (K, 4), "labels": int64 (K,), "track_ids": int64 (K,)}``
(``-1`` where identities are unknown), plus ``"mask": bool (H, W)`` for segmentation data.
``K = 0`` is valid. DAVIS frames have ``K = 0`` and a mask.

**Records**: :class:`VideoRecord` (name, frame paths, per-frame targets, lazy masks;
``load_frame(i)`` decodes uint8 ``(3, H, W)`` with torchvision.io) and
:class:`StillImageRecord`. Readers (:class:`ImageNetVID`, :class:`Davis2016`,
:class:`CocoStills`, :class:`VocStills`) are sequences of records.

**Samples** (all resized to a fixed ``image_size = (H, W)`` with transforms v2, boxes and masks
alike):

- single frame (stage 1): ``{"image": uint8 (3, H, W), "target": dict}``;
  :func:`collate_frames` -> ``{"image": (B, 3, H, W), "target": [B dicts]}``
- clip (stages 2/3, evaluation): ``{"frames": uint8 (T, 3, H, W), "targets": [T dicts],
  "video": str, "frame_indices": int64 (T,), "original_size": int64 (2,)}``;
  :func:`collate_clips` -> ``frames (B, T, 3, H, W)``, ``targets`` ``B`` lists of ``T`` dicts,
  ``video`` ``B`` names, ``frame_indices (B, T)``, ``original_size (B, 2)``.

**Bad data**: a missing root raises :class:`DatasetLayoutError` naming the path and the expected
layout; a corrupt or missing image/XML/PNG is skipped, counted (``bad_data``) and logged with
its path on the ``patchwork.data`` logger (``strict=True`` raises :class:`CorruptDataError`);
a frame with no objects is valid.

**Built-in synthetic data** (the default everywhere): :func:`ensure_synthetic_data` writes
VID-, DAVIS-, COCO- and VOC-style sets in their real layouts into
``$PATCHWORK_DATA_CACHE/synthetic`` (default ``./data_cache/synthetic``) on first use.

**Video files** (:mod:`patchwork.data.video_io`): :func:`read_video_frames` decodes a video file,
GIF or frame folder lazily, uint8 ``(3, H, W)`` per frame; :func:`write_video` writes mp4 (GIF
without the ``video`` extra).

Entry points for training code: a ``configs/data/*.yaml`` instantiates a :class:`VideoTaskData`,
whose ``frame_dataset()`` (stage 1), ``clip_dataset()`` (stages 2/3), ``val_frame_dataset()``
and ``val_clip_dataset()`` return datasets with a ``collate`` function and a ``loader(...)``.
"""

from patchwork.data.classes import (COCO_TO_VID, NUM_VID_CLASSES, VID_CLASSES, VID_NAMES, VID_WNIDS, VOC_TO_VID,
                                    VidClass, coco_to_vid_label, vid_label, voc_to_vid_label)
from patchwork.data.coco import CocoStills
from patchwork.data.davis import DAVIS2016_TRAIN, DAVIS2016_VAL, Davis2016
from patchwork.data.fake_video import FakeClip, FakeVideoSynthesizer, gt_overlap, measure_fake_video_rate
from patchwork.data.imagenet_vid import ImageNetVID, parse_vid_xml
from patchwork.data.records import (BadDataLog, BinaryPngMask, CocoMask, CorruptDataError, DatasetLayoutError,
                                    StillImageRecord, Target, VideoRecord, VocObjectMask, empty_target, load_image,
                                    make_target)
from patchwork.data.sampling import (MixedClipDataset, MixedFrameDataset, SequentialClipDataset, collate_clips,
                                     collate_frames)
from patchwork.data.synthetic import (SyntheticDataConfig, SyntheticDataPaths, ensure_synthetic_data,
                                      synthetic_detection_data, synthetic_segmentation_data)
from patchwork.data.task_data import VideoTaskData
from patchwork.data.transforms import eval_transform, train_transform, transform_clip
from patchwork.data.video_io import VideoBackendMissing, read_video_frames, write_video
from patchwork.data.voc import VocStills, parse_voc_xml

__all__ = [
    "VID_CLASSES", "VID_NAMES", "VID_WNIDS", "NUM_VID_CLASSES", "COCO_TO_VID", "VOC_TO_VID", "VidClass",
    "vid_label", "coco_to_vid_label", "voc_to_vid_label",
    "Target", "VideoRecord", "StillImageRecord", "BinaryPngMask", "VocObjectMask", "CocoMask", "BadDataLog",
    "CorruptDataError", "DatasetLayoutError", "empty_target", "make_target", "load_image",
    "ImageNetVID", "parse_vid_xml", "Davis2016", "DAVIS2016_TRAIN", "DAVIS2016_VAL", "CocoStills", "VocStills",
    "parse_voc_xml",
    "FakeVideoSynthesizer", "FakeClip", "gt_overlap", "measure_fake_video_rate",
    "train_transform", "eval_transform", "transform_clip",
    "MixedFrameDataset", "MixedClipDataset", "SequentialClipDataset", "collate_frames", "collate_clips",
    "VideoTaskData",
    "SyntheticDataConfig", "SyntheticDataPaths", "ensure_synthetic_data", "synthetic_detection_data",
    "synthetic_segmentation_data",
    "read_video_frames", "write_video", "VideoBackendMissing",
]
