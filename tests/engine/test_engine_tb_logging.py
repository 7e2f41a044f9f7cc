"""TensorBoard logging: scalars and images read back exactly, hparams, purge on resume (the drawing
itself is tested in tests/test_render.py)."""

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from patchwork.engine.tb_logging import ExperimentLogger, read_images, read_scalars
from patchwork.render import render_attention_frame, render_memory

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
