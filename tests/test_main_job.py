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
    sources = [o["source"] for o in tables["orderings"]]
    assert sources.count("Chai 2019, Tab. 1") == 1 and sources.count("Chai 2019, Tab. 2") == 2
    assert all(o["verdict"] in ("holds", "does not hold", "not separable") for o in tables["orderings"])
    assert all(r["mAP_low"] <= r["mAP"] <= r["mAP_high"] for r in tables["comparison"])
    assert (run_dir / "report" / "orderings.md").exists()
    written = json.loads((run_dir / "report" / "tables.json").read_text())
    assert [row["method"] for row in written["comparison"]] == methods
    assert (run_dir / "report" / "latency_accuracy.md").exists()

    # Resuming retrains nothing; a row lost with an interruption is evaluated again, equal but for latency.
    stamps = {p: p.stat().st_mtime_ns for p in (run_dir / "train").rglob("last.pt")}
    saved = sorted((run_dir / "rows").glob("*.json"))
    assert len(saved) == 3 + 4  # three single-frame rows; DQN and scanning, each with and without cells
    saved[0].unlink()
    again = _run(run_dir, "methods=[single_frame,patchwork]", "resume=true")
    assert {p: p.stat().st_mtime_ns for p in (run_dir / "train").rglob("last.pt")} == stamps
    keep = ("method", "mflops_max", "mflops_avg", "mAP", "bootstrap")
    assert [{k: r[k] for k in keep} for r in again["comparison"]] == [{k: r[k] for k in keep} for r in tables["comparison"]]


def test_main_job_lfs_rows(tmp_path, monkeypatch):
    import torch
    from hydra.utils import instantiate

    from patchwork.engine.checkpoint import load_checkpoint
    from patchwork.engine.loading import load_model
    from patchwork.jobs.lfs_method import INIT_F0_FILE
    from patchwork.jobs.lfs_method import matched_tau as lfs_matched_tau

    monkeypatch.setenv("PATCHWORK_DATA_CACHE", str(tmp_path / "cache"))
    lfs_options = ("methods=[lfs]", "lfs.profile=lfs_test_tiny", "lfs.taus=[2]", "lfs.comparison_tau=2",
                   "lfs.gammas=[0.5]", "lfs.comparison_gamma=0.5", "lfs.async_tau=2", "lfs.match_adaptive=false")
    tables = _run(tmp_path / "run", *lfs_options)
    rows = {row["method"]: row for row in tables["lfs"]}
    assert list(rows) == [row["method"] for row in tables["comparison"]] == [
        "LFS f0 only", "LFS f1 only", "LFS interleaved tau=2", "LFS adaptive gamma=0.5", "LFS interleaved async tau=2"]
    assert all(row["family"] == "LFS" and "mAP" in row for row in tables["lfs"])
    f0, f1, interleaved = rows["LFS f0 only"], rows["LFS f1 only"], rows["LFS interleaved tau=2"]
    assert f1["mflops_avg"] < interleaved["mflops_avg"] < f0["mflops_avg"]
    assert (f0["f0_rate"], f1["f0_rate"]) == (1.0, 0.0)
    assert interleaved["f0_rate"] == pytest.approx(2 / 6)  # one 6-frame video: f0 on frames 0 and 3
    # Async: every frame waits for the f1 path only; f0's updates count in the average (beside f1 on
    # keyframes too, so a little above the interleaved average).
    asynchronous = rows["LFS interleaved async tau=2"]
    assert asynchronous["mflops_max"] == f1["mflops_max"] and asynchronous["latency"] == "threaded"
    assert interleaved["mflops_avg"] < asynchronous["mflops_avg"] < f0["mflops_avg"]
    assert (tmp_path / "run" / "report" / "lfs.md").exists()
    claims = [o["claim"] for o in tables["orderings"]]
    adaptive_tau = lfs_matched_tau(rows["LFS adaptive gamma=0.5"]["f0_rate"])
    matched = "f0 only" if adaptive_tau == 0 else f"interleaved tau={adaptive_tau}"
    assert claims == ["LFS interleaved tau=2 > LFS f1 only", "LFS interleaved tau=2 > LFS f0 only - 3",
                      f"LFS adaptive gamma=0.5 > LFS {matched} - 1"]
    # f0 started from the single-frame model's backbone (lfs.init_f0 default): the detection sub-run's
    # model, as its config builds it, has f0 blocks 0..17 equal to the stage-1 checkpoint's.
    run_dir = tmp_path / "run"
    single = load_model(run_dir / "train" / "single_frame" / "checkpoints" / "stage1" / "last.pt").model
    config = load_checkpoint(run_dir / "train" / "lfs" / "checkpoints" / "lfs_detection" / "last.pt")["config"]
    assert Path(config["model"]["weights_f0"]) == run_dir / INIT_F0_FILE
    f0 = instantiate(config["model"]).f0.features.state_dict()
    backbone = single.backbone.features.state_dict()
    assert len(f0) == len([k for k in backbone if not k.startswith("18.")])
    assert all(torch.equal(value, backbone[name]) for name, value in f0.items())
    # Resumed, every row is the saved one, the async row too (its threaded latency is not its identity).
    again = {row["method"]: row for row in _run(run_dir, *lfs_options, "resume=true")["lfs"]}
    assert again["LFS interleaved async tau=2"]["ms_p95"] == asynchronous["ms_p95"]


def test_main_job_lfs_init_f0_refuses_another_width(tmp_path):
    from hydra import initialize_config_dir

    from patchwork.jobs.context import MethodJob
    from patchwork.jobs.lfs_method import single_frame_f0

    job = MethodJob(run_dir=tmp_path, task="detection", profile="test_tiny", base_overrides=[], resume=False,
                    seed=0, eval=None)
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        with pytest.raises(ValueError, match="width_mult 0.35.*width_f0 0.5"):
            single_frame_f0(job, "lfs_quick")  # before any training
    assert not (tmp_path / "train").exists()


def test_main_job_lfs_has_no_segmentation_rows(tmp_path):
    from patchwork.jobs import lfs_method
    from patchwork.jobs.context import MethodJob

    job = MethodJob(run_dir=tmp_path, task="segmentation", profile="quick_segmentation", base_overrides=[],
                    resume=False, seed=0, eval=None)
    assert lfs_method.run(job, None) == {}


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
    assert [o["claim"] for o in tables["orderings"]] == [
        "BlockCopy tau=0.5 > SF depth=0.35 - 2, at <= 60% of its MFLOPs", f"BlockCopy tau=0.5 > {baseline['method']}"]


def test_main_job_refuses_unknown_methods(tmp_path):
    with pytest.raises(ValueError, match="unknown methods"):
        _run(tmp_path, "methods=[single_frame,nonesuch]")


def test_main_job_segmentation(tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHWORK_DATA_CACHE", str(tmp_path / "cache"))
    # Every method; LFS (a detector) gives no segmentation rows.
    tables = _run(tmp_path / "run", "task=segmentation", "profile=test_tiny_segmentation", "patchwork.policies=[dqn]",
                  "patchwork.no_cell_grids=[]", "single_frame.baselines=[{area: 0.25}]", "blockcopy.taus=[0.5]",
                  "blockcopy.frozen=false", "blockcopy.resolution_baseline=false")
    rows = tables["comparison"]
    assert [row["task"] for row in rows] == ["segmentation"] * 4
    assert [row["method"] for row in rows] == ["SF depth=0.35", "SF depth=0.35, resolution=0.25",
                                               "Patchwork M=2, N=1, depth=0.35", "BlockCopy tau=0.5"]
    assert all(r["J_low"] <= r["J"] <= r["J_high"] and r["F_low"] <= r["F"] <= r["F_high"] for r in rows)
    assert rows[1]["mflops_max"] < rows[0]["mflops_max"] / 2
    assert (tmp_path / "run" / "report" / "latency_accuracy.md").read_text().count("J 95% CI") == 1
