"""Patchwork's rows of the main job (Chai 2019): stages 2 and 3 per window grid from the shared
stage-1 model; the learnt (DQN) policy in the comparison, the DQN, random and scanning policies
(Tab. 1), and the same weights without cells (Tab. 2)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from patchwork.engine.loading import load_model
from patchwork.evaluation.claims import Claim
from patchwork.jobs.context import MethodJob
from patchwork.jobs.single_frame import train_single_frame
from patchwork.policies import build_policy


def grid_name(grid: list[int]) -> str:
    """``[4, 2]`` -> ``"m4n2"``: the sub-run's name."""
    return f"m{grid[0]}n{grid[1]}"


def run(job: MethodJob, options: DictConfig) -> dict[str, list[dict[str, Any]]]:
    """Train and evaluate Patchwork.

    Options:
        grids: ``[[M, N], ...]``, one sub-run (stages 2 and 3) each.
        policies: policy names (:func:`~patchwork.policies.build_policy`); ``"dqn"`` rows go in
            the comparison, all of them in ``"policy"``.
        no_cell_grids: grid names (e.g. ``m4n2``) whose DQN and scanning rows are repeated without
            cells (``"cells"``).
    """
    stage1 = train_single_frame(job)
    comparison, policy_rows, cell_rows = [], [], []
    for grid in options.grids:
        name = grid_name(list(grid))
        job.train(name, ["stage=[stage2,stage3]", f"model.grid=[{grid[0]},{grid[1]}]", f"init_from={stage1}"])
        checkpoint = job.checkpoint(name, "stage3")
        for policy_name in options.policies:
            for cells in ("all", "none") if name in options.no_cell_grids and policy_name in ("dqn", "scanning") else ("all",):
                loaded = load_model(checkpoint, **({} if cells == "all" else {"cells": cells}))
                model = loaded.model
                row = job.evaluate(model, job.data(loaded.config["data"]), build_policy(policy_name, model.action_space))
                if cells == "all":
                    policy_rows.append(row)
                    if policy_name == "dqn":
                        comparison.append(row)
                if name in options.no_cell_grids and policy_name in ("dqn", "scanning"):
                    cell_rows.append(row)
    return {"comparison": comparison, "policy": policy_rows, "cells": cell_rows}


#: Single-frame rows whose maximum cost is within this factor of a Patchwork row's are its peers (Tab. 4 groups).
SIMILAR_COST = 1.5


def claims(tables: dict[str, list[dict[str, Any]]]) -> list[Claim]:
    """Chai 2019's orderings among the job's rows.

    Tab. 4: each Patchwork DQN row above every single-frame row of similar maximum MFLOPs
    (within :data:`SIMILAR_COST`); Tab. 1: DQN above random and scanning on each grid; Tab. 2:
    cells above no cells with each policy.
    """
    found: list[Claim] = []
    comparison = tables.get("comparison", [])
    for row in (r for r in comparison if r["family"] == "Patchwork"):
        for peer in (r for r in comparison if r["family"] == "SF"):
            if 1 / SIMILAR_COST <= peer["mflops_max"] / row["mflops_max"] <= SIMILAR_COST:
                found.append(Claim("Chai 2019, Tab. 4", row["method"], peer["method"]))
    policy_rows = tables.get("policy", [])
    for learnt in (r for r in policy_rows if r["policy"] == "DQN"):
        for other in policy_rows:
            if other["policy"] != "DQN" and (other["M"], other["N"]) == (learnt["M"], learnt["N"]):
                found.append(Claim("Chai 2019, Tab. 1", learnt["method"], other["method"]))
    cell_rows = tables.get("cells", [])
    for with_cells in (r for r in cell_rows if r["cells"] != "none"):
        for without in cell_rows:
            if without["cells"] == "none" and (without["policy"], without["M"], without["N"]) == (
                    with_cells["policy"], with_cells["M"], with_cells["N"]):
                found.append(Claim("Chai 2019, Tab. 2", with_cells["method"], without["method"]))
    return found
