"""TensorBoard logging: scalars and images read back exactly, hparams, purge on resume, rendering."""

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from patchwork.engine.tb_logging import (
    ExperimentLogger,
    read_images,
    read_scalars,
    render_attention_frame,
    render_memory,
)

RED, GREEN, YELLOW, BLACK = [255, 0, 0], [0, 255, 0], [255, 255, 0], [0, 0, 0]


def pixel(image, y, x):
    return image[:, y, x].tolist()


def test_scalars_read_back_exactly(tmp_path):
    with ExperimentLogger(tmp_path) as logger:
        for step in range(3):
            logger.scalars(
                {"losses/td": 0.5 * step, "charts/epsilon": torch.tensor(1.0 - 0.25 * step), "q/mean": 0.1 * step},
                step=step,
            )
        logger.scalars({"perf/frames_per_s": 1234.5}, step=10)
    curves = read_scalars(tmp_path)
    assert set(curves) == {"losses/td", "charts/epsilon", "q/mean", "perf/frames_per_s"}
    assert curves["losses/td"] == [(0, 0.0), (1, 0.5), (2, 1.0)]
    assert curves["charts/epsilon"] == [(0, 1.0), (1, 0.75), (2, 0.5)]
    # TensorBoard stores float32: 0.1 comes back as float32(0.1), exactly.
    assert curves["q/mean"] == [(step, float(np.float32(0.1 * step))) for step in range(3)]
    assert curves["perf/frames_per_s"] == [(10, 1234.5)]


def test_tags_must_be_namespaced(tmp_path):
    with ExperimentLogger(tmp_path) as logger, pytest.raises(ValueError, match="'loss' has no namespace"):
        logger.scalars({"loss": 1.0}, step=0)


def test_disabled_logger_does_nothing_and_creates_no_files(tmp_path):
    log_dir = tmp_path / "rank1"
    logger = ExperimentLogger(log_dir, enabled=False)
    logger.scalars({"losses/td": 1.0}, step=0)
    logger.hparams({"lr": 0.1}, {"hparams/reward": 0.5})
    logger.image("frames/input", torch.zeros(3, 4, 4), step=0)
    logger.attention_frame("frames/attention", torch.zeros(3, 4, 4), (0, 0, 2, 2), step=0)
    logger.memory_mosaic("memory/input", torch.zeros(3, 4, 4), step=0)
    logger.close()
    assert not log_dir.exists()


def test_purge_step_hides_what_a_killed_run_logged_after_its_checkpoint(tmp_path):
    with ExperimentLogger(tmp_path) as logger:
        for step in range(5):
            logger.scalars({"rewards/mean": float(step)}, step=step)
    # Killed after step 4, resumed from the checkpoint of step 3.
    with ExperimentLogger(tmp_path, purge_step=3) as logger:
        for step in range(3, 5):
            logger.scalars({"rewards/mean": 10.0 * step}, step=step)
    assert read_scalars(tmp_path)["rewards/mean"] == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]


def test_hparams_are_flattened_into_the_run_directory(tmp_path):
    config = {"optim": {"lr": 0.001, "name": "adam"}, "grid": [4, 2], "amp": True, "seed": 3, "ckpt": None}
    with ExperimentLogger(tmp_path) as logger:
        logger.hparams(config, {"hparams/final_reward": 0.25}, step=7)
    assert read_scalars(tmp_path) == {"hparams/final_reward": [(7, 0.25)]}
    accumulator = EventAccumulator(str(tmp_path))
    accumulator.Reload()
    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["optim.lr"].number_value == 0.001
    assert hparams["optim.name"].string_value == "adam"
    assert hparams["grid"].string_value == "[4, 2]"
    assert hparams["amp"].number_value == 1  # torch stores bools as numbers
    assert hparams["seed"].number_value == 3
    assert hparams["ckpt"].string_value == "None"
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []  # no timestamped sub-run


def test_attention_frame_draws_the_window_red_and_predictions_green():
    frame = torch.zeros(3, 32, 32)
    image = render_attention_frame(frame, (8, 8, 24, 24), boxes=torch.tensor([[2.0, 26.0, 6.0, 30.0]]))
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)
    # Window pixels x, y in [8, 24): its border lies on rows/columns 8 and 23.
    assert all(pixel(image, 8, x) == RED for x in range(8, 24))
    assert all(pixel(image, y, 23) == RED for y in range(8, 24))
    assert pixel(image, 7, 16) == BLACK and pixel(image, 24, 16) == BLACK and pixel(image, 16, 16) == BLACK
    assert pixel(image, 26, 4) == GREEN and pixel(image, 28, 4) == BLACK
    # A full-frame window (M = N = 1) keeps its whole border inside the image.
    full = render_attention_frame(torch.ones(3, 32, 32), torch.tensor([0, 0, 32, 32]))
    assert pixel(full, 0, 0) == RED and pixel(full, 31, 31) == RED and pixel(full, 16, 16) == [255, 255, 255]


def test_attention_frame_ground_truth_and_mask():
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[4:8, 4:8] = True
    image = render_attention_frame(
        torch.zeros(3, 16, 16), (0, 0, 8, 8), ground_truth=torch.tensor([[10.0, 10.0, 14.0, 14.0]]), mask=mask
    )
    assert pixel(image, 10, 12) == YELLOW
    assert pixel(image, 5, 5) == [0, round(0.4 * 255), 0]  # 40 % green over black
    assert pixel(image, 12, 4) == BLACK


def test_render_memory_channel_mean_normalised_and_upsampled_nearest():
    means = torch.tensor([[0.0, 1.0], [2.0, 4.0]])
    memory = means + torch.tensor([-1.0, 1.0, -2.0, 2.0]).view(4, 1, 1)  # channel mean == means
    image = render_memory(memory, size=(4, 4))
    expected = torch.tensor([[0, 64], [128, 255]], dtype=torch.uint8).repeat_interleave(2, 0).repeat_interleave(2, 1)
    assert torch.equal(image, expected.expand(3, 4, 4))
    assert render_memory(memory).shape == (3, 256, 256)  # default: integer factor, longer side >= 256
    assert render_memory(torch.full((8, 3, 5), 7.0)).eq(0).all()  # constant memory: black, no NaN


def test_render_memory_rgb_undoes_per_channel_normalisation():
    pattern = (torch.rand(6, 10) > 0.5).float()
    pattern[0, 0], pattern[0, 1] = 0.0, 1.0
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    memory = (pattern - mean.view(3, 1, 1)) / std.view(3, 1, 1)  # the input cell holds normalised pixels
    image = render_memory(memory, size=(6, 10), window_box=(0, 0, 4, 4))
    assert torch.equal(image[:, 4:, 4:], (pattern[4:, 4:] * 255).to(torch.uint8).expand(3, -1, -1))
    assert pixel(image, 0, 2) == RED  # window border on top


def test_images_read_back_exactly(tmp_path):
    frame = torch.rand(3, 24, 32)
    memory = torch.rand(5, 3, 4)
    boxes = torch.tensor([[1.0, 1.0, 10.0, 12.0]])
    with ExperimentLogger(tmp_path) as logger:
        logger.attention_frame("frames/attention", frame, (16, 0, 32, 12), boxes, step=4)
        logger.memory_mosaic("memory/input", memory, step=4, size=(24, 32), window_box=(16, 0, 32, 12))
        logger.image("frames/raw", frame, step=5)
    images = read_images(tmp_path)
    assert [step for step, _ in images["frames/attention"]] == [4]
    assert torch.equal(images["frames/attention"][0][1], render_attention_frame(frame, (16, 0, 32, 12), boxes))
    assert torch.equal(images["memory/input"][0][1], render_memory(memory, (24, 32), (16, 0, 32, 12)))
    assert torch.equal(images["frames/raw"][0][1], (frame * 255).round().to(torch.uint8))
