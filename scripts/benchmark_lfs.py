"""Benchmark: per-frame CPU latency of Looking Fast and Slow (Liu et al. 2019, Sec. 3.5, Tab. 2).

1. Synchronous: the f0 path and the f1 path (extractor + LSTM + SSDLite raw outputs) on the
   same frames, interleaved frame by frame on one thread. Target: f1 at least 8x faster.
   Decoding (softmax, top-k, NMS) is the same for both paths and timed apart: with random
   weights every default box passes the 0.01 score threshold, far more than a trained model.
2. Asynchronous (real mode): f1 on the main thread every frame, f0 in a worker thread every
   tau + 1 frames. Frames arrive at a fixed period long enough for f0 to finish within
   tau + 1 frames on its own core (a camera, not a loop as fast as possible); each frame's
   latency is the main thread's step. Blocks of tau + 1 frames of "f1 alone" and "async"
   alternate. Target: async p95 within 15% of the f1 path alone.
3. int8 (``int8=true``): the f0 and f1 paths of :func:`~patchwork.models.lfs.quantize_lfs`'s
   model (extractors and SSDLite int8, LSTM float), interleaved with the float paths.
"""

from __future__ import annotations

import os
import time

import hydra
import torch
from omegaconf import DictConfig

from patchwork.evaluation.latency_stats import summarize_latency
from patchwork.evaluation.tables import markdown_table, write_json
from patchwork.models import looking_fast_slow_detector
from patchwork.models.inference import fold_batchnorm, pointwise_as_matmul
from patchwork.models.lfs import F0, F1, ThreadedAsynchronousInference, quantize_lfs
from patchwork.models.streaming import StepOutput


def _timed(run) -> float:
    start = time.perf_counter()
    run()
    return 1e3 * (time.perf_counter() - start)


@hydra.main(version_base="1.3", config_path="../configs", config_name="benchmark_lfs")
def main(cfg: DictConfig) -> None:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    size = tuple(cfg.image_size)
    model = looking_fast_slow_detector(cfg.num_classes, size).eval()
    if cfg.fold_bn:
        fold_batchnorm(model)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    video = torch.rand(cfg.warmup + cfg.frames, 3, *size).contiguous(memory_format=memory_format)
    video = [video[t : t + 1] for t in range(len(video))]  # (1, 3, H, W) frames
    models = {"": model}
    if cfg.int8:
        models["int8 "] = quantize_lfs(model, torch.cat(video[: cfg.warmup]))
    if cfg.fold_bn:
        # The float model in its deployed form (the int8 copy above keeps plain convs for the quantizer).
        pointwise_as_matmul(model)
    times = {f"{prefix}{path}": [] for prefix in models for path in ("f0 path", "f1 path")}
    times["decoding"] = []
    with torch.no_grad():
        # Both paths from the same memory, so each frame times exactly one extractor's step.
        state = model(video[0], torch.tensor([F0]), model.init_state(1)).state

        def network(frame: torch.Tensor, action: int, net=model) -> dict:
            memory_output, _ = net.remember(net.normalize(frame), torch.tensor([action]), state)
            return net.detect(memory_output, size)

        for t, frame in enumerate(video):
            for prefix, net in models.items():
                for name, action in (("f0 path", F0), ("f1 path", F1)):
                    elapsed = _timed(lambda: network(frame, action, net))
                    if t >= cfg.warmup:
                        times[prefix + name].append(elapsed)
            out = StepOutput(raw=network(frame, F1), state=state)
            elapsed = _timed(lambda: model.predict(out))
            if t >= cfg.warmup:
                times["decoding"].append(elapsed)
    sync = {name: summarize_latency(ms) for name, ms in times.items()}
    speedup = sync["f0 path"]["median"] / sync["f1 path"]["median"]

    # Frames arrive every `period` ms: f0 (on its own core) must fit in tau + 1 frames.
    f1_step = sync["f1 path"]["median"] + sync["decoding"]["median"]
    period = 1.25 * max(f1_step, sync["f0 path"]["median"] / (cfg.tau + 1))
    block = cfg.tau + 1
    async_times = {"f1 alone": [], "async": []}
    with ThreadedAsynchronousInference(model, cfg.tau, worker_threads=cfg.threads) as runner, torch.no_grad():
        runner_state = runner.init_state(1)
        clock = time.perf_counter()
        for _ in range(cfg.async_rounds):
            for name in ("f1 alone", "async"):
                for t in range(block):
                    frame = video[t % len(video)]
                    clock += period / 1e3
                    time.sleep(max(0.0, clock - time.perf_counter()))
                    if name == "f1 alone":
                        elapsed = _timed(lambda: model(frame, torch.tensor([F1]), runner_state))
                    else:
                        start = time.perf_counter()
                        runner_state = runner.step(frame, torch.tensor([t]), runner_state).state
                        elapsed = 1e3 * (time.perf_counter() - start)
                    async_times[name].append(elapsed)
                if name == "async":
                    runner_state = runner.flush(runner_state)
            clock = max(clock, time.perf_counter())
    asyn = {name: summarize_latency(ms) for name, ms in async_times.items()}
    p95_ratio = asyn["async"]["p95"] / asyn["f1 alone"]["p95"]

    print(
        f"LFS, {size[0]}x{size[1]}, {cfg.num_classes} classes, {cfg.threads} thread(s) per thread of work, "
        f"{os.cpu_count()} CPUs, BatchNorm folded: {cfg.fold_bn}, channels-last: {cfg.channels_last}\n"
    )
    rows = [{"configuration": name, **{k: s[k] for k in ("median", "p95", "mean")}} for name, s in sync.items()]
    print("Synchronous, interleaved frame by frame (ms per frame)\n")
    print(markdown_table(rows, ["configuration", "median", "p95", "mean"], floats=".2f"))
    print(f"\nf0 path / f1 path (median, without decoding): {speedup:.2f}x (target >= 8x)")
    if cfg.int8:
        for path in ("f0 path", "f1 path"):
            print(f"{path}: float / int8 (median): {sync[path]['median'] / sync['int8 ' + path]['median']:.2f}x")
    rows_async = [{"configuration": name, **{k: s[k] for k in ("median", "p95", "mean")}} for name, s in asyn.items()]
    print(
        f"\nAsynchronous, tau={cfg.tau}, a frame every {period:.1f} ms, f0 in a worker thread "
        "(ms per frame, whole step with decoding)\n"
    )
    print(markdown_table(rows_async, ["configuration", "median", "p95", "mean"], floats=".2f"))
    print(f"\nasync p95 / f1 alone p95: {p95_ratio:.3f} (target <= 1.15)")
    if cfg.out:
        payload = {"sync": sync, "async": asyn, "f0_over_f1": speedup, "async_p95_over_f1_p95": p95_ratio,
                   "period_ms": period}
        print(f"\nwrote {write_json(cfg.out, payload)}")


if __name__ == "__main__":
    main()
