"""Video in and out: decode video files and frame folders lazily, write mp4 (or GIF).

Reading (:func:`read_video_frames`) yields one uint8 ``(3, H, W)`` RGB frame at a time, so a
long video never sits in memory whole:

- a **folder** of ``.jpg`` / ``.jpeg`` / ``.png`` frames, in sorted file-name order (other files,
  e.g. annotations, are ignored);
- a **video file** (``.mp4``, ``.webm``, ``.avi``, ``.mov``, ``.mkv``, ... anything FFmpeg
  decodes) through PyAV, the optional extra ``video`` (``pip install -e '.[video]'``): its wheels
  bundle FFmpeg, so no system package is needed;
- a **GIF**, through PIL (no extra needed).

Writing (:func:`write_video`): H.264 mp4 through PyAV (``.webm`` VP9 and ``.avi`` MPEG-4 Part 2
too); without PyAV, or for a ``.gif`` path, an animated GIF through PIL.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from PIL import Image, ImageSequence
from torch import Tensor

from patchwork.data.records import load_image

__all__ = ["IMAGE_SUFFIXES", "VIDEO_EXTRA_INSTALL", "VideoBackendMissing", "read_video_frames",
           "write_video"]

log = logging.getLogger(__name__)

#: Image files a frame folder may hold (others are ignored).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
#: The command that installs the video decoder/encoder.
VIDEO_EXTRA_INSTALL = "pip install -e '.[video]'"
#: Encoder per container written by :func:`write_video`.
ENCODERS = {".mp4": "libx264", ".mkv": "libx264", ".mov": "libx264", ".m4v": "libx264",
            ".webm": "libvpx-vp9", ".avi": "mpeg4"}

PathLike = str | os.PathLike[str]


class VideoBackendMissing(ImportError):
    """PyAV (the ``video`` extra) is needed and not installed; the message names the install command."""


def _import_av(purpose: str) -> ModuleType:
    try:
        import av  # optional extra: only video files need it
    except ImportError as error:
        raise VideoBackendMissing(
            f"{purpose} needs PyAV, the optional extra 'video': {VIDEO_EXTRA_INSTALL} (or `pip install av`); "
            "alternatively extract the frames to a folder and read the folder"
        ) from error
    return av


def _folder_frames(folder: Path) -> Iterator[Tensor]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no {'/'.join(IMAGE_SUFFIXES)} frames in {folder}")
    for file in files:
        yield load_image(file)


def _gif_frames(path: Path) -> Iterator[Tensor]:
    with Image.open(path) as gif:
        for frame in ImageSequence.Iterator(gif):
            yield torch.from_numpy(np.array(frame.convert("RGB"))).permute(2, 0, 1).contiguous()


def _decoded_frames(path: Path, av: ModuleType) -> Iterator[Tensor]:
    try:
        container = av.open(str(path))
    except av.FFmpegError as error:
        raise RuntimeError(f"cannot open the video file {path}: {error}") from error
    with container:
        if not container.streams.video:
            raise RuntimeError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame- and slice-threaded decoding; output order is unchanged
        for frame in container.decode(stream):
            yield torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1).contiguous()


def read_video_frames(path: PathLike, start: int = 0, stop: int | None = None, step: int = 1) -> Iterator[Tensor]:
    """Decode a video file, GIF or frame folder lazily, one frame at a time.

    Args:
        path: a folder of image frames, a ``.gif``, or a video file (needs the ``video`` extra).
        start, stop, step: keep frames ``start, start + step, ...`` before ``stop`` (as in
            ``itertools.islice``); skipped frames of a video file are still decoded.
    Yields:
        uint8 ``(3, H, W)`` RGB frames, in display order.
    Raises:
        FileNotFoundError: nothing at ``path``, or a folder without frames.
        VideoBackendMissing: a video file and PyAV is not installed.
        RuntimeError: FFmpeg cannot open the file or it has no video stream (on the first ``next``).
    """
    path = Path(path)
    if path.is_dir():
        frames = _folder_frames(path)
    elif path.is_file() and path.suffix.lower() == ".gif":
        frames = _gif_frames(path)
    elif path.is_file():
        frames = _decoded_frames(path, _import_av(f"reading the video file {path}"))
    else:
        raise FileNotFoundError(f"no frame folder or video file at {path}")
    return _sliced(frames, start, stop, step)


def _sliced(frames: Iterator[Tensor], start: int, stop: int | None, step: int) -> Iterator[Tensor]:
    # A generator of its own so that closing it (or breaking out of a loop over it) closes the
    # decoder's file at once rather than whenever the garbage collector runs.
    try:
        yield from itertools.islice(frames, start, stop, step)
    finally:
        frames.close()


def _as_hwc(frame: Tensor) -> np.ndarray:
    if frame.dim() != 3 or frame.shape[0] != 3 or frame.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 (3, H, W), got {frame.dtype} {tuple(frame.shape)}")
    return frame.detach().cpu().permute(1, 2, 0).contiguous().numpy()


def _write_gif(path: Path, frames: Iterator[np.ndarray], fps: float) -> int:
    first = next(frames, None)
    if first is None:
        raise ValueError("no frames to write")
    count = 1

    def rest() -> Iterator[Image.Image]:
        nonlocal count
        for array in frames:
            count += 1
            yield Image.fromarray(array)

    # GIF frame durations are whole centiseconds: 25 fps plays at 25, 30 fps at ~33.
    Image.fromarray(first).save(path, save_all=True, append_images=rest(), duration=round(1000 / fps), loop=0)
    return count


def _write_encoded(path: Path, frames: Iterator[np.ndarray], fps: float, crf: int, lossless: bool) -> int:
    av = _import_av(f"writing {path}")
    codec = ENCODERS[path.suffix.lower()]
    if lossless:
        if codec != "libx264":
            raise ValueError(f"lossless=True writes H.264: use .mp4, .mkv, .mov or .m4v, not {path.suffix}")
        # libx264rgb at qp 0 keeps RGB exactly; players other than FFmpeg-based ones may not open it.
        codec, pixel_format, options = "libx264rgb", "rgb24", {"qp": "0"}
    elif codec == "libx264":
        pixel_format, options = "yuv420p", {"crf": str(crf)}  # yuv420p: what every player decodes
    elif codec == "libvpx-vp9":
        pixel_format, options = "yuv420p", {"crf": str(crf), "b": "0"}  # b=0: constant quality mode
    else:
        pixel_format, options = "yuv420p", {}
    first = next(frames, None)
    if first is None:
        raise ValueError("no frames to write")
    height, width = first.shape[:2]
    if codec == "libx264" and pixel_format == "yuv420p" and (height % 2 or width % 2):
        # x264's 4:2:0 needs even sides; 4:4:4 keeps the exact size (FFmpeg-based players and
        # VLC play it, some browsers do not).
        pixel_format = "yuv444p"
        log.info("%s: odd frame size %dx%d, encoding H.264 in yuv444p", path, width, height)
    count = 0
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = width, height
        stream.pix_fmt = pixel_format
        stream.options = options
        for array in itertools.chain([first], frames):
            if array.shape[:2] != (height, width):
                raise ValueError(f"frame {count} is {array.shape[:2]}, the first was {(height, width)}")
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
            count += 1
        for packet in stream.encode():  # flush the encoder's delayed frames
            container.mux(packet)
    return count


def write_video(path: PathLike, frames: Iterable[Tensor] | Tensor, fps: float = 25.0, crf: int = 18,
                lossless: bool = False) -> Path:
    """Write frames as a video file, consuming ``frames`` one at a time.

    ``.mp4`` (also ``.mkv``, ``.mov``, ``.m4v``) is H.264 in yuv420p, playable everywhere
    (frames with an odd side are encoded in yuv444p instead, which x264 allows at any size);
    ``.webm`` is VP9, ``.avi`` MPEG-4 Part 2.
    These need PyAV; without it the frames go to ``<path stem>.gif`` (PIL) with a warning
    naming the install command. A ``.gif`` path always writes a GIF.

    Args:
        path: the file to write (its folder is created).
        frames: uint8 ``(3, H, W)`` frames of one size, or a uint8 ``(T, 3, H, W)`` tensor.
        fps: frames per second.
        crf: H.264 / VP9 constant-rate factor (0 best, 18 visually lossless, 23 x264's default).
        lossless: H.264 in RGB at qp 0 (libx264rgb): decodes back to exactly the frames written.
    Returns:
        The path written (``.gif`` when falling back).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix != ".gif" and suffix not in ENCODERS:
        raise ValueError(f"cannot write {path}: use one of {', '.join(['.gif', *ENCODERS])}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = (_as_hwc(frame) for frame in frames)
    if suffix != ".gif":
        try:
            _import_av(f"writing {path}")
        except VideoBackendMissing as error:
            path = path.with_suffix(".gif")
            log.warning("%s; writing %s instead", error, path)
    if path.suffix.lower() == ".gif":
        count = _write_gif(path, arrays, fps)
    else:
        count = _write_encoded(path, arrays, fps, crf, lossless)
    log.info("wrote %d frames to %s", count, path)
    return path
