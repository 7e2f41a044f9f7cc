"""The main job: every selected method trained and evaluated on one dataset, one comparison.

The methods' parts live in :mod:`patchwork.jobs` (one module each, all through one
:class:`~patchwork.jobs.MethodJob`): the single-frame rows and their baselines, Patchwork
(grids, policies, no-cell ablation), Looking Fast and Slow, BlockCopy. Every training sub-run
is a ``scripts/train.py`` run in ``<run_dir>/train/<name>`` and resumes the same way
(``resume=true``); the tables (Markdown, CSV, JSON) and plots go to ``<run_dir>/report``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from omegaconf import DictConfig

from patchwork.evaluation.claims import check_claims
from patchwork.evaluation.report import (cells_table, claims_table, interleaving_table, metric_columns, paper_table,
                                         policy_table, write_report, write_table)
from patchwork.evaluation.tables import write_json
from patchwork.jobs import MethodJob, blockcopy_method, lfs_method, patchwork_method, single_frame

log = logging.getLogger(__name__)

#: Each method's module: ``run(job, options) -> {table: rows}`` and optionally ``claims(tables) -> [Claim]``.
METHODS: dict[str, ModuleType] = {
    "single_frame": single_frame,
    "patchwork": patchwork_method,
    "lfs": lfs_method,
    "blockcopy": blockcopy_method,
}
PROFILES = {"detection": "quick", "segmentation": "quick_segmentation"}


def run_main_job(cfg: DictConfig) -> dict[str, Any]:
    """Train and evaluate as configured in ``configs/main.yaml``.

    Returns:
        ``{table name: rows}``: ``"comparison"`` (every method's main rows, in ``methods``
        order) and each method's ablation tables (``"policy"``, ``"cells"``, ...).
    """
    unknown = [name for name in cfg.methods if name not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {sorted(METHODS)}")
    if cfg.task not in PROFILES:
        raise ValueError(f"task must be one of {sorted(PROFILES)}, got {cfg.task!r}")
    run_dir = Path(cfg.run_dir)
    job = MethodJob(run_dir=run_dir, task=cfg.task, profile=cfg.profile or PROFILES[cfg.task],
                    base_overrides=[f"seed={cfg.seed}", f"progress={str(cfg.progress).lower()}",
                                    *cfg.train_overrides],
                    resume=cfg.resume, seed=cfg.seed, eval=cfg.eval)
    tables: dict[str, list[dict[str, Any]]] = {}
    wall: dict[str, float] = {}
    for index, name in enumerate(cfg.methods):
        log.info("main job: method %d/%d, %s", index + 1, len(cfg.methods), name)
        start = time.perf_counter()
        for table, rows in METHODS[name].run(job, cfg[name]).items():
            tables.setdefault(table, []).extend(rows)
        wall[name] = time.perf_counter() - start
    # Methods may ask for the same row (BlockCopy's lower-resolution baseline can be a single-frame
    # row): the comparison shows each label once, its first evaluation.
    first: dict[str, dict[str, Any]] = {}
    for row in tables.get("comparison", []):
        first.setdefault(row["method"], row)
    comparison = list(first.values())
    report_dir = run_dir / "report"
    write_report(comparison, report_dir, tables.get("policy", ()), tables.get("cells", ()))
    if tables.get("lfs"):
        write_table(interleaving_table(tables["lfs"]), report_dir, "lfs")
    # One claim per distinct pair (a row asked for twice would repeat its claims).
    claims = list(dict.fromkeys(claim for name in cfg.methods if hasattr(METHODS[name], "claims")
                                for claim in METHODS[name].claims(tables)))
    orderings = check_claims(claims, [row for rows in tables.values() for row in rows], metric_columns(comparison)[0]) if comparison else []
    write_json(report_dir / "tables.json", {**tables, "orderings": orderings, "wall_seconds": wall})
    printed = [paper_table(comparison)] if comparison else []
    printed += [builder(tables[key]) for key, builder in (("policy", policy_table), ("cells", cells_table),
                                                          ("lfs", interleaving_table)) if tables.get(key)]
    if orderings:
        printed.append(claims_table(orderings))
        write_table(printed[-1], report_dir, "orderings")
    for table in printed:
        print(f"\n{table.markdown()}")
    print("\nwall time: " + ", ".join(f"{name} {seconds / 60:.1f} min" for name, seconds in wall.items())
          + f" (total {sum(wall.values()) / 60:.1f} min)")
    return {**tables, "orderings": orderings, "wall_seconds": wall}
