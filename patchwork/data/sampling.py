"""Sampling for the three training stages and for evaluation, plus collation (paper Sec. 3.4).

- Stage 1 (:class:`MixedFrameDataset`): single frames, video frames mixed with still images at a
  configurable ratio, augmented. Sample: ``{"image": uint8 (3, H, W), "target": dict}``.
- Stages 2 and 3 (:class:`MixedClipDataset`): ``T``-frame clips, from videos and from fake videos
  of still images at a configurable ratio; a batch of ``B`` clips is ``B`` parallel streams.
- Evaluation (:class:`SequentialClipDataset`): every frame of every video, in order.

Clip sample: ``{"frames": uint8 (T, 3, H, W), "targets": [T dicts], "video": str,
"frame_indices": int64 (T,), "original_size": int64 (2,)}`` (``original_size`` is the source
``(H, W)``, for evaluating in original pixels).

Determinism: item ``i`` of epoch ``e`` draws everything from
``numpy.random.default_rng([seed, e, i])`` (v2 augmentation runs under a forked torch RNG seeded
from it), so an item is the same in any worker and any run. A corrupt file is logged, counted in
``bad_data`` and replaced by the next item (``strict=True`` raises instead).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from patchwork.data.fake_video import FakeVideoSynthesizer
from patchwork.data.records import BadDataLog, CorruptDataError, StillImageRecord, Target, VideoRecord
from patchwork.data.transforms import apply_frame_transform, eval_transform, train_transform, transform_clip

_MAX_REPLACEMENTS = 16


def collate_frames(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch single-frame samples: ``image`` uint8 ``(B, 3, H, W)``, ``target`` list of ``B`` dicts."""
    return {"image": torch.stack([s["image"] for s in samples]), "target": [s["target"] for s in samples]}


def collate_clips(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch clip samples (equal ``T``): ``frames`` uint8 ``(B, T, 3, H, W)``, ``targets`` list of
    ``B`` lists of ``T`` dicts, ``video`` list of ``B`` names, ``frame_indices`` ``(B, T)``,
    ``original_size`` ``(B, 2)``."""
    return {
        "frames": torch.stack([s["frames"] for s in samples]),
        "targets": [s["targets"] for s in samples],
        "video": [s["video"] for s in samples],
        "frame_indices": torch.stack([s["frame_indices"] for s in samples]),
        "original_size": torch.stack([s["original_size"] for s in samples]),
    }


class _SeededDataset(Dataset):
    """Per-item RNG, epoch handling and corrupt-file replacement shared by the samplers."""

    collate: Callable[[Sequence[dict[str, Any]]], dict[str, Any]]

    def __init__(self, seed: int, strict: bool) -> None:
        self.seed = int(seed)
        self.epoch = 0
        self.bad_data = BadDataLog(strict=strict)

    def set_epoch(self, epoch: int) -> None:
        """Draw a fresh set of samples (augmentations, clips) for ``epoch``."""
        self.epoch = int(epoch)

    def _load(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        for attempt in range(_MAX_REPLACEMENTS):
            item = (index + attempt) % len(self)
            try:
                return self._load(item, np.random.default_rng([self.seed, self.epoch, item]))
            except CorruptDataError as e:
                self.bad_data.skip(e)
        raise RuntimeError(f"{_MAX_REPLACEMENTS} consecutive samples from item {index} had corrupt files")

    def loader(self, batch_size: int, shuffle: bool = False, num_workers: int = 0, drop_last: bool = False,
               **kwargs: Any) -> DataLoader:
        """A DataLoader with this dataset's collate function."""
        return DataLoader(self, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                          drop_last=drop_last, collate_fn=self.collate, **kwargs)


def _index_frames(videos: Sequence[VideoRecord], frame_step: int) -> np.ndarray:
    """``(N, 2)`` (video, frame) pairs, every ``frame_step``-th frame of every video."""
    pairs = [(v, f) for v, video in enumerate(videos) for f in range(0, len(video), frame_step)]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def _run_seeded(rng: np.random.Generator, fn: Callable[[], Any]) -> Any:
    # transforms v2 draw from torch's global RNG; fork it so augmentation follows the item seed
    # and the caller's RNG stream is left untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(rng.integers(2**62)))
        return fn()


class MixedFrameDataset(_SeededDataset):
    """Stage-1 single frames: video frames mixed with still images (whole images, not fake-video
    views: stage 1 trains an ordinary single-image model, Sec. 3.4).

    Args:
        videos: video records (every ``frame_step``-th frame is a candidate).
        stills: still-image records.
        image_size: output ``(H, W)``.
        still_fraction: probability that a sample is a still image (ignored when one side is
            empty).
        num_samples: epoch length; default: number of candidate frames plus stills.
        augment: stage-1 augmentation (:func:`~patchwork.data.transforms.train_transform`),
            else resize only.
        sequential: item ``i`` is the ``i``-th candidate (video frames, then stills), no
            randomness: for validation.
        frame_step, seed, strict: see the module docstring.
    """

    collate = staticmethod(collate_frames)

    def __init__(self, videos: Sequence[VideoRecord], stills: Sequence[StillImageRecord],
                 image_size: Sequence[int], still_fraction: float = 0.5, num_samples: int | None = None,
                 frame_step: int = 1, augment: bool = True, sequential: bool = False, seed: int = 0,
                 strict: bool = False) -> None:
        super().__init__(seed, strict)
        self.videos = list(videos)
        self.stills = list(stills)
        self.frames = _index_frames(self.videos, max(1, int(frame_step)))
        if len(self.frames) + len(self.stills) == 0:
            raise ValueError("MixedFrameDataset needs at least one video frame or still image")
        self.still_fraction = float(still_fraction) if len(self.frames) and self.stills else float(not len(self.frames))
        self.sequential = sequential
        everything = len(self.frames) + len(self.stills)
        self.num_samples = everything if num_samples is None or sequential else int(num_samples)
        self.transform = train_transform(image_size) if augment else eval_transform(image_size)

    def __len__(self) -> int:
        return self.num_samples

    def _load(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        if self.sequential:
            pick = index  # video frames first, then stills
        elif rng.random() < self.still_fraction:
            pick = len(self.frames) + int(rng.integers(len(self.stills)))
        else:
            pick = int(rng.integers(len(self.frames)))
        if pick >= len(self.frames):
            image, target = self.stills[pick - len(self.frames)].load()
        else:
            v, f = self.frames[pick]
            image, target = self.videos[v].load_frame(int(f))
        image, target = _run_seeded(rng, lambda: apply_frame_transform(self.transform, image, target))
        return {"image": image, "target": target}


class MixedClipDataset(_SeededDataset):
    """Stage-2/3 clips of ``clip_length`` frames: real video clips mixed with fake videos.

    Args:
        videos: video records; those shorter than ``clip_length`` frames are not used.
        stills: still images turned into fake videos by ``fake_video``.
        clip_length: ``T``.
        image_size: output ``(H, W)``.
        fake_video: the synthesizer (required when ``stills`` is non-empty).
        still_fraction: probability that a clip is a fake video.
        num_samples: epoch length; default ``len(videos) + len(stills)``.
        frame_step: temporal stride inside a real clip (reduced for videos too short for it).
        hflip_p: probability of mirroring a whole clip.
        seed, strict: see the module docstring.
    """

    collate = staticmethod(collate_clips)

    def __init__(self, videos: Sequence[VideoRecord], stills: Sequence[StillImageRecord], clip_length: int,
                 image_size: Sequence[int], fake_video: FakeVideoSynthesizer | None = None,
                 still_fraction: float = 0.5, num_samples: int | None = None, frame_step: int = 1,
                 hflip_p: float = 0.5, seed: int = 0, strict: bool = False) -> None:
        super().__init__(seed, strict)
        self.clip_length = int(clip_length)
        self.videos = [v for v in videos if len(v) >= self.clip_length]
        self.stills = list(stills) if fake_video is not None else []
        if stills and fake_video is None:
            raise ValueError("MixedClipDataset: still images need a fake_video synthesizer")
        if not self.videos and not self.stills:
            raise ValueError(f"MixedClipDataset: no video has {self.clip_length} frames and there are no stills")
        self.image_size = tuple(int(s) for s in image_size)
        self.fake_video = fake_video
        self.still_fraction = float(still_fraction) if self.videos and self.stills else float(not self.videos)
        self.num_samples = len(self.videos) + len(self.stills) if num_samples is None else int(num_samples)
        self.frame_step = max(1, int(frame_step))
        self.hflip_p = float(hflip_p)

    def __len__(self) -> int:
        return self.num_samples

    def _load(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        if rng.random() < self.still_fraction:
            still = self.stills[int(rng.integers(len(self.stills)))]
            image, target = still.load()
            clip = self.fake_video(image, target, self.clip_length, self.image_size, rng)
            return {"frames": clip.frames, "targets": clip.targets, "video": f"fake/{still.name}",
                    "frame_indices": torch.arange(self.clip_length),
                    "original_size": torch.tensor(image.shape[-2:], dtype=torch.int64)}
        video = self.videos[int(rng.integers(len(self.videos)))]
        step = min(self.frame_step, (len(video) - 1) // max(self.clip_length - 1, 1)) or 1
        span = (self.clip_length - 1) * step + 1
        start = int(rng.integers(len(video) - span + 1))
        indices = list(range(start, start + span, step))
        frames, targets = zip(*(video.load_frame(i) for i in indices))
        original_size = torch.tensor(frames[0].shape[-2:], dtype=torch.int64)
        clip, clip_targets = transform_clip(torch.stack(frames), targets, self.image_size,
                                            hflip=bool(rng.random() < self.hflip_p))
        return {"frames": clip, "targets": clip_targets, "video": video.name,
                "frame_indices": torch.tensor(indices, dtype=torch.int64), "original_size": original_size}


class SequentialClipDataset(_SeededDataset):
    """Evaluation: each video cut into consecutive clips of ``clip_length`` frames, in order
    (``None``: one clip per whole video). The last clip of a video may be shorter, so batch
    with ``batch_size=1`` unless every video length is a multiple of ``clip_length``.

    A corrupt frame is skipped (logged and counted; ``frame_indices`` tell which frames are
    present); ``strict=True`` raises.
    """

    collate = staticmethod(collate_clips)

    def __init__(self, videos: Sequence[VideoRecord], image_size: Sequence[int], clip_length: int | None = None,
                 strict: bool = False) -> None:
        super().__init__(0, strict)
        self.videos = list(videos)
        self.image_size = tuple(int(s) for s in image_size)
        self.chunks: list[tuple[int, int, int]] = []
        for v, video in enumerate(self.videos):
            length = clip_length or len(video)
            self.chunks += [(v, s, min(s + length, len(video))) for s in range(0, len(video), length)]

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, index: int) -> dict[str, Any]:
        v, start, stop = self.chunks[index]
        video = self.videos[v]
        frames: list[Tensor] = []
        targets: list[Target] = []
        indices: list[int] = []
        for i in range(start, stop):
            try:
                image, target = video.load_frame(i)
            except CorruptDataError as e:
                self.bad_data.skip(e)
                continue
            frames.append(image)
            targets.append(target)
            indices.append(i)
        if not frames:
            raise RuntimeError(f"{video.name}: every frame in [{start}, {stop}) is corrupt")
        original_size = torch.tensor(frames[0].shape[-2:], dtype=torch.int64)
        clip, clip_targets = transform_clip(torch.stack(frames), targets, self.image_size)
        return {"frames": clip, "targets": clip_targets, "video": video.name,
                "frame_indices": torch.tensor(indices, dtype=torch.int64), "original_size": original_size}
