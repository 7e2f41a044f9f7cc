"""Worker for ``test_engine_distributed.py``, started by ``torchrun --nproc_per_node=2`` (CPU, gloo).

Each rank builds the model from a *different* seed (DDP must broadcast rank 0's weights),
trains 3 SGD steps on different data, and after every step writes its parameters and some
collective results to ``<out_dir>/rank<r>_step<s>.pt``.

Usage: ``python -m torch.distributed.run --standalone --nproc_per_node=2 ddp_worker.py OUT_DIR``
"""

import sys
from pathlib import Path

import torch
from torch import nn

from patchwork.engine.checkpoint import state_dicts
from patchwork.engine.distributed import init_distributed, unwrap_model

STEPS = 3


class TinyConvNet(nn.Module):
    """(B, 3, 8, 8) -> (B, 2); BatchNorm as in stage 1."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def rank_batches(rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The ``STEPS`` batches rank ``rank`` trains on (different for every rank)."""
    generator = torch.Generator().manual_seed(1000 + rank)
    return [
        (torch.randn(4, 3, 8, 8, generator=generator), torch.randn(4, 2, generator=generator)) for _ in range(STEPS)
    ]


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    model = unwrap_model(model)  # names without DDP's "module." prefix
    return {name: value.detach().clone() for name, value in model.named_parameters()}


def main(out_dir: Path) -> None:
    ctx = init_distributed()
    torch.manual_seed(ctx.rank)  # different initial weights per rank
    model = ctx.wrap_ddp(TinyConvNet())
    optimizer = make_optimizer(model)
    collectives = {
        "backend": ctx.backend,
        "world_size": ctx.world_size,
        "is_main": ctx.is_main,
        "device": str(ctx.device),
        "mean_of_ranks": ctx.all_reduce_mean(torch.tensor([float(ctx.rank), 10.0 * ctx.rank])),
        "mean_of_int_rank": ctx.all_reduce_mean(ctx.rank),
        "shard": ctx.shard(list(range(5))),
        "gathered": ctx.all_gather_object({"rank": ctx.rank}),
        "checkpoint_keys": sorted(state_dicts({"model": model})["model"]),
    }
    torch.save({"parameters": parameters(model), "collectives": collectives}, out_dir / f"rank{ctx.rank}_step0.pt")
    for step, (x, y) in enumerate(rank_batches(ctx.rank), start=1):
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        torch.save({"parameters": parameters(model)}, out_dir / f"rank{ctx.rank}_step{step}.pt")
    ctx.barrier()
    ctx.destroy()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
