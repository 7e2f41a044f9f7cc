"""The main job end to end on the tiny profile: every selected method's rows, one report, resume."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run(run_dir: Path, *overrides: str) -> dict:
    from hydra import compose, initialize_config_dir

    from patchwork.main_job import run_main_job

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="main", overrides=[
            "profile=test_tiny", "progress=false", "train_overrides=['device=cpu']", f"run_dir={run_dir}",
            "patchwork.grids=[[2,1]]", "patchwork.policies=[dqn,scanning]", "patchwork.no_cell_grids=[m2n1]",
            "single_frame.baselines=[{interval: 2},{interval: 2, delay: 1}]",
            "eval.latency_videos=1", "eval.latency_frames=3", *overrides])
        return run_main_job(cfg)


def test_main_job_rows_report_and_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHWORK_DATA_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    tables = _run(run_dir, "methods=[single_frame,patchwork]")
    methods = [row["method"] for row in tables["comparison"]]
    assert methods[:3] == ["SF depth=0.35", "SF interval=2, depth=0.35", "SF interval=2, delay=1, depth=0.35"]
    assert methods[3].startswith("Patchwork M=2, N=1")
    assert [row["policy"] for row in tables["policy"]] == ["DQN", "Scanning"]
    assert [row["cells"] for row in tables["cells"]] == ["all", "none", "all", "none"]
    # The delayed keyframe costs what the interval does on average, a share of it at most.
    full, interval, delayed = tables["comparison"][:3]
    assert interval["mflops_max"] == pytest.approx(full["mflops_max"])
    assert delayed["mflops_max"] < full["mflops_max"]
    written = json.loads((run_dir / "report" / "tables.json").read_text())
    assert [row["method"] for row in written["comparison"]] == methods
    assert (run_dir / "report" / "latency_accuracy.md").exists()

    # Resuming the finished job retrains nothing and gives the same rows (latency aside).
    stamps = {p: p.stat().st_mtime_ns for p in (run_dir / "train").rglob("last.pt")}
    again = _run(run_dir, "methods=[single_frame,patchwork]", "resume=true")
    assert {p: p.stat().st_mtime_ns for p in (run_dir / "train").rglob("last.pt")} == stamps
    keep = ("method", "mflops_max", "mflops_avg", "mAP")
    assert [{k: r[k] for k in keep} for r in again["comparison"]] == [{k: r[k] for k in keep} for r in tables["comparison"]]


def test_main_job_blockcopy_rows_cost_less_than_the_single_frame_model(tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHWORK_DATA_CACHE", str(tmp_path / "cache"))
    tables = _run(tmp_path / "run", "methods=[single_frame,blockcopy]", "single_frame.baselines=[]",
                  "blockcopy.taus=[0.5]")
    rows = {row["method"]: row for row in tables["comparison"]}
    single = rows["SF depth=0.35"]
    online, frozen = rows["BlockCopy tau=0.5"], rows["BlockCopy tau=0.5, frozen"]
    assert online["family"] == frozen["family"] == "BlockCopy"
    assert (online["mode"], frozen["mode"], online["tau"]) == ("online", "frozen", 0.5)
    assert online["mflops_avg"] < single["mflops_avg"] and frozen["mflops_avg"] < single["mflops_avg"]
    assert 0 < online["executed_fraction"] < 1
    baseline = next(row for row in tables["comparison"] if row.get("matches") == "BlockCopy tau=0.5")
    assert baseline["family"] == "SF" and baseline["baseline"] == {"area": 0.25}  # 32x32 of 64x64 frames


def test_main_job_refuses_unknown_methods(tmp_path):
    with pytest.raises(ValueError, match="unknown methods"):
        _run(tmp_path, "methods=[single_frame,nonesuch]")
