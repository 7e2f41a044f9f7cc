"""BlockCopy's cost as executed: FLOPs of the executed blocks, and the frame-time split."""

import time

import pytest
import torch
import torchvision

from patchwork.nn.flops import count_flops
from patchwork.models import BlockCopyNetwork
from patchwork.models.blockcopy.profiling import INFORMATION_GAIN, frame_time_split, part
from patchwork.nn import BlockGrid

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@torch.no_grad()
def test_flops_of_9_of_36_blocks_are_a_quarter_of_the_dense_network():
    features = torchvision.models.mobilenet_v2().features.eval()
    net = BlockCopyNetwork.from_module(features, BlockGrid(64)).eval()
    frames = torch.randn(1, 3, 384, 384)
    state = net.init_state(1, (384, 384))
    mask = torch.zeros(1, 6, 6, dtype=torch.bool)
    mask.view(-1)[torch.tensor([0, 5, 7, 14, 15, 21, 28, 30, 35])] = True
    dense = count_flops(lambda: features(frames))
    sparse = count_flops(lambda: net(frames, mask, state))
    ratio = sparse / dense
    assert 0.2 <= ratio <= 0.3
    # Every VALID convolution on a block with its halo computes exactly the block's outputs.
    assert ratio == pytest.approx(9 / 36, abs=1e-9)
    assert count_flops(lambda: net.forward_full(frames, state)) == dense


@torch.no_grad()
def test_frame_time_split_names_the_papers_parts():
    features = torchvision.models.mobilenet_v2(width_mult=0.25).features.eval()
    net = BlockCopyNetwork.from_module(features, BlockGrid(64)).eval()
    frames = torch.randn(1, 3, 128, 128)
    state = net.init_state(1, (128, 128))
    mask = torch.tensor([[[True, False], [False, True]]])

    def frame():
        net(frames, mask, state)
        with part(INFORMATION_GAIN):
            time.sleep(0.01)

    split = frame_time_split(frame)
    assert set(split) == {"total", "overhead", "transfer", "policy", "information_gain", "update", "ops"}
    assert split["overhead"] > 0 and split["transfer"] > 0 and split["ops"] > 0
    assert split["information_gain"] >= 10.0 and split["policy"] == split["update"] == 0.0
    parts = sum(value for key, value in split.items() if key != "total")
    assert parts == pytest.approx(split["total"])
    # Outside frame_time_split nothing is accumulated; under torch.profiler the parts are ranges.
    with torch.profiler.profile() as profiler:
        net(frames, mask, state)
    names = {event.key for event in profiler.key_averages()}
    assert {"blockcopy.overhead", "blockcopy.transfer"} <= names
