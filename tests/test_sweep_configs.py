"""Cluster sweeps: `scripts/train.py -m ... hydra/launcher=submitit_slurm` composes with the
submitit SLURM launcher, the same sweep composes with Hydra's basic launcher, the launcher yaml
matches the plugin's schema key for key, and CI's `dev` extra installs the optional extras."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from test_configs import CONFIG_DIR, compose_config

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER_YAML = CONFIG_DIR / "hydra" / "launcher" / "submitit_slurm.yaml"
SWEEP = ["experiment=test_tiny", "seed=0,1,2", "model.grid=[4,2],[3,3]"]

# Our yaml replaces the plugin's node of the same name, so Hydra validates it against the
# plugin's schema and says that this automatic matching is deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:(?s).*is validated against ConfigStore schema:UserWarning")


def sweep_jobs(arguments: list[str]) -> list[list[str]]:
    """The override lists of the jobs a ``-m`` sweep over ``arguments`` runs (Hydra's basic sweeper)."""
    overrides = OverridesParser.create().parse_overrides(arguments)
    return [list(job) for batch in BasicSweeper.split_arguments(overrides, max_batch_size=None) for job in batch]


def test_the_slurm_launcher_composes():
    cfg = compose_config(overrides=["hydra/launcher=submitit_slurm", *SWEEP[:1]], hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher["tasks_per_node"] == 1 and launcher["gpus_per_node"] == 1 and launcher["nodes"] == 1
    assert launcher["submitit_folder"] == "${hydra.sweep.dir}/.submitit/%j"
    assert launcher["max_num_timeout"] == 0  # a requeue reruns from scratch unless resume=true
    custom = compose_config(overrides=["hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu",
                                       "hydra.launcher.timeout_min=2880"], hydra_config=True)
    assert custom.hydra.launcher.partition == "gpu" and custom.hydra.launcher.timeout_min == 2880


def test_the_launcher_yaml_lists_exactly_the_plugin_schema_keys():
    config = pytest.importorskip("hydra_plugins.hydra_submitit_launcher.config")  # the `slurm` extra (in `dev`)
    ours = OmegaConf.load(LAUNCHER_YAML)
    schema = OmegaConf.structured(config.SlurmQueueConf)
    assert set(ours) == set(schema)
    merged = OmegaConf.merge(schema, ours)  # raises on a wrong type
    assert merged.cpus_per_task == 8 and merged._target_ == schema._target_


def test_the_same_sweep_composes_with_each_launcher():
    jobs = sweep_jobs(SWEEP)
    assert len(jobs) == 6
    assert jobs[0] == ["experiment=test_tiny", "seed=0", "model.grid=[4,2]"]
    for launcher, target in (([], "hydra._internal.core_plugins.basic_launcher.BasicLauncher"),
                             (["hydra/launcher=submitit_slurm"], "SlurmLauncher")):
        for job in (jobs[0], jobs[-1]):
            cfg = compose_config(overrides=[*launcher, *job], hydra_config=True)
            assert cfg.hydra.launcher._target_.endswith(target)
            assert cfg.seed == int(job[1].split("=")[1])
            assert list(cfg.model.grid) == [int(v) for v in job[2].split("=")[1].strip("[]").split(",")]


def test_ci_installs_the_optional_extras():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {extra: {req.split(">")[0].split("=")[0].strip() for req in reqs} for extra, reqs in extras.items()}
    assert names["video"] == {"av"} and names["slurm"] == {"hydra-submitit-launcher"}
    assert {"pytest", "av", "hydra-submitit-launcher"} <= names["dev"]
