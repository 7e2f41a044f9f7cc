"""Benchmark: BlockCopy's block-sparse frame time as a fraction of the dense network's.

Three configurations per setting, interleaved frame by frame in one run (one thread,
BatchNorm folded, channels-last):

* ``dense``: the plain network on the whole frame;
* ``blockcopy``: :class:`~patchwork.models.BlockCopyNetwork` with a random ``executed``
  fraction of blocks per frame;
* ``ceiling``: the plain network on the executed blocks stacked as a batch (the same
  pixels without halos, memories or global ops: what block-sparse execution could reach).

Each block-sparse frame is also split as the paper's Tab. 3 (overhead, feature transfer,
ops; wall-clock, :func:`~patchwork.models.blockcopy.profiling.frame_time_split`); "overhead
points" are overhead + transfer in percent of the dense frame time. The top lines of a
``torch.profiler`` table of one block-sparse frame follow. Targets at 1024x512 with 128-px
blocks and 30% executed: frame time <= 0.45 of dense, overhead <= 15 points.

With ``online: true`` a second section follows, Tab. 3 of an ONLINE frame: the BlockCopy model on
the detector (``tau``, the project's REINFORCE learner, information-gain reward and policy
optimiser) streams ``online_frames`` random frames after ``warmup`` through the harness's loop
while its policy learns, and each frame is split into policy network, information gain, backward
pass + update (every ``update_every`` frames, so its mean per frame is amortised), overhead,
transfer and the task ops (:mod:`patchwork.benchmarks.blockcopy_online`); means per frame in ms
and in percent of the mean frame.
"""

from __future__ import annotations

import copy
import time

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.profiler import ProfilerActivity, profile

from patchwork.benchmarks.blockcopy_online import COLUMNS, mark_online_parts, online_frame_row, online_frame_splits
from patchwork.engine.online import OnlineLearning
from patchwork.evaluation.latency_stats import summarize_latency
from patchwork.evaluation.tables import markdown_table
from patchwork.models import BlockCopyModel, BlockCopyNetwork, mobilenet_v2, patchwork_detector
from patchwork.models.blockcopy.profiling import frame_time_split
from patchwork.models.inference import fold_batchnorm
from patchwork.nn import BlockGrid, gather_windows


def dense_network(network: str, width: float, fold_bn: bool) -> tuple[torch.nn.Module, str]:
    """The dense module and the method computing its output."""
    if network == "detector":
        net, method = patchwork_detector((1, 1), width_mult=width, num_classes=30).eval(), "forward_dense"
    elif network == "features":
        net, method = mobilenet_v2(width).features.eval(), "forward"
    else:
        raise ValueError(f"network must be 'detector' or 'features', got {network!r}")
    if fold_bn:
        fold_batchnorm(net)
    return net.to(memory_format=torch.channels_last), method


def random_mask(
    grid: BlockGrid, image_size: tuple[int, int], fraction: float, generator: torch.Generator
) -> torch.Tensor:
    """``(1, H // bs, W // bs)`` with ``round(fraction * blocks)`` blocks executed, chosen at random."""
    rows, cols = grid.blocks_per_axis(image_size)
    mask = torch.zeros(rows * cols, dtype=torch.bool)
    mask[torch.randperm(rows * cols, generator=generator)[: round(fraction * rows * cols)]] = True
    return mask.view(1, rows, cols)


@torch.no_grad()
def benchmark_setting(cfg: DictConfig, dense: torch.nn.Module, method: str, image_size, block_size: int) -> dict:
    grid = BlockGrid(block_size)
    run_dense = getattr(dense, method)
    net = BlockCopyNetwork.from_module(dense, grid, method=method).eval()
    generator = torch.Generator().manual_seed(cfg.seed)
    video = torch.randn(cfg.warmup + cfg.frames, 1, 3, *image_size, generator=generator)
    video = [frame.contiguous(memory_format=torch.channels_last) for frame in video]
    state = net.init_state(1, image_size)
    _, state = net.forward_full(video[0], state)
    times = {"dense": [], "blockcopy": [], "ceiling": []}
    splits = []
    masks = []
    for t, frame in enumerate(video):
        mask = random_mask(grid, image_size, cfg.executed, generator)
        masks.append(mask)
        blocks = gather_windows(frame, grid.placements(mask, [1])[1], (block_size, block_size))
        outputs = {}

        def sparse_step() -> None:
            outputs["blockcopy"] = net(frame, mask, state)

        # blockcopy (None) is timed through frame_time_split, which also splits its time.
        configurations = (
            ("dense", lambda: run_dense(frame)),
            ("blockcopy", None),
            ("ceiling", lambda: run_dense(blocks)),
        )
        for name, step in configurations:
            if step is None:
                split = frame_time_split(sparse_step)
                state = outputs["blockcopy"][1]
                elapsed = split["total"]
                if t >= cfg.warmup:
                    splits.append(split)
            else:
                start = time.perf_counter()
                step()
                elapsed = 1e3 * (time.perf_counter() - start)
            if t >= cfg.warmup:
                times[name].append(elapsed)
    medians = {name: summarize_latency(values)["median"] for name, values in times.items()}
    # Each part's share of its own frame, averaged: applied to the median frame time below.
    split = {key: sum(s[key] / s["total"] for s in splits) / len(splits) for key in ("overhead", "transfer", "ops")}
    fraction = medians["blockcopy"] / medians["dense"]
    row = {
        "setting": f"{image_size[0]}x{image_size[1]}, bs {block_size}",
        "dense_ms": medians["dense"],
        "blockcopy_ms": medians["blockcopy"],
        "ceiling_ms": medians["ceiling"],
        "fraction": fraction,
        "ceiling_fraction": medians["ceiling"] / medians["dense"],
        "overhead_points": 100 * fraction * (split["overhead"] + split["transfer"]),
        "overhead": split["overhead"],
        "transfer": split["transfer"],
        "ops": split["ops"],
    }
    if cfg.profile_rows:
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            net(video[-1], masks[-1], state)
        row["profile"] = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=cfg.profile_rows)
    return row


def online_setting(cfg: DictConfig, image_size: tuple[int, int], block_size: int) -> dict:
    """Tab. 3's row of one setting: the online BlockCopy model on the detector, parts in ms and % per frame."""
    if cfg.warmup < 1 or cfg.online_frames % cfg.learner.update_every:
        raise ValueError(f"online frames need warmup >= 1 (frame 0 runs densely) and a multiple of "
                         f"update_every={cfg.learner.update_every} measured frames, got {cfg.warmup}, {cfg.online_frames}")
    torch.manual_seed(cfg.seed)
    detector, _ = dense_network("detector", cfg.width, cfg.fold_bn)
    model = BlockCopyModel(detector, block_size=block_size, target_cost=cfg.tau).eval()
    stage = instantiate(cfg.stage.blockcopy_policy)
    learner = instantiate(cfg.learner)(network=model.policy_network, optimizer=stage.learner_optimizer(cfg),
                                       generator=torch.Generator().manual_seed(cfg.seed))
    online = mark_online_parts(OnlineLearning(learner, instantiate(cfg.reward)))
    generator = torch.Generator().manual_seed(cfg.seed)
    video = torch.rand(cfg.warmup + cfg.online_frames, 1, 3, *image_size, generator=generator)
    video = torch.stack([frames.contiguous(memory_format=torch.channels_last) for frames in video])
    splits = online_frame_splits(model, online, video, seed=cfg.seed)[cfg.warmup:]
    return online_frame_row(splits, f"{image_size[0]}x{image_size[1]}, bs {block_size}")


@hydra.main(version_base="1.3", config_path="../configs", config_name="benchmark_blockcopy")
def main(cfg: DictConfig) -> None:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    dense, method = dense_network(cfg.network, cfg.width, cfg.fold_bn)
    rows = [
        benchmark_setting(cfg, copy.deepcopy(dense), method, tuple(s.image_size), s.block_size) for s in cfg.settings
    ]
    print(
        f"BlockCopy on {cfg.network} (width {cfg.width}), {cfg.executed:.0%} of blocks executed, "
        f"{cfg.threads} thread(s), "
        f"{cfg.frames} frames per configuration, interleaved; fractions of the dense frame time\n"
    )
    columns = ["setting", "dense_ms", "blockcopy_ms", "ceiling_ms", "fraction", "ceiling_fraction", "overhead_points"]
    print(markdown_table(rows, columns, floats=".2f"))
    print("\nBlock-sparse frame split (Tab. 3 parts, mean share of the block-sparse frame):\n")
    print(markdown_table(rows, ["setting", "overhead", "transfer", "ops"], floats=".3f"))
    for row in rows:
        if "profile" in row:
            print(f"\nProfile of one block-sparse frame, {row['setting']} (top {cfg.profile_rows} by self CPU time):")
            print(row["profile"])
    if cfg.online:
        online_rows = [online_setting(cfg, tuple(s.image_size), s.block_size) for s in cfg.settings]
        print(f"\nOnline frame (Tab. 3): BlockCopy tau={cfg.tau:g} on the detector (width {cfg.width}), policy "
              f"learning every {cfg.learner.update_every} frames (its update amortised per frame), "
              f"{cfg.threads} thread(s), mean of {cfg.online_frames} frames after {cfg.warmup}; ms and % of the frame\n")
        columns = ["setting", "executed", "updates", "frame_ms"] + [f"{k}_{u}" for k in COLUMNS for u in ("ms", "%")]
        print(markdown_table(online_rows, columns, floats=".2f"))


if __name__ == "__main__":
    main()
