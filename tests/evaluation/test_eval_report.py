"""Paper-style tables (Markdown/CSV/JSON round trips), method labels, plots and strips."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from patchwork.evaluation.report import (
    cells_table,
    paper_table,
    plot_latency_accuracy,
    policy_table,
    read_table,
    render_strip,
    save_strip,
    write_report,
    write_table,
)


def row(method, grid, mflops, ms, metric, policy="DQN", cells="all", task="detection", **extra):
    """A raw evaluation row as evaluate_method returns it (numbers only)."""
    m, n = grid
    metrics = {"mAP": metric, "AP50_coco_extra": metric + 1} if task == "detection" else {"J": metric, "F": metric - 2}
    return {"method": method, "family": "SF" if m == n else "Patchwork", "task": task, "policy": policy,
            "M": m, "N": n, "cells": cells, "mflops_max": mflops[0], "mflops_avg": mflops[1],
            "ms_p95": ms[0], "ms_p99": ms[1], "ms_mean": ms[2], "ms_std": ms[3], "ms_count": 64, **metrics, **extra}


ROWS = [
    row("Single-frame (SF)", (1, 1), (2047.04, 2047.04), (152.71, 160.64, 134.33, 8.94), 54.71, policy="Single-frame"),
    row("SF interval=4", (1, 1), (2047.0, 511.76), (146.9, 155.0, 33.8, 58.8), 53.4, policy="Single-frame"),
    row("Patchwork M=4, N=2", (4, 2), (543.2, 543.2), (55.2, 58.4, 47.9, 3.7), 54.3),
    row("Patchwork M=4, N=2, scanning", (4, 2), (541.0, 541.0), (55.0, 58.0, 47.0, 3.0), 51.7, policy="Scanning"),
    row("Patchwork M=4, N=2, cells=none", (4, 2), (530.0, 530.0), (50.0, 52.0, 45.0, 3.0), 43.2, cells="none"),
]


def test_paper_table_columns_and_cells():
    table = paper_table(ROWS)
    assert table.columns == ["Method", "MFLOPs max", "MFLOPs avg", "ms max (p95 / p99)", "ms avg (mean ± std)",
                             "mAP", "AP50 (COCO, extra)"]
    first = table.rows[0]
    assert first == {"Method": "Single-frame (SF)", "MFLOPs max": 2047.0, "MFLOPs avg": 2047.0,
                     "ms max (p95 / p99)": "152.7 / 160.6", "ms avg (mean ± std)": "134.3 ± 8.9", "mAP": 54.7,
                     "AP50 (COCO, extra)": 55.7}
    assert table.rows[1]["MFLOPs avg"] == 511.8
    segmentation = paper_table([row("SF", (1, 1), (1.0, 1.0), (1, 2, 3, 4), 60.0, task="segmentation")])
    assert segmentation.columns[-2:] == ["J", "F"] and segmentation.rows[0]["F"] == 58.0
    gpu = paper_table([{**ROWS[0], "gpu_ms_p95": 2.0, "gpu_ms_p99": 3.0, "gpu_ms_mean": 1.5, "gpu_ms_std": 0.25}])
    assert gpu.rows[0]["GPU ms max (p95 / p99)"] == "2.0 / 3.0"
    assert gpu.rows[0]["GPU ms avg (mean ± std)"] == "1.5 ± 0.2"
    with pytest.raises(ValueError, match="one task"):
        paper_table(ROWS[:1] + [row("SF", (1, 1), (1.0, 1.0), (1, 2, 3, 4), 60.0, task="segmentation")])


def test_policy_and_cells_tables():
    policies = policy_table(ROWS[:4])
    assert policies.columns == ["M", "N", "Policy", "MFLOPs", "mAP"]
    assert policies.rows[0] == {"M": "-", "N": "-", "Policy": "Single-frame", "MFLOPs": 2047.0, "mAP": 54.7}
    assert policies.rows[3] == {"M": 4, "N": 2, "Policy": "Scanning", "MFLOPs": 541.0, "mAP": 51.7}
    cells = cells_table(ROWS[2:])
    assert cells.columns == ["Policy", "Patchwork Cell?", "mAP"]
    assert [(r["Policy"], r["Patchwork Cell?"], r["mAP"]) for r in cells.rows] == [
        ("DQN", "yes", 54.3), ("Scanning", "yes", 51.7), ("DQN", "no", 43.2)]


@pytest.mark.parametrize("build", [paper_table, policy_table, cells_table])
def test_tables_round_trip_through_csv_and_json(build, tmp_path):
    table = build(ROWS)
    paths = write_table(table, tmp_path / "out", "table")
    assert sorted(paths) == ["csv", "json", "md"] and all(p.is_file() for p in paths.values())
    for kind in ("csv", "json"):
        back = read_table(paths[kind])
        assert back.columns == table.columns and back.rows == table.rows
    assert read_table(paths["json"]).title == table.title
    markdown = paths["md"].read_text(encoding="utf-8").splitlines()
    assert markdown[2] == "| " + " | ".join(table.columns) + " |" and len(markdown) == 4 + len(ROWS)


@pytest.mark.parametrize("x", ["mflops_max", "ms_p95"])
def test_latency_accuracy_plot_is_a_png(x, tmp_path):
    path = plot_latency_accuracy(ROWS, tmp_path / f"{x}.png", x=x)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        width, height = image.size
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert (width, height) == (640, 480) and len(colours) > 10  # drawn, not blank


def test_strip_draws_windows_and_predictions(tmp_path):
    frames = torch.zeros(3, 3, 32, 48, dtype=torch.uint8)
    windows = torch.tensor([[0, 0, 24, 16], [12, 8, 36, 24], [24, 16, 48, 32]], dtype=torch.float32)
    predictions = [{"boxes": torch.tensor([[2.0, 2.0, 10.0, 10.0], [0.0, 0.0, 5.0, 5.0]]),
                    "scores": torch.tensor([0.9, 0.1]), "labels": torch.tensor([1, 0])}] * 3
    strip = render_strip(frames, windows, predictions, class_names=["cat", "dog"], gap=4)
    assert strip.shape == (3, 32, 3 * 48 + 2 * 4) and strip.dtype == torch.uint8
    red = (strip[0] == 255) & (strip[1] == 0) & (strip[2] == 0)
    assert red[0, 0] and red[8, 52 + 12] and not red[20, 20]  # window corners of frames 0 and 1
    assert (strip[:, :, 48:52] == 255).all()  # the gap
    green = (strip[0] == 0) & (strip[1] == 255) & (strip[2] == 0)
    assert green[2, 5] and not green[0, 3]  # the 0.9 box is drawn, the 0.1 box is not
    masks = [{"mask": torch.ones(32, 48, dtype=torch.bool)}] * 3
    path = save_strip(tmp_path / "strip.png", frames, windows, masks)
    with Image.open(path) as image:
        assert image.size == (152, 32)


def test_write_report_writes_every_table_and_figure(tmp_path):
    written = write_report(ROWS, tmp_path, policy_rows=ROWS[:4], cell_rows=ROWS[2:])
    expected = {f"{stem}.{kind}" for stem in ("latency_accuracy", "policies", "cells") for kind in ("md", "csv", "json")}
    assert set(written) == expected | {"latency_accuracy_mflops.png", "latency_accuracy_ms.png"}
    assert all(path.is_file() and path.stat().st_size > 0 for path in written.values())
    assert read_table(written["cells.json"]).rows == cells_table(ROWS[2:]).rows


def test_intervals_get_their_column_and_bars(tmp_path):
    rows = [{**ROWS[0], "mAP_low": 50.04, "mAP_high": 58.96}, ROWS[2]]
    table = paper_table(rows)
    assert table.columns[5:7] == ["mAP", "mAP 95% CI"]
    assert table.rows[0]["mAP 95% CI"] == "[50.0, 59.0]" and table.rows[1]["mAP 95% CI"] == "-"
    assert policy_table(rows).columns[-2:] == ["mAP", "mAP 95% CI"]
    assert plot_latency_accuracy(rows, tmp_path / "plot.png").stat().st_size > 0
