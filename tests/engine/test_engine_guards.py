"""Guards: non-finite losses stop the run with a useful message; skipped samples are counted and logged."""

import logging
import math
from pathlib import Path

import pytest
import torch

from patchwork.engine.guards import NonFiniteLossError, SkipCounter, TooManySkipsError, check_finite


def test_finite_losses_pass():
    check_finite(torch.tensor(0.25), step=3, last_checkpoint=None)
    check_finite(1e30, step=3, last_checkpoint=None)
    check_finite({"losses/td": torch.tensor([0.1, 0.2]), "losses/task": 2.0}, step=3, last_checkpoint=None)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_loss_names_step_value_and_checkpoint(value, tmp_path):
    checkpoint = tmp_path / "last.pt"
    with pytest.raises(NonFiniteLossError) as caught:
        check_finite(torch.tensor(value), step=1200, last_checkpoint=checkpoint)
    error = caught.value
    assert (error.step, error.last_checkpoint, error.name) == (1200, str(checkpoint), "loss")
    assert math.isnan(error.value) if math.isnan(value) else error.value == value
    assert f"non-finite loss {value} at step 1200" in str(error)
    assert f"last good checkpoint: {checkpoint}" in str(error)


def test_non_finite_loss_before_any_checkpoint_and_named_loss():
    losses = {"losses/task": torch.tensor(0.5), "losses/td": torch.tensor([0.1, float("inf"), float("nan")])}
    with pytest.raises(NonFiniteLossError, match=r"non-finite losses/td inf at step 7; last good checkpoint: none yet"):
        check_finite(losses, step=7, last_checkpoint=None)


def test_skip_counter_counts_by_reason_and_logs_each_path(caplog):
    counter = SkipCounter()
    with caplog.at_level(logging.WARNING, logger="patchwork.engine.guards"):
        counter.skip("unreadable image", Path("vid/a/000001.JPEG"), OSError("truncated"))
        counter.skip("no objects", "coco/123")
        counter.skip("unreadable image", "vid/a/000007.JPEG")
    assert counter.counts == {"unreadable image": 2, "no objects": 1}
    assert counter.total == 3
    assert counter.summary() == "3 skipped: unreadable image 2, no objects 1"
    assert [record.getMessage() for record in caplog.records] == [
        "skipped vid/a/000001.JPEG (unreadable image, 1 so far): truncated",
        "skipped coco/123 (no objects, 1 so far)",
        "skipped vid/a/000007.JPEG (unreadable image, 2 so far)",
    ]
    resumed = SkipCounter()
    resumed.load_state_dict(counter.state_dict())
    assert resumed.counts == counter.counts and SkipCounter().summary() == "0 skipped"


def test_skip_counter_limit_turns_broken_data_into_an_error():
    counter = SkipCounter(limit=2)
    counter.skip("unreadable image", "a.jpg")
    counter.skip("unreadable image", "b.jpg")
    message = "skipped 3 samples, more than the limit 2: 3 skipped: unreadable image 3"
    with pytest.raises(TooManySkipsError, match=message):
        counter.skip("unreadable image", "c.jpg")


def test_a_schedule_the_scheduler_cannot_run_is_a_clear_error(tmp_path, monkeypatch):
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from patchwork.engine.train import train

    monkeypatch.setenv("PATCHWORK_DATA_CACHE", str(tmp_path / "cache"))
    configs = Path(__file__).resolve().parents[2] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        # OneCycleLR's warm-up of pct_start * steps = 0.25 * 4 = 1 step divides by zero inside torch.
        cfg = compose(config_name="train", overrides=["experiment=test_tiny", "device=cpu", "stage=[stage1]",
                                                      "optim.scheduler.pct_start=0.25", f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(ValueError, match="stage1: the scheduler .*OneCycleLR cannot run 4 steps"):
        train(cfg)
