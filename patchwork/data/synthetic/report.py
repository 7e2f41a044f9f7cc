"""Generate the synthetic dataset, describe it and save previews a person can look at."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from patchwork.data.coco import CocoStills
from patchwork.data.davis import Davis2016
from patchwork.data.fake_video import FakeVideoSynthesizer, measure_fake_video_rate
from patchwork.data.imagenet_vid import ImageNetVID
from patchwork.data.preview import format_statistics, save_clip_strip, still_set_statistics, video_set_statistics
from patchwork.data.records import StillImageRecord, VideoRecord
from patchwork.data.sampling import SequentialClipDataset
from patchwork.data.synthetic.config import SyntheticDataConfig
from patchwork.data.synthetic.generate import MARKER, ensure_synthetic_data
from patchwork.data.voc import VocStills


def _video_previews(videos: Sequence[VideoRecord], kind: str, out_dir: Path, count: int, clip_length: int,
                    image_size: Sequence[int]) -> list[Path]:
    clips = SequentialClipDataset(videos[:count], image_size, clip_length)
    # The first chunk of each video: its first clip_length frames.
    firsts = [i for i, (_, start, _) in enumerate(clips.chunks) if start == 0]
    written = []
    for i in firsts:
        sample = clips[i]
        name = sample["video"].replace("/", "_")
        written.append(save_clip_strip(sample["frames"], sample["targets"], out_dir / f"{kind}_{name}.png"))
    return written


def _fake_previews(stills: Sequence[StillImageRecord], kind: str, synthesizer: FakeVideoSynthesizer, out_dir: Path,
                   count: int, clip_length: int, image_size: Sequence[int], seed: int) -> list[Path]:
    written = []
    for i, still in enumerate(stills[:count]):
        image, target = still.load()
        clip = synthesizer(image, target, clip_length, image_size, np.random.default_rng([seed, i]))
        written.append(save_clip_strip(clip.frames, clip.targets, out_dir / f"{kind}_{still.name}.png"))
    return written


def make_synthetic_data(out_dir: str | Path, cache_dir: str | Path | None = None,
                        generator: SyntheticDataConfig | None = None, fake_video: FakeVideoSynthesizer | None = None,
                        num_preview_clips: int = 3, clip_length: int = 8, image_size: Sequence[int] = (128, 128),
                        fake_video_benchmark_clips: int = 50, seed: int = 0) -> dict[str, Any]:
    """Generate (or find) the synthetic sets, print their statistics, save preview strips
    (``num_preview_clips`` each of synthetic VID, synthetic DAVIS, fake videos from COCO-style
    stills with boxes and from VOC-style stills with masks) under ``out_dir`` and measure the
    fake-video rate on one thread. Returns everything printed, as a dict."""
    out_dir = Path(out_dir)
    generator = generator if generator is not None else SyntheticDataConfig()
    fake_video = fake_video if fake_video is not None else FakeVideoSynthesizer()
    begin = time.perf_counter()
    paths = ensure_synthetic_data(cache_dir, generator)
    seconds = time.perf_counter() - begin
    print(f"synthetic data: {paths.root} ({'generated' if seconds > 0.5 else 'cached'} in {seconds:.1f} s; "
          f"marker {paths.root / MARKER})")

    sets = {
        "vid train": ImageNetVID(paths.vid_root, "train"), "vid val": ImageNetVID(paths.vid_root, "val"),
        "davis train": Davis2016(paths.davis_root, "train"), "davis val": Davis2016(paths.davis_root, "val"),
    }
    stills = {
        "coco": CocoStills(paths.coco_annotation_file, paths.coco_image_dir),
        "coco with masks": CocoStills(paths.coco_annotation_file, paths.coco_image_dir, with_masks=True),
        "voc": VocStills(paths.voc_root, paths.VOC_YEAR, "trainval"),
        "voc with masks": VocStills(paths.voc_root, paths.VOC_YEAR, "trainval", with_masks=True),
    }
    report: dict[str, Any] = {"root": str(paths.root), "seconds": seconds, "statistics": {}}
    for name, videos in sets.items():
        report["statistics"][name] = video_set_statistics(videos)
        print(format_statistics(name, report["statistics"][name]))
    for name, images in stills.items():
        report["statistics"][name] = still_set_statistics(images)
        print(format_statistics(name, report["statistics"][name]))

    previews = (
        _video_previews(sets["vid train"], "synthetic_vid", out_dir, num_preview_clips, clip_length, image_size)
        + _video_previews(sets["davis train"], "synthetic_davis", out_dir, num_preview_clips, clip_length, image_size)
        + _fake_previews(stills["coco"], "fake_coco", fake_video, out_dir, num_preview_clips, clip_length,
                         image_size, seed)
        + _fake_previews(stills["voc with masks"], "fake_voc", fake_video, out_dir, num_preview_clips, clip_length,
                         image_size, seed))
    report["previews"] = [str(p) for p in previews]
    print(f"{len(previews)} preview strips in {out_dir}")

    if fake_video_benchmark_clips > 0:
        rate = measure_fake_video_rate(stills["coco with masks"], fake_video, clip_length, image_size,
                                       fake_video_benchmark_clips, seed)
        report["fake_clips_per_second"] = rate
        print(f"fake videos: {rate:.1f} clips/s on one thread (T={clip_length}, {tuple(image_size)}, "
              f"decoding included, threads restored to {torch.get_num_threads()})")
    return report
