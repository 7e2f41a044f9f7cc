"""BlockCopy's policy stage on the engine: a run killed mid-stage and resumed reaches exactly the
uninterrupted run's policy, learner optimiser and running cost; only the policy's parameters move."""

from __future__ import annotations

import subprocess

import pytest
import torch
from test_engine_train_resume import ROOT, TIMEOUT_S, run_environment, run_to_completion, start_and_kill, train_command

from patchwork.engine.checkpoint import load_checkpoint

EXPERIMENT = "experiment=blockcopy_test_tiny"
STAGE = "blockcopy_policy"


def _equal(a, b) -> bool:
    """Nested containers of tensors and plain values, tensors compared exactly."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.slow
def test_blockcopy_policy_stage_killed_and_resumed_is_exact_and_moves_only_the_policy(tmp_path):
    env = run_environment(tmp_path / "cache")
    reference = tmp_path / "uninterrupted"
    with open(tmp_path / "uninterrupted.log", "w") as log:
        twin = subprocess.Popen(train_command(reference, EXPERIMENT), env=env, cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            run_dir = tmp_path / "run"
            start_and_kill(run_dir, env, run_dir / "checkpoints" / STAGE / "last.pt", EXPERIMENT)
            killed = load_checkpoint(run_dir / "checkpoints" / STAGE / "last.pt")
            assert killed["step"] >= 1 and not killed["extra"].get("complete")
            run_to_completion(run_dir, env, EXPERIMENT, "resume=true")
            assert twin.wait(timeout=TIMEOUT_S) == 0
        finally:
            twin.kill()
            twin.wait()
    ours = load_checkpoint(run_dir / "checkpoints" / STAGE / "last.pt")
    theirs = load_checkpoint(reference / "checkpoints" / STAGE / "last.pt")
    assert ours["extra"]["complete"] and theirs["extra"]["complete"]
    assert _equal(ours["models"], theirs["models"])
    assert _equal(ours["learners"], theirs["learners"])  # RMSprop's state and the running cost M
    assert theirs["learners"]["reward"]["cost_average"].shape == (2,)
    # The task network is the stage-1 model's, exactly; the policy network has learnt.
    stage1 = load_checkpoint(reference / "checkpoints" / "stage1" / "last.pt")["models"]["model"]
    final = theirs["models"]["model"]
    policy = {k for k in final if k.startswith("policy_net.")}
    assert policy and all(torch.equal(final[k], stage1[k]) for k in final if k not in policy)
    assert any(not torch.equal(final[k], stage1[k]) for k in policy if final[k].is_floating_point())
