"""One task's data: training and validation videos, still images for fake videos, and how to
sample them. This is what a ``configs/data/*.yaml`` instantiates."""

from __future__ import annotations

import itertools
from typing import Sequence

from patchwork.data.fake_video import FakeVideoSynthesizer
from patchwork.data.records import StillImageRecord, VideoRecord
from patchwork.data.sampling import MixedClipDataset, MixedFrameDataset, SequentialClipDataset
from patchwork.data.transforms import check_image_size


class VideoTaskData:
    """The data of one task (VID detection or DAVIS segmentation) and its samplers.

    Args:
        train_videos: training videos (e.g. an :class:`~patchwork.data.ImageNetVID`).
        val_videos: validation videos.
        still_images: still-image sources (e.g. COCO and VOC readers), concatenated; they become
            fake videos in stages 2 and 3 and plain frames in stage 1 (Sec. 3.4).
        fake_video: the fake-video synthesizer (default settings when ``None``).
        image_size: ``(H, W)`` every sample is resized to; sides divisible by ``M * 32``.
        clip_length: ``T`` of training clips.
        still_fraction: share of still images / fake videos among training samples.
        frame_step: keep every ``frame_step``-th frame of training videos in stage 1, and the
            temporal stride inside training clips.
        samples_per_epoch: length of the training datasets (``None``: one per source item).
        augment: stage-1 augmentation.
        seed: sampling seed.
        strict: raise on corrupt files instead of skipping them.
    """

    def __init__(self, train_videos: Sequence[VideoRecord], val_videos: Sequence[VideoRecord],
                 still_images: Sequence[Sequence[StillImageRecord]] = (),
                 fake_video: FakeVideoSynthesizer | None = None,
                 image_size: Sequence[int] = (128, 128), clip_length: int = 8, still_fraction: float = 0.5,
                 frame_step: int = 1, samples_per_epoch: int | None = None, augment: bool = True, seed: int = 0,
                 strict: bool = False) -> None:
        self.train_videos = list(train_videos)
        self.val_videos = list(val_videos)
        self.still_images = list(itertools.chain.from_iterable(still_images))
        self.fake_video = fake_video if fake_video is not None else FakeVideoSynthesizer()
        self.image_size = check_image_size(image_size)
        self.clip_length = int(clip_length)
        self.still_fraction = float(still_fraction)
        self.frame_step = int(frame_step)
        self.samples_per_epoch = samples_per_epoch
        self.augment = augment
        self.seed = int(seed)
        self.strict = strict

    def __repr__(self) -> str:
        return (f"VideoTaskData(train_videos={len(self.train_videos)}, val_videos={len(self.val_videos)}, "
                f"still_images={len(self.still_images)}, image_size={self.image_size}, clip_length={self.clip_length})")

    def frame_dataset(self) -> MixedFrameDataset:
        """Stage 1: augmented single frames, video frames mixed with still images."""
        return MixedFrameDataset(self.train_videos, self.still_images, self.image_size, self.still_fraction,
                                 self.samples_per_epoch, self.frame_step, self.augment, seed=self.seed,
                                 strict=self.strict)

    def clip_dataset(self, clip_length: int | None = None) -> MixedClipDataset:
        """Stages 2 and 3: ``clip_length``-frame clips (``None``: the data's), videos mixed with fake videos."""
        length = self.clip_length if clip_length is None else int(clip_length)
        return MixedClipDataset(self.train_videos, self.still_images, length, self.image_size,
                                self.fake_video, self.still_fraction, self.samples_per_epoch, self.frame_step,
                                seed=self.seed, strict=self.strict)

    def val_frame_dataset(self, frame_step: int = 1) -> MixedFrameDataset:
        """Validation frames of the val videos, in order, resized only."""
        return MixedFrameDataset(self.val_videos, [], self.image_size, frame_step=frame_step, augment=False,
                                 sequential=True, strict=self.strict)

    def val_clip_dataset(self, clip_length: int | None = None) -> SequentialClipDataset:
        """Evaluation: the val videos in order, whole (``None``) or in ``clip_length`` chunks."""
        return SequentialClipDataset(self.val_videos, self.image_size, clip_length, strict=self.strict)
