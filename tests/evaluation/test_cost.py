import torch

from patchwork.evaluation.cost import FrameCost, backbone_cost_table, count_flops, stream_cost


def test_count_flops_is_two_times_multiply_adds():
    conv = torch.nn.Conv2d(4, 8, 3, padding=1)
    depthwise = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
    x = torch.randn(1, 4, 10, 10)
    assert count_flops(lambda: depthwise(conv(x))) == 2 * (8 * 4 * 9 * 100) + 2 * (8 * 9 * 100)


def test_stream_cost_max_and_average_over_frames():
    conv = torch.nn.Conv2d(1, 1, 1, bias=False)
    x = torch.randn(1, 1, 10, 10)

    def keyframe_every_4(t: int) -> None:
        if t % 4 == 0:
            conv(x)

    cost = stream_cost(keyframe_every_4, num_frames=8)
    assert cost == FrameCost(mflops_max=200 / 1e6, mflops_avg=50 / 1e6)


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
