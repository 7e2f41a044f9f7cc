"""Checkpoints: atomic writes (also under SIGKILL), complete resume, last/best bookkeeping, RNG state."""

import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

from patchwork.engine.checkpoint import (
    CheckpointError,
    CheckpointManager,
    load_checkpoint,
    make_payload,
    restore_payload,
    save_checkpoint,
)
from patchwork.engine.reproducibility import rng_state, seed_everything, set_rng_state
from patchwork.rl.replay_buffer import ReplayBuffer

SPEC = {"memory": ((2, 3, 3), torch.float32), "history": ((4,), torch.float32)}


def draw_everything(generator: torch.Generator) -> tuple:
    """One draw from every RNG a run uses."""
    return (
        random.random(),
        random.gauss(0, 1),
        np.random.rand(3).tolist(),
        np.random.randn(2).tolist(),  # leaves numpy with a cached Gaussian
        torch.rand(3).tolist(),
        torch.randint(0, 1000, (4,), generator=generator).tolist(),
    )


def test_rng_state_restores_every_stream_exactly(tmp_path):
    seed_everything(123)
    generator = torch.Generator().manual_seed(9)
    draw_everything(generator)
    state = rng_state({"replay": generator})
    expected = [draw_everything(generator) for _ in range(3)]
    seed_everything(999)  # move every stream elsewhere
    generator.manual_seed(1)
    draw_everything(generator)
    set_rng_state(state, {"replay": generator})
    assert [draw_everything(generator) for _ in range(3)] == expected
    # Also after a save/load round trip (weights_only loading).
    save_checkpoint(tmp_path / "rng.pt", {"rng": state})
    draw_everything(generator)
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"], {"replay": generator})
    assert [draw_everything(generator) for _ in range(3)] == expected


def test_seed_everything_is_repeatable_and_unknown_generator_is_named():
    generator = torch.Generator().manual_seed(0)
    seed_everything(5)
    first = draw_everything(generator)
    seed_everything(5)
    generator.manual_seed(0)
    assert draw_everything(generator) == first
    with pytest.raises(KeyError, match="'policy'"):
        set_rng_state(rng_state(), {"policy": generator})


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.bn(self.conv(x)).relu().mean(dim=(2, 3)))


def make_job(seed):
    """A model, optimizer, scheduler, replay buffer and sampling generator, as a stage holds them."""
    torch.manual_seed(seed)
    model = TinyNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    buffer = ReplayBuffer(16, SPEC)
    generator = torch.Generator().manual_seed(seed)
    return model, optimizer, scheduler, buffer, generator


def train_step(model, optimizer, scheduler, buffer, generator):
    """Add random transitions, sample a batch with the generator and take one optimizer step."""
    obs = {"memory": torch.rand(3, 2, 3, 3), "history": torch.rand(3, 4)}
    buffer.add(obs, torch.randint(0, 3, (3,)), torch.rand(3), obs, torch.zeros(3, dtype=torch.bool))
    batch = buffer.sample(4, generator)
    q = model(batch["obs"]["memory"] + 0.01 * np.random.randn())  # numpy stream feeds the data too
    loss = (q.gather(1, batch["actions"][:, None]).squeeze(1) - batch["rewards"]).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()


def test_resume_reaches_the_same_parameters_as_an_uninterrupted_run(tmp_path):
    seed_everything(0)
    job = make_job(seed=0)
    for _ in range(3):
        train_step(*job)
    model, optimizer, scheduler, buffer, generator = job
    payload = make_payload(
        step=3,
        stage="stage2",
        config={"optim": {"lr": 1e-2}, "grid": [4, 2]},
        models={"q": model},
        optimizers={"q": optimizer},
        schedulers={"q": scheduler},
        replay_buffer=buffer,
        generators={"replay": generator},
        extra={"frames_seen": 9},
    )
    save_checkpoint(tmp_path / "ckpt.pt", payload)
    for _ in range(3):
        train_step(*job)  # the uninterrupted run

    seed_everything(1)  # a fresh process with different RNG streams and weights
    resumed = make_job(seed=1)
    loaded = load_checkpoint(tmp_path / "ckpt.pt")
    assert loaded["stage"] == "stage2" and loaded["extra"] == {"frames_seen": 9}
    assert loaded["config"] == {"optim": {"lr": 1e-2}, "grid": [4, 2]}
    step = restore_payload(
        loaded,
        models={"q": resumed[0]},
        optimizers={"q": resumed[1]},
        schedulers={"q": resumed[2]},
        replay_buffer=resumed[3],
        generators={"replay": resumed[4]},
    )
    assert step == 3
    for _ in range(3):
        train_step(*resumed)
    for (name, expected), actual in zip(model.state_dict().items(), resumed[0].state_dict().values()):
        assert torch.equal(expected, actual), name
    assert scheduler.get_last_lr() == resumed[2].get_last_lr() == [1e-2 * 0.5**3]


def test_restore_names_mismatched_parts():
    model, optimizer, *_ = make_job(seed=0)
    payload = make_payload(step=0, stage="stage1", config={}, models={"backbone": model}, optimizers={"sgd": optimizer})
    with pytest.raises(CheckpointError, match=r"models are \['backbone'\], this run has \['q'\]"):
        restore_payload(payload, models={"q": model})
    # None skips a part: stage 2 starts from stage 1's weights only.
    assert restore_payload(payload, models={"backbone": model}, restore_rng=False) == 0


def test_load_errors_name_the_path(tmp_path):
    missing = tmp_path / "nope" / "last.pt"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_checkpoint(missing)
    good = save_checkpoint(tmp_path / "good.pt", {"step": 1, "weights": torch.arange(1000.0)})
    torn = tmp_path / "torn.pt"
    torn.write_bytes(good.read_bytes()[:500])
    with pytest.raises(CheckpointError, match=str(torn)):
        load_checkpoint(torn)


def test_unloadable_values_are_rejected_before_writing(tmp_path):
    path = tmp_path / "last.pt"
    with pytest.raises(TypeError, match=r"payload\['extra'\]\['reward'\] has type numpy.float64"):
        save_checkpoint(path, {"step": 1, "extra": {"reward": np.float64(0.5)}})
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "last.pt", {"step": 1, "w": torch.ones(10)})
    before = path.read_bytes()

    def crash_midway(obj, file):
        file.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2, "w": torch.zeros(10)})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left


WRITER = """
import sys, torch
from patchwork.engine.checkpoint import save_checkpoint
path, version = sys.argv[1], 0
while True:
    save_checkpoint(path, {"version": version, "data": torch.full((2_000_000,), float(version))})
    print(version, flush=True)
    version += 1
"""


def test_sigkill_during_saves_leaves_a_complete_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "0"  # first checkpoint complete
        writer.stdout.readline()
        time.sleep(0.05)  # the writer spends nearly all its time inside save_checkpoint
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait()
    payload = load_checkpoint(path)
    assert payload["version"] >= 1
    assert torch.equal(payload["data"], torch.full((2_000_000,), float(payload["version"])))
    # The manager clears what a killed writer left behind.
    (tmp_path / ".last.pt.abc123.tmp").write_bytes(b"torn")
    CheckpointManager(tmp_path).save({"version": -1}, step=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_manager_keeps_last_and_best_and_resumes_the_best_metric(tmp_path):
    manager = CheckpointManager(tmp_path / "run")
    assert manager.latest() is None and manager.best() is None
    for step, metric in [(1, 0.5), (2, 0.3), (3, 0.7), (4, float("nan")), (5, None)]:
        manager.save({"weights": torch.full((3,), float(step))}, step=step, metric=metric)
        assert load_checkpoint(manager.latest())["step"] == step
    best = load_checkpoint(manager.best())
    assert (best["step"], best["metric"], best["best_metric"]) == (3, 0.7, 0.7)
    assert torch.equal(best["weights"], torch.full((3,), 3.0))  # later saves of last.pt left it intact
    assert load_checkpoint(manager.latest())["best_metric"] == 0.7

    resumed = CheckpointManager(tmp_path / "run")
    assert resumed.best_metric is None
    assert resumed.resume()["step"] == 5
    assert resumed.best_metric == 0.7
    resumed.save({}, step=6, metric=0.6)  # worse than the pre-resume best: best.pt stays at step 3
    assert load_checkpoint(resumed.best())["step"] == 3
    resumed.save({"step": 7}, step=7, metric=0.8)
    assert load_checkpoint(resumed.best())["step"] == 7
    with pytest.raises(ValueError, match="disagrees"):
        resumed.save({"step": 8}, step=9)


def test_manager_lower_is_better(tmp_path):
    manager = CheckpointManager(tmp_path, higher_is_better=False)
    for step, loss in enumerate([2.0, 1.0, 1.5, 1.0]):
        manager.save({}, step=step, metric=loss)
    assert (load_checkpoint(manager.best())["step"], manager.best_metric) == (1, 1.0)  # ties do not replace
    manager.save({}, step=4, metric=5.0, higher_is_better=True)  # per-call override
    assert load_checkpoint(manager.best())["step"] == 4
