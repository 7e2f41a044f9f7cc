"""Patchwork's cost tables: the backbone per grid and the paper's rows."""

import pytest

from patchwork.benchmarks.paper_tables import TABLE4, TABLE5
from patchwork.benchmarks.patchwork_cost import backbone_cost_table, build_paper_row
from patchwork.evaluation.rows import method_label


def test_backbone_window_cost_is_exactly_the_window_area_fraction():
    rows = backbone_cost_table(image_size=(256, 256), widths=[0.5], grids=[(1, 1), (4, 2), (4, 1)], num_frames=2)
    single, half, quarter = (row["mflops_avg"] for row in rows)
    # Every conv of a window pass computes exactly the window's outputs: no overlap is
    # recomputed, so cost scales with area (the cells' copies cost no FLOPs).
    assert abs(half * 4 - single) < 1e-6 * single
    assert abs(quarter * 16 - single) < 1e-6 * single
    assert all(row["mflops_max"] == row["mflops_avg"] for row in rows)


def test_single_frame_cost_matches_torchvision_reference():
    # torchvision documents 0.30 GMACs for mobilenet_v2 at 224x224; features alone lack the
    # 1280 x 1000 classifier, 1.28 M multiply-adds.
    (row,) = backbone_cost_table(image_size=(224, 224), widths=[1.0], grids=[(1, 1)], num_frames=1)
    assert abs(row["mflops_avg"] - 2 * (300.77 - 1.28)) < 0.01 * row["mflops_avg"]


@pytest.mark.parametrize("paper_row", TABLE4 + TABLE5, ids=lambda r: f"{r.task}:{r.method}")
def test_every_paper_row_model_names_itself_as_the_paper_does(paper_row):
    assert method_label(build_paper_row(paper_row)) == paper_row.method
