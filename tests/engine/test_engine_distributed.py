"""Distributed: a real 2-process torchrun job keeps parameters identical; single-process no-op context."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ddp_worker import STEPS, TinyConvNet, make_optimizer, rank_batches
from patchwork.engine.distributed import DistributedContext, init_distributed, unwrap_model

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.fixture(scope="module")
def torchrun_outputs(tmp_path_factory):
    """Run the worker under torchrun once; ``{(rank, step): saved dict}``."""
    out_dir = tmp_path_factory.mktemp("ddp")
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")  # CPU + gloo, as on a CPU-only CI machine
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += [str(WORKER), str(out_dir)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]
    return {
        (rank, step): torch.load(out_dir / f"rank{rank}_step{step}.pt")
        for rank in range(2)
        for step in range(STEPS + 1)
    }


def test_ranks_hold_identical_parameters_after_every_step(torchrun_outputs):
    previous = None
    for step in range(STEPS + 1):
        rank0 = torchrun_outputs[0, step]["parameters"]
        rank1 = torchrun_outputs[1, step]["parameters"]
        for name in rank0:
            assert torch.equal(rank0[name], rank1[name]), (step, name)
        if previous is not None:
            assert all(not torch.equal(previous[name], rank0[name]) for name in rank0), step  # training moved them
        previous = rank0


def test_ddp_equals_one_process_averaging_the_ranks_losses(torchrun_outputs):
    # DDP all-reduces the mean gradient: the same as one process minimising the mean of the
    # two ranks' losses (each rank's BatchNorm normalising its own batch), from rank 0's weights.
    torch.manual_seed(0)
    model = TinyConvNet()
    optimizer = make_optimizer(model)
    for step, batches in enumerate(zip(rank_batches(0), rank_batches(1)), start=1):
        loss = sum(nn.functional.mse_loss(model(x), y) for x, y in batches) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for name, value in model.named_parameters():
            ddp_value = torchrun_outputs[0, step]["parameters"][name]
            torch.testing.assert_close(ddp_value, value.detach(), rtol=1e-5, atol=1e-6)


def test_collectives_and_sharding_across_ranks(torchrun_outputs):
    rank0 = torchrun_outputs[0, 0]["collectives"]
    rank1 = torchrun_outputs[1, 0]["collectives"]
    assert (rank0["backend"], rank0["world_size"], rank0["device"]) == ("gloo", 2, "cpu")
    assert (rank0["is_main"], rank1["is_main"]) == (True, False)
    for collectives in (rank0, rank1):
        assert torch.equal(collectives["mean_of_ranks"], torch.tensor([0.5, 5.0]))
        assert collectives["mean_of_int_rank"].item() == 0.5
        assert collectives["gathered"] == [{"rank": 0}, {"rank": 1}]
        assert collectives["checkpoint_keys"] == sorted(name for name in TinyConvNet().state_dict())  # no "module."
    # 5 items over 2 ranks: padded by wrapping to 6 so both ranks run 3 steps.
    assert (rank0["shard"], rank1["shard"]) == ([0, 2, 4], [1, 3, 0])


def test_single_process_context_is_a_no_op(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = init_distributed(device="cpu")
    assert (ctx.rank, ctx.world_size, ctx.backend, ctx.is_main, ctx.is_distributed) == (0, 1, None, True, False)
    module = nn.Linear(2, 2)
    assert ctx.wrap_ddp(module) is module and unwrap_model(module) is module
    value = torch.tensor([1.0, 2.0])
    mean = ctx.all_reduce_mean(value)
    assert torch.equal(mean, value) and mean is not value
    assert ctx.shard(range(5)) == [0, 1, 2, 3, 4]
    assert sorted(ctx.sampler(list(range(6)), shuffle=True)) == list(range(6))
    ctx.barrier()
    ctx.destroy()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert init_distributed(device="cpu").world_size == 1


def test_shard_evens_out_the_ranks():
    items = list(range(7))
    padded = [DistributedContext(rank=rank, world_size=3).shard(items) for rank in range(3)]
    assert padded == [[0, 3, 6], [1, 4, 0], [2, 5, 1]]
    dropped = [DistributedContext(rank=rank, world_size=3).shard(items, drop_last=True) for rank in range(3)]
    assert dropped == [[0, 3], [1, 4], [2, 5]]
    assert [DistributedContext(rank=rank, world_size=4).shard([9]) for rank in range(4)] == [[9]] * 4


def test_world_size_without_rank_fails_clearly(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(RuntimeError, match="RANK is not set; start the job with torchrun"):
        init_distributed(device="cpu")
