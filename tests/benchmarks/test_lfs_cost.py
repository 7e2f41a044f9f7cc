"""LFS Tab. 2 cost rows: each schedule's per-frame MFLOPs, checked against its parts."""

import pytest
import torch

from patchwork.benchmarks.lfs_cost import lfs_cost_table
from patchwork.benchmarks.paper_tables import LFS_TABLE2
from patchwork.models import looking_fast_slow_detector
from patchwork.nn.flops import count_flops

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_rows_add_up_from_the_f0_f1_and_head_costs():
    torch.manual_seed(0)
    model = looking_fast_slow_detector(3, (128, 128), width_f0=0.5, state_channels=32, extra_channels=(32,) * 4).eval()
    table = {row["method"]: row for row in lfs_cost_table(image_size=(128, 128), model=model, cycles=1)}
    assert list(table) == ["LFS f0 only", "LFS f1 only", "LFS interleaved tau=9", "LFS interleaved async tau=9"]
    f0, f1 = table["LFS f0 only"]["mflops_avg"], table["LFS f1 only"]["mflops_avg"]
    assert table["LFS f0 only"]["mflops_max"] == f0 and table["LFS f1 only"]["mflops_max"] == f1 and f1 < f0
    interleaved = table["LFS interleaved tau=9"]
    assert interleaved["mflops_max"] == f0
    assert interleaved["mflops_avg"] == pytest.approx((f0 + 9 * f1) / 10, rel=1e-12)
    # Async: the frame waits for the f1 path; the keyframe's f0 update (f0 path without the head) is extra work.
    with torch.no_grad():
        memory = torch.zeros(1, model.lstm.out_channels, 4, 4)
        head = count_flops(lambda: model.detect(memory, (128, 128))) / 1e6
    asynchronous = table["LFS interleaved async tau=9"]
    assert asynchronous["mflops_max"] == f1
    assert asynchronous["mflops_avg"] == pytest.approx(f1 + (f0 - head) / 10, rel=1e-12)
    assert all(row["task"] == "detection" for row in table.values())


def test_paper_figures_are_twice_the_papers_macs():
    paper = {row.method: row.paper for row in LFS_TABLE2}
    assert paper["LFS f0 only"]["mflops_avg"] == 2 * 1153
    assert paper["LFS f1 only"]["mflops_max"] == 2 * 84
    assert paper["LFS interleaved tau=9"]["mflops_avg"] == 2 * 190
    assert (paper["LFS interleaved async tau=9"]["mflops_max"], paper["LFS interleaved async tau=9"]["mflops_avg"]) == (
        168, 380
    )
