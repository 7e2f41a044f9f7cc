"""FLOPs counting (2 x multiply-adds) and per-frame cost summaries."""

import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from patchwork.nn.flops import FrameCost, beside_the_frame, count_flops, count_frame_flops, stream_cost


def test_count_flops_is_two_times_multiply_adds():
    conv = torch.nn.Conv2d(4, 8, 3, padding=1)
    depthwise = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
    x = torch.randn(1, 4, 10, 10)
    assert count_flops(lambda: depthwise(conv(x))) == 2 * (8 * 4 * 9 * 100) + 2 * (8 * 9 * 100)


def test_count_flops_agrees_with_torchs_flop_counter_on_a_network():
    model = torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=7).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), FlopCounterMode(display=False) as reference:
        model(x)
    with torch.no_grad():
        assert count_flops(lambda: model(x)) == reference.get_total_flops() > 0


def test_stream_cost_max_and_average_over_frames():
    conv = torch.nn.Conv2d(1, 1, 1, bias=False)
    x = torch.randn(1, 1, 10, 10)

    def keyframe_every_4(t: int) -> None:
        if t % 4 == 0:
            conv(x)

    cost = stream_cost(keyframe_every_4, num_frames=8)
    assert cost == FrameCost(mflops_max=200 / 1e6, mflops_avg=50 / 1e6)


def test_work_beside_the_frame_counts_in_the_average_not_in_the_max():
    conv = torch.nn.Conv2d(1, 1, 1, bias=False)
    x = torch.randn(1, 1, 10, 10)

    def f1_every_frame_f0_beside_every_4th(t: int) -> None:
        conv(x)  # 200 FLOPs the frame waits for
        if t % 4 == 0:
            with beside_the_frame():
                conv(conv(x))  # 400 FLOPs on another core

    cost = stream_cost(f1_every_frame_f0_beside_every_4th, num_frames=8)
    assert cost == FrameCost(mflops_max=200 / 1e6, mflops_avg=(200 + 400 / 4) / 1e6)
    assert count_frame_flops(lambda: f1_every_frame_f0_beside_every_4th(0)) == (600, 400)
    with beside_the_frame():  # outside a count: no effect
        conv(x)
