"""Video files in and out: lazy decoding of mp4 / webm / avi / GIF / frame folders, the mp4
writer and its GIF fallback without the ``video`` extra."""

from __future__ import annotations

import sys

import pytest
import torch
from torchvision.io import write_png

from patchwork.data.video_io import VideoBackendMissing, read_video_frames, write_video

SIZE = (18, 26)  # (H, W); even, so 4:2:0 H.264 keeps it


def moving_square(frames: int = 6, size: tuple[int, int] = SIZE) -> torch.Tensor:
    """uint8 ``(T, 3, H, W)``: a grey background with a bright square moving one pixel per frame,
    smooth enough that a lossy codec keeps it close."""
    video = torch.full((frames, 3, *size), 60, dtype=torch.uint8)
    for t in range(frames):
        video[t, 0, 4:12, 2 + t:10 + t] = 220
        video[t, 2, :, :] = 30 + 10 * t
    return video


@pytest.fixture
def av():
    return pytest.importorskip("av")  # the `video` extra (in `dev`, so CI has it)


def encode_mp4(path, video: torch.Tensor, fps: int = 10) -> None:
    """Write ``video`` with PyAV directly (libx264rgb at qp 0: lossless RGB), independently of write_video."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264rgb", rate=fps)
        stream.width, stream.height, stream.pix_fmt = video.shape[-1], video.shape[-2], "rgb24"
        stream.options = {"qp": "0"}
        for frame in video:
            array = frame.permute(1, 2, 0).contiguous().numpy()
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_a_lossless_mp4_decodes_to_the_frames_written(av, tmp_path):
    video = moving_square()
    encode_mp4(tmp_path / "clip.mp4", video)
    frames = read_video_frames(tmp_path / "clip.mp4")
    assert not isinstance(frames, (list, tuple))  # an iterator: decoded one frame at a time
    decoded = list(frames)
    assert all(f.dtype == torch.uint8 and f.shape == (3, *SIZE) for f in decoded)
    assert torch.equal(torch.stack(decoded), video)
    assert torch.equal(torch.stack(list(read_video_frames(tmp_path / "clip.mp4", start=1, stop=5, step=2))),
                       video[1:5:2])


def test_decoding_stops_early_without_reading_the_rest(av, tmp_path):
    video = moving_square(frames=8)
    encode_mp4(tmp_path / "clip.mp4", video)
    frames = read_video_frames(tmp_path / "clip.mp4")
    assert torch.equal(next(frames), video[0])
    frames.close()  # closes the container now (no file handle left to the garbage collector)
    assert next(frames, None) is None


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".avi"])
def test_write_video_writes_a_playable_file(av, tmp_path, suffix):
    video = moving_square()
    path = write_video(tmp_path / f"out{suffix}", iter(video), fps=12)
    assert path == tmp_path / f"out{suffix}"
    with av.open(str(path)) as container:  # the container says what a player will see
        stream = container.streams.video[0]
        assert (stream.codec_context.height, stream.codec_context.width) == SIZE
        assert stream.average_rate == 12
    decoded = torch.stack(list(read_video_frames(path)))
    assert decoded.shape == video.shape and decoded.dtype == torch.uint8
    again = torch.stack(list(read_video_frames(path)))
    assert torch.equal(decoded, again)  # decoding is deterministic
    # Lossy, but the picture survives: mean absolute error of a few grey levels out of 255.
    assert (decoded.float() - video.float()).abs().mean() < 8


def test_write_video_mp4_defaults_to_yuv420p_and_lossless_is_exact(av, tmp_path):
    video = moving_square()
    with av.open(str(write_video(tmp_path / "a.mp4", video))) as container:
        assert container.streams.video[0].codec_context.name in ("h264", "libx264")
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"
    exact = torch.stack(list(read_video_frames(write_video(tmp_path / "b.mp4", video, lossless=True))))
    assert torch.equal(exact, video)
    odd = moving_square(size=(17, 25))  # 4:2:0 needs even sides: written in 4:4:4 at the exact size
    assert torch.stack(list(read_video_frames(write_video(tmp_path / "odd.mp4", odd)))).shape == odd.shape


def test_write_video_falls_back_to_gif_without_the_extra(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    video = moving_square(frames=4)
    path = write_video(tmp_path / "out.mp4", video, fps=10)
    assert path == tmp_path / "out.gif" and path.is_file()
    assert "pip install -e '.[video]'" in caplog.text
    decoded = torch.stack(list(read_video_frames(path)))  # GIFs read back through PIL
    assert decoded.shape == video.shape
    # A GIF palette holds these few colours exactly.
    assert torch.equal(decoded, video)


def test_reading_a_video_file_without_the_extra_names_the_install(tmp_path, monkeypatch):
    (tmp_path / "clip.webm").write_bytes(b"\x1a\x45\xdf\xa3")
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(VideoBackendMissing, match=r"pip install -e '\.\[video\]'"):
        next(read_video_frames(tmp_path / "clip.webm"))


def test_a_frame_folder_reads_in_name_order_and_ignores_other_files(tmp_path):
    video = moving_square(frames=3)
    for t in (2, 0, 1):
        write_png(video[t], str(tmp_path / f"{t:05d}.png"))
    (tmp_path / "notes.txt").write_text("not a frame")
    assert torch.equal(torch.stack(list(read_video_frames(tmp_path))), video)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .* frames"):
        next(read_video_frames(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError):
        read_video_frames(tmp_path / "missing")


def test_bad_inputs_are_refused(av, tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "a.mp4", torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="first was"):
        write_video(tmp_path / "b.mp4", [torch.zeros(3, 8, 8, dtype=torch.uint8),
                                         torch.zeros(3, 6, 8, dtype=torch.uint8)])
    with pytest.raises(ValueError, match="cannot write"):
        write_video(tmp_path / "c.xyz", moving_square())
    (tmp_path / "junk.mp4").write_bytes(b"not really a video")
    with pytest.raises(RuntimeError, match="cannot open"):
        next(read_video_frames(tmp_path / "junk.mp4"))
