"""The main job: train all three stages and reproduce the paper's comparisons on one dataset.

1. Stage 1 once: the single-frame model (shared by every grid, as in the paper).
2. Stages 2 and 3 for each window grid (e.g. M=4,N=2 and M=4,N=1), from the stage-1 weights.
3. Evaluation: single-frame vs Patchwork (Tab. 4/5 rows), the DQN, random and scanning
   policies (Tab. 1), and the same weights without cells (Tab. 2), each with theoretical
   and empirical cost; tables (Markdown, CSV, JSON) and plots in ``<run_dir>/report``.

Training runs reuse ``patchwork.engine.train.train`` with configs composed from
``configs/train.yaml``, so every sub-run directory looks like a ``scripts/train.py`` run and
resumes the same way (``resume=true``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from hydra import compose
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from patchwork.engine.loading import load_model
from patchwork.engine.train import train
from patchwork.evaluation.report import cells_table, paper_table, policy_table, write_report
from patchwork.evaluation.rows import evaluate_method, method_label
from patchwork.evaluation.tables import write_json
from patchwork.policies import build_policy

log = logging.getLogger(__name__)


def _grid_name(grid: list[int]) -> str:
    return f"m{grid[0]}n{grid[1]}"


def _train(overrides: list[str], run_dir: Path, resume: bool) -> dict[str, Any]:
    cfg = compose(config_name="train", overrides=[*overrides, f"run_dir={run_dir}", f"resume={str(resume).lower()}"])
    return train(cfg)


def run_main_job(cfg: DictConfig) -> dict[str, Any]:
    """Train and evaluate as configured in ``configs/main.yaml``; returns the report rows."""
    run_dir = Path(cfg.run_dir)
    base = [f"experiment={cfg.profile}", f"seed={cfg.seed}", f"progress={str(cfg.progress).lower()}"]
    base += list(cfg.train_overrides)
    summaries: dict[str, Any] = {}
    single = run_dir / "train" / "single_frame"
    summaries["single_frame"] = _train([*base, "stage=[stage1]"], single, cfg.resume)
    stage1 = single / "checkpoints" / "stage1" / "last.pt"
    checkpoints = {}
    for grid in cfg.grids:
        name = _grid_name(grid)
        directory = run_dir / "train" / name
        overrides = [*base, "stage=[stage2,stage3]", f"model.grid=[{grid[0]},{grid[1]}]", f"init_from={stage1}"]
        summaries[name] = _train(overrides, directory, cfg.resume)
        checkpoints[name] = directory / "checkpoints" / "stage3" / "last.pt"

    torch.manual_seed(cfg.seed)
    rows, policy_rows, cell_rows = [], [], []

    def evaluate(checkpoint: Path, policy_name: str, **load_options: Any) -> dict[str, Any]:
        loaded = load_model(checkpoint, **load_options)
        model = loaded.model
        policy = build_policy(policy_name, model.action_space)
        label = method_label(model, policy)
        data = instantiate(OmegaConf.create(loaded.config["data"]))
        row, _ = evaluate_method(model, data, policy, label, streams=cfg.eval.streams, threads=cfg.eval.threads,
                                 latency_videos=cfg.eval.latency_videos, latency_frames=cfg.eval.latency_frames,
                                 max_videos=cfg.eval.max_videos)
        log.info("%s: %s", label, {k: row[k] for k in ("mflops_max", "ms_p95") if k in row})
        return row

    rows.append(evaluate(stage1, "fixed"))
    for name, checkpoint in checkpoints.items():
        for policy_name in cfg.policies:
            row = evaluate(checkpoint, policy_name)
            policy_rows.append(row)
            if policy_name == "dqn":
                rows.append(row)
            if name in cfg.no_cell_grids and policy_name in ("dqn", "scanning"):
                cell_rows.append(row)
                # Tab. 2: the same weights, each window zero-padded like a separate image.
                cell_rows.append(evaluate(checkpoint, policy_name, cells="none"))
    report_dir = run_dir / "report"
    write_report(rows, report_dir, policy_rows, cell_rows)
    write_json(report_dir / "training_summary.json", summaries)
    for table in (paper_table(rows), policy_table(policy_rows), cells_table(cell_rows)):
        print(f"\n{table.markdown()}")
    return {"rows": rows, "policy_rows": policy_rows, "cell_rows": cell_rows, "training": summaries}
