"""Notebook API: load a checkpoint, stream a folder / tensor / video file."""

from __future__ import annotations

import sys

import pytest
import torch
import torchvision
from torchvision.io import write_png

import patchwork.api as api
from patchwork.data.video_io import VideoBackendMissing, read_video_frames, write_video
from patchwork.engine.checkpoint import make_payload, save_checkpoint
from patchwork.models.baselines import rescale_prediction
from patchwork.models.builders import patchwork_detector
from patchwork.nn import WindowGrid

MODEL = {"_target_": "patchwork.models.builders.patchwork_detector", "grid": [4, 2], "width_mult": 0.35,
         "num_classes": 3}
SOURCE_SIZE = (96, 160)  # (H, W) of the frames; the model runs at 128x128


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def checkpoint(path, model, stage="stage3"):
    config = {"model": MODEL, "data": {"image_size": [128, 128]},
              "stage": {"stage1": {"_target_": "patchwork.engine.stages.SupervisedStage", "model_overrides": {"grid": [1, 1]}},
                        "stage3": {"_target_": "patchwork.engine.stages.PolicyStage"}}}
    return save_checkpoint(path, make_payload(step=7, stage=stage, config=config, models={"model": model}))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    model = patchwork_detector((4, 2), width_mult=0.35, num_classes=3)
    return model, checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt", model)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    folder = tmp_path_factory.mktemp("frames")
    video = torch.randint(0, 256, (5, 3, *SOURCE_SIZE), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    for t, frame in enumerate(video):
        write_png(frame, str(folder / f"{t:04d}.png"))
    (folder / "notes.txt").write_text("not a frame")
    return folder, video


def test_load_rebuilds_the_checkpoint_model(trained):
    model, path = trained
    loaded = api.load(path, device="cpu")
    assert loaded.image_size == (128, 128) and loaded.task == "detection" and loaded.stage == "stage3"
    assert loaded.model.grid == WindowGrid(4, 2) and not loaded.model.training and loaded.untrained == []
    state = model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in loaded.model.state_dict().items())


def test_stage1_checkpoint_loads_single_frame_or_into_a_grid(tmp_path):
    single = patchwork_detector((1, 1), width_mult=0.35, num_classes=3)
    path = checkpoint(tmp_path / "stage1.pt", single, stage="stage1")
    assert api.load(path).model.grid == WindowGrid(1, 1)
    placed = api.load(path, grid=(4, 2))
    assert placed.model.grid == WindowGrid(4, 2) and placed.untrained and all(
        k.startswith("attention.") for k in placed.untrained)
    with pytest.raises(ValueError, match="does not fit"):
        api.load(path, width_mult=0.5)


def test_stream_a_folder_of_frames(trained, frames):
    model, path = trained
    folder, video = frames
    loaded = api.load(path)
    records = list(api.stream(loaded, folder, policy="dqn"))
    assert [r.index for r in records] == list(range(5))
    grid_boxes = WindowGrid(4, 2).boxes((128, 128)).float()
    scale = torch.tensor([160 / 128, 96 / 128] * 2)
    for record in records:
        assert 0 <= record.window < 9
        assert record.window_box == tuple((grid_boxes[record.window] * scale).tolist())
        boxes = record.predictions["boxes"]
        assert boxes.shape[1] == 4 and len(boxes) > 0
        assert (boxes[:, 0::2] <= 160).all() and (boxes[:, 1::2] <= 96).all() and (boxes >= 0).all()
        assert record.mflops > 0
    # The same frames as a tensor, without FLOP counting: the same windows and predictions.
    again = list(api.stream(loaded, video, policy="dqn", measure_flops=False))
    assert [r.window for r in again] == [r.window for r in records]
    torch.testing.assert_close(again[-1].predictions["boxes"], records[-1].predictions["boxes"])
    # Predictions are the model's at 128x128, scaled to the source.
    model.eval()
    with torch.no_grad():
        state = model.init_state(1, (128, 128))
        resized = torchvision.transforms.v2.functional.resize(video[0], [128, 128], antialias=True)[None]
        out = model(resized, torch.tensor([records[0].window]), state)
    expected = rescale_prediction(out.predictions[0], (128, 128), SOURCE_SIZE)
    torch.testing.assert_close(records[0].predictions["boxes"], expected["boxes"])


def test_stream_hand_designed_policies(trained, frames):
    loaded = api.load(trained[1])
    windows = [r.window for r in api.stream(loaded, frames[1], policy="scanning", measure_flops=False)]
    assert windows == [0, 1, 2, 3, 4]
    fixed = [r.window for r in api.stream(loaded, frames[1][:2], policy="fixed", window=5, measure_flops=False)]
    assert fixed == [5, 5]


def test_stream_a_video_file(trained, frames, tmp_path, monkeypatch):
    pytest.importorskip("av")  # the `video` extra (in `dev`, so CI has it)
    loaded = api.load(trained[1])
    movie = write_video(tmp_path / "clip.mp4", frames[1][:3], fps=10, lossless=True)
    from_file = list(api.stream(loaded, movie, policy="scanning", measure_flops=False))
    from_tensor = list(api.stream(loaded, frames[1][:3], policy="scanning", measure_flops=False))
    assert [f.window for f in from_file] == [f.window for f in from_tensor] == [0, 1, 2]
    for a, b in zip(from_file, from_tensor):  # lossless: the same pixels, so the same predictions
        assert a.window_box == b.window_box
        assert all(torch.equal(a.predictions[k], b.predictions[k]) for k in b.predictions)
    monkeypatch.setitem(sys.modules, "av", None)  # the extra absent: the error names the install
    with pytest.raises(VideoBackendMissing, match=r"pip install -e '\.\[video\]'"):
        next(api.stream(loaded, movie))
    with pytest.raises(FileNotFoundError):
        next(api.stream(loaded, tmp_path / "missing"))


def test_annotate_writes_a_playable_video_with_every_frame_drawn(trained, frames, tmp_path):
    pytest.importorskip("av")
    loaded = api.load(trained[1])
    grey = torch.full((4, 3, *SOURCE_SIZE), 128, dtype=torch.uint8)  # nothing red but what is drawn
    source = write_video(tmp_path / "clip.mp4", grey, fps=10, lossless=True)
    path = api.annotate(loaded, source, tmp_path / "out" / "annotated.mp4", policy="scanning", fps=10,
                        score_threshold=1.0)
    decoded = list(read_video_frames(path))
    # Every source frame once, at the source's size plus the 40-pixel cost strip.
    assert len(decoded) == 4 and all(f.shape == (3, SOURCE_SIZE[0] + 40, SOURCE_SIZE[1]) for f in decoded)
    # Window 0 of the 4x2 grid is the top-left quarter: its red outline is drawn there on frame 0, and
    # nowhere in the bottom-right quarter (scanning: windows 0, 1, 2, 3 on frames 0-3).
    red = lambda f: (f[0].int() - f[1].int() > 100) & (f[0].int() - f[2].int() > 100)  # noqa: E731
    assert red(decoded[0][:, : SOURCE_SIZE[0] // 2, : SOURCE_SIZE[1] // 2]).sum() > 20
    assert red(decoded[0][:, SOURCE_SIZE[0] // 2 + 8 : SOURCE_SIZE[0], SOURCE_SIZE[1] // 2 + 8 :]).sum() == 0


def test_a_suspended_stream_leaves_the_callers_grad_mode_alone(trained, frames):
    loaded = api.load(trained[1])
    first = api.stream(loaded, frames[1], policy="scanning", measure_flops=False)
    second = api.stream(loaded, frames[1], policy="scanning", measure_flops=False)
    next(first), next(second), next(first)
    assert torch.is_grad_enabled()
    del first, second
    assert torch.is_grad_enabled()


def test_a_wrapped_baseline_streams_its_keyframe_schedule(tmp_path, frames):
    folder, video = frames
    torch.manual_seed(0)
    single = patchwork_detector((1, 1), width_mult=0.35, num_classes=3)
    loaded = api.load(checkpoint(tmp_path / "sf.pt", single, stage="stage1"))
    plain = list(api.stream(loaded, video, policy="fixed"))
    held = list(api.stream(api.wrap(loaded, interval=2), video, policy="fixed"))
    # Keyframes 0, 2, 4 are the plain model's output; frames 1 and 3 hold the keyframe before them.
    for t, expected in enumerate([0, 0, 2, 2, 4]):
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(held[t].predictions[key], plain[expected].predictions[key])
    assert [f.mflops for f in held] == [plain[0].mflops, 0.0, plain[0].mflops, 0.0, plain[0].mflops]
    assert plain[0].mflops > 0


LFS_MODEL = {"_target_": "patchwork.models.builders.looking_fast_slow_detector", "num_classes": 3,
             "image_size": [128, 128], "width_f0": 0.5, "state_channels": 32, "extra_channels": [32, 32, 32, 32]}
BLOCKCOPY_MODEL = {"_target_": "patchwork.models.blockcopy.BlockCopyModel", "block_size": 32, "policy_width": 0.25,
                   "policy_head_layers": 1, "width_mult": 0.35, "target_cost": 0.5,
                   "task_model": {"_target_": "patchwork.models.builders.patchwork_detector", "grid": [1, 1],
                                  "width_mult": 0.35, "num_classes": 3}}


def _method_checkpoint(path, config, stage):
    from hydra.utils import instantiate

    torch.manual_seed(0)
    model = instantiate(config)
    payload = make_payload(step=1, stage=stage, config={"model": config, "data": {"image_size": [128, 128]},
                                                        "stage": {stage: {}}}, models={"model": model})
    return save_checkpoint(path, payload)


def test_an_lfs_checkpoint_streams_with_its_extractor_as_the_action(tmp_path, frames):
    from patchwork.policies import FixedInterleavingPolicy

    _, video = frames
    loaded = api.load(_method_checkpoint(tmp_path / "lfs.pt", LFS_MODEL, "lfs_policy"))
    records = list(api.stream(loaded, video, policy=FixedInterleavingPolicy(2)))
    assert [int(r.action) for r in records] == [0, 1, 1, 0, 1]  # f0 on frames 0 and tau + 1
    assert [r.overlay["text"] for r in records] == ["f0", "f1, f0 1 frame ago", "f1, f0 2 frames ago", "f0",
                                                    "f1, f0 1 frame ago"]
    f0, f1 = records[0].mflops, records[1].mflops
    assert f0 > 2 * f1 > 0 and records[3].mflops == f0 and records[4].mflops == f1
    assert all(r.predictions["boxes"].shape[-1] == 4 for r in records)


def test_a_blockcopy_checkpoint_streams_with_its_executed_blocks_as_the_action(tmp_path, frames):
    _, video = frames
    loaded = api.load(_method_checkpoint(tmp_path / "blockcopy.pt", BLOCKCOPY_MODEL, "blockcopy_policy"))
    records = list(api.stream(loaded, video, policy="bernoulli"))
    assert records[0].action.shape == (4, 4) and bool(records[0].action.all())  # a video's first frame runs every block
    assert all(torch.equal(r.overlay["blocks"], r.action.bool()) for r in records)
    # Fewer executed blocks cost fewer FLOPs: the count follows the blocks as run.
    executed = [int(r.action.sum()) for r in records]
    for a, b in zip(records, records[1:]):
        if int(a.action.sum()) > int(b.action.sum()):
            assert a.mflops > b.mflops
    assert min(executed) < 16
