"""End to end: ``torchrun --nproc_per_node=2 scripts/train.py`` (CPU, gloo) keeps the two ranks'
parameters identical after every optimiser step of every stage: Patchwork's three (``test_tiny``) and
Looking Fast and Slow's two (``lfs_test_tiny``).

``debug.dump_parameters=DIR`` makes every rank write its flattened parameters after every step as
``DIR/<stage>_rank<r>_step<k>.pt``; the ranks train on different shards of the data, so equal
parameters mean the gradients really were averaged (DDP in stage 1, explicit all-reduce in the
recurrent stages) and the ranks started from the same weights.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "scripts" / "train.py"
STAGES = {"test_tiny": ("stage1", "stage2", "stage3"), "lfs_test_tiny": ("lfs_detection", "lfs_policy")}
STEPS = {
    experiment: {stage: int(OmegaConf.load(ROOT / "configs" / "experiment" / f"{experiment}.yaml").stage[stage].steps)
                 for stage in stages}
    for experiment, stages in STAGES.items()
}
WORLD_SIZE = 2

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=sorted(STAGES))
def run(request, tmp_path_factory) -> tuple[str, dict[tuple[str, int, int], torch.Tensor]]:
    """Run an experiment's stages under torchrun once; ``(experiment, {(stage, rank, step): flat parameters})``."""
    experiment = request.param
    root = tmp_path_factory.mktemp("ddp_train")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT", "LOCAL_WORLD_SIZE", "GROUP_RANK")}
    # CPU + gloo as on a CPU-only CI machine; one intra-op thread per rank on a 2-core machine.
    env.update(PATCHWORK_DATA_CACHE=str(root / "cache"), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
               HYDRA_FULL_ERROR="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD_SIZE}",
               str(TRAIN), f"experiment={experiment}", "device=cpu", f"hydra.run.dir={root / 'run'}",
               f"debug.dump_parameters={root / 'dumps'}"]
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    found = {}
    for path in (root / "dumps").glob("*.pt"):
        stage, rank, step = path.stem.rsplit("_", 2)
        found[stage, int(rank.removeprefix("rank")), int(step.removeprefix("step"))] = torch.load(path)
    assert sorted(p.name for p in (root / "run" / "checkpoints").iterdir()) == sorted(STEPS[experiment])
    return experiment, found


def test_every_rank_dumps_every_step(run):
    experiment, dumps = run
    expected = {(stage, rank, step) for stage, steps in STEPS[experiment].items() for rank in range(WORLD_SIZE)
                for step in range(1, steps + 1)}
    assert set(dumps) == expected


def test_ranks_hold_identical_parameters_after_every_step(run):
    experiment, dumps = run
    for stage, steps in STEPS[experiment].items():
        _check_identical_and_changing(dumps, stage, steps)


def _check_identical_and_changing(dumps, stage: str, steps: int) -> None:
    previous = None
    for step in range(1, steps + 1):
        rank0 = dumps[stage, 0, step]
        for rank in range(1, WORLD_SIZE):
            other = dumps[stage, rank, step]
            differ = (other != rank0).nonzero().flatten()
            assert differ.numel() == 0, (
                f"{stage} step {step}: rank {rank} differs from rank 0 in {differ.numel()} of {rank0.numel()} "
                f"parameters (flat indices {differ.min().item()}..{differ.max().item()}), "
                f"max |diff| {(other - rank0).abs().max().item():.3g}"
            )
        if previous is not None:
            assert not torch.equal(previous, rank0), f"{stage}: step {step} did not change the parameters"
        previous = rank0


#: (a stage that trains only the policy network, a stage that trains the task network) per experiment.
POLICY_AND_TASK_STAGES = {"test_tiny": ("stage2", "stage3"), "lfs_test_tiny": ("lfs_policy", "lfs_detection")}


def test_policy_stages_train_only_the_policy_network(run):
    # Patchwork's stage 2 and LFS's policy stage train the policy network only (a small part of
    # the model); stage 3 and LFS's detection stage the task network (Sec. 3.4; LFS Sec. 3.3-3.4).
    experiment, dumps = run
    steps = STEPS[experiment]
    policy_stage, task_stage = POLICY_AND_TASK_STAGES[experiment]
    policy = dumps[policy_stage, 0, steps[policy_stage]] != dumps[policy_stage, 0, 1]
    task = dumps[task_stage, 0, steps[task_stage]] != dumps[task_stage, 0, 1]
    assert policy.shape == task.shape
    assert 0 < policy.sum() < 0.1 * policy.numel()
    assert task.sum() > 10 * policy.sum()
