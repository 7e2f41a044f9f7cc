"""The main job: every selected method trained and evaluated on one dataset, one comparison.

The methods' parts live in :mod:`patchwork.jobs` (one module each, all through one
:class:`~patchwork.jobs.MethodJob`): the single-frame rows and their baselines, Patchwork
(grids, policies, no-cell ablation), Looking Fast and Slow, BlockCopy. Every training sub-run
is a ``scripts/train.py`` run in ``<run_dir>/train/<name>`` and resumes the same way
(``resume=true``); the tables (Markdown, CSV, JSON) and plots go to ``<run_dir>/report``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from patchwork.evaluation.report import cells_table, paper_table, policy_table, write_report
from patchwork.evaluation.tables import write_json
from patchwork.jobs import MethodJob, blockcopy_method, patchwork_method, single_frame

log = logging.getLogger(__name__)

METHODS: dict[str, Callable[[MethodJob, DictConfig], dict[str, list[dict[str, Any]]]]] = {
    "single_frame": single_frame.run,
    "patchwork": patchwork_method.run,
    "blockcopy": blockcopy_method.run,
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
    for name in cfg.methods:
        log.info("main job: %s", name)
        for table, rows in METHODS[name](job, cfg[name]).items():
            tables.setdefault(table, []).extend(rows)
    report_dir = run_dir / "report"
    write_report(tables.get("comparison", []), report_dir, tables.get("policy", ()), tables.get("cells", ()))
    write_json(report_dir / "tables.json", tables)
    printed = [paper_table(tables.get("comparison", []))]
    printed += [builder(tables[key]) for key, builder in (("policy", policy_table), ("cells", cells_table)) if tables.get(key)]
    for table in printed:
        print(f"\n{table.markdown()}")
    return tables
