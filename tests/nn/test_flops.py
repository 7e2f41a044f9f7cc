import torch

"""FLOPs counting (2 x multiply-adds) and per-frame cost summaries."""

from patchwork.nn.flops import FrameCost, count_flops, stream_cost


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
