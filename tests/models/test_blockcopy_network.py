"""Exactness of BlockCopy's block-sparse execution against torchvision's dense networks."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from model_fixtures import randomize_batchnorm
from torch import nn

from patchwork.models import BlockCopyNetwork
from patchwork.models.blockcopy import FRAME_STATE, ConversionError, Handling
from patchwork.nn import BlockGrid

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = (384, 384)
GRID = BlockGrid(64)
ATOL = 1e-4


def _resnet18_backbone() -> nn.Module:
    resnet = torchvision.models.resnet18()
    return nn.Sequential(*list(resnet.children())[:-2])


def _mask(seed: int) -> torch.Tensor:
    """A fixed random (2, 6, 6) execution mask with both executed and skipped blocks in each stream."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(2, 6, 6, generator=generator) < 0.4
    mask[:, 0, 0], mask[:, -1, -1] = True, False
    return mask


def _out_cells(mask: torch.Tensor, cells: int) -> torch.Tensor:
    """Per output cell, whether its block executed: ``(B, 1, H / s, W / s)``."""
    return mask.repeat_interleave(cells, 1).repeat_interleave(cells, 2)[:, None]


@pytest.mark.parametrize(
    "make", [lambda: torchvision.models.mobilenet_v2().features, _resnet18_backbone], ids=["mobilenet_v2", "resnet18"]
)
@torch.no_grad()
def test_block_sparse_passes_equal_the_dense_network(make):
    torch.manual_seed(0)
    dense = randomize_batchnorm(make()).eval()
    net = BlockCopyNetwork.from_module(dense, GRID).eval()
    assert net.nodes_with(Handling.DENSE) == []  # every op runs on blocks
    x0, x1 = torch.randn(2, 3, *SIZE), torch.randn(2, 3, *SIZE)
    y0, y1 = dense(x0), dense(x1)

    state = net.init_state(batch_size=2, image_size=SIZE)
    out, state = net.forward_full(x0, state)
    torch.testing.assert_close(out, y0, rtol=0, atol=1e-5)

    # Memories hold x0: a pass on x0 gives the dense output whatever the mask.
    out0, state = net(x0, _mask(1), state)
    torch.testing.assert_close(out0, y0, rtol=1e-4, atol=ATOL)

    # A pass on x1: blocks not executed keep exactly the previous output, executed ones change.
    mask = _mask(2)
    out1, state = net(x1, mask, state)
    executed = _out_cells(mask, GRID.block_cells(SIZE[0] // y0.shape[-2])).expand_as(y0)
    assert torch.equal(out1[~executed], out0[~executed])
    assert not torch.allclose(out1[executed], out0[executed])
    # The frame state is x1 in executed blocks and x0 elsewhere.
    pixels = _out_cells(mask, GRID.block_size).expand_as(x0)
    assert torch.equal(net.frame_state(state), torch.where(pixels, x1, x0))

    # With every block executed, the pass is the dense network on x1.
    out, state = net(x1, GRID.full_mask(2, SIZE), state)
    torch.testing.assert_close(out, y1, rtol=1e-4, atol=ATOL)


@torch.no_grad()
def test_resnet50_all_blocks_executed_equals_the_dense_network():
    # In float64: ResNet-50's activations reach ~3500 with random BatchNorm statistics, where
    # float32 reassociation alone differs by ~1e-2; in float64 any real difference would show.
    torch.manual_seed(0)
    resnet = torchvision.models.resnet50()
    dense = randomize_batchnorm(nn.Sequential(*list(resnet.children())[:-2])).eval().double()
    net = BlockCopyNetwork.from_module(dense, GRID).eval()
    x0, x1 = torch.randn(1, 3, 128, 192, dtype=torch.float64), torch.randn(1, 3, 128, 192, dtype=torch.float64)
    state = net.init_state(1, (128, 192))
    _, state = net.forward_full(x0, state)
    out, state = net(x1, GRID.full_mask(1, (128, 192)), state)
    torch.testing.assert_close(out, dense(x1), rtol=1e-9, atol=1e-9)


class _TwoHeads(nn.Module):
    """Outputs as a tuple of a map and a list, with a global op and a shape read in between."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        features = torch.relu(self.conv(x))
        gated = features * torch.sigmoid(self.pool(features))  # per-stream (B, C, 1, 1) times blocks
        coarse = nn.functional.interpolate(self.head(gated), size=x.shape[-2:], mode="nearest")
        return gated, [coarse, features.mean(dim=(2, 3))]


@torch.no_grad()
def test_outputs_keep_their_structure_and_global_ops_see_the_dense_map():
    torch.manual_seed(0)
    dense = _TwoHeads().eval()
    net = BlockCopyNetwork.from_module(dense, GRID)
    assert set(net.nodes_with(Handling.DENSE)) == {
        "module 'pool' (AdaptiveAvgPool2d)",
        "function interpolate",
        "method .mean()",
    }
    x0, x1 = torch.randn(2, 3, 128, 192), torch.randn(2, 3, 128, 192)
    state = net.init_state(2, (128, 192))
    out, state = net.forward_full(x0, state)
    assert isinstance(out, tuple) and isinstance(out[1], list)
    for got, expected in zip([out[0], *out[1]], [dense(x0)[0], *dense(x0)[1]]):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    out, state = net(x1, GRID.full_mask(2, (128, 192)), state)
    for got, expected in zip([out[0], *out[1]], [dense(x1)[0], *dense(x1)[1]]):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # The mean is a global op: computed on the dense map, i.e. stream 0 with its first block
    # from x0 and the rest from x1.
    mask = torch.tensor([[[True, False, False], [False, False, False]]] * 2)
    mask[1] = False
    out, state = net(x0, mask, state)
    features = torch.relu(dense.conv(x1))
    features[0, :, :32, :32] = torch.relu(dense.conv(x0))[0, :, :32, :32]
    torch.testing.assert_close(out[1][1], features.mean(dim=(2, 3)), rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_no_block_executed_keeps_the_whole_output():
    torch.manual_seed(0)
    dense = randomize_batchnorm(torchvision.models.mobilenet_v2(width_mult=0.25).features).eval()
    net = BlockCopyNetwork.from_module(dense, GRID).eval()
    state = net.init_state(2, (128, 128))
    previous, state = net.forward_full(torch.randn(2, 3, 128, 128), state)
    out, state = net(torch.randn(2, 3, 128, 128), torch.zeros(2, 2, 2, dtype=torch.bool), state)
    assert torch.equal(out, previous)


def test_memories_are_written_in_place_without_autograd_and_functionally_with_it():
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, stride=2, padding=1))
    net = BlockCopyNetwork.from_module(dense, BlockGrid(32, align=2))
    state = net.init_state(1, (64, 64))
    frames = torch.randn(1, 3, 64, 64, requires_grad=True)
    mask = torch.tensor([[[True, False], [False, True]]])
    out, new_state = net(frames, mask, state)
    assert all(value.abs().sum() == 0 for value in state.values())  # untouched
    out.sum().backward()
    assert frames.grad is not None and net.module.get_submodule("0").weight.grad is not None
    with torch.no_grad():
        _, same = net(frames.detach(), mask, state)
    assert all(same[key] is state[key] for key in state) and state[FRAME_STATE].abs().sum() > 0


def test_streams_reset_one_at_a_time():
    dense = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1))
    net = BlockCopyNetwork.from_module(dense, BlockGrid(32, align=1))
    with torch.no_grad():
        _, state = net.forward_full(torch.randn(2, 3, 32, 64), net.init_state(2, (32, 64)))
    reset = state.reset(torch.tensor([True, False]))
    assert all(value[0].abs().sum() == 0 and torch.equal(value[1], state[key][1]) for key, value in reset.items())


class _AddsAMap(nn.Module):
    """Adds a learned bias per channel (broadcasts over blocks as over the map) and, optionally,
    stream 0's frame to every stream (a full map without a per-stream batch: no block equivalent)."""

    def __init__(self, first_stream: bool) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.randn(1, 3, 1, 1))
        self.first_stream = first_stream

    def forward(self, x):
        x = x + self.bias
        return x + x[:1] if self.first_stream else x


class _Rolls(nn.Module):
    def forward(self, x):
        return torch.roll(x, 1, dims=-1)


def test_unsupported_ops_are_refused_naming_them():
    with pytest.raises(ConversionError, match="function roll"):
        BlockCopyNetwork.from_module(_Rolls(), GRID)
    with pytest.raises(ConversionError, match=r"module '0' \(Conv2d\).*padding \(0, 0\)"):
        BlockCopyNetwork.from_module(nn.Sequential(nn.Conv2d(3, 3, 3)), GRID)
    with pytest.raises(ConversionError, match=r"module '1' \(PixelShuffle\)"):
        BlockCopyNetwork.from_module(nn.Sequential(nn.Conv2d(3, 12, 1), nn.PixelShuffle(2)), GRID)
    with pytest.raises(ConversionError, match="probe frame"):
        BlockCopyNetwork.from_module(nn.Sequential(nn.LSTM(3, 3)), GRID)
    with pytest.raises(ConversionError, match=r"function add.*dense tensor of shape \(1, 3, 128, 192\)"):
        BlockCopyNetwork.from_module(_AddsAMap(first_stream=True), GRID)
    biased = _AddsAMap(first_stream=False)
    net = BlockCopyNetwork.from_module(biased, GRID)
    frames = torch.randn(2, 3, 64, 128)
    with torch.no_grad():
        out, _ = net(frames, torch.ones(2, 1, 2, dtype=torch.bool), net.init_state(2, (64, 128)))
        torch.testing.assert_close(out, biased(frames))
    net = BlockCopyNetwork.from_module(nn.Sequential(nn.Conv2d(3, 3, 1)), GRID)
    with pytest.raises(ValueError, match=r"execution mask has shape \(2, 2\)"):
        net(torch.zeros(1, 3, 64, 128), torch.ones(2, 2, dtype=torch.bool), net.init_state(1, (64, 128)))
    with pytest.raises(ValueError, match="100x128"):
        net.init_state(1, (100, 128))


class _FunctionalConv(nn.Module):
    """A padded conv, then a functional convolution with a slice of a layer's weight (as the segmenter's
    split projection); two output channels, as many as the probe's streams, which its weight is not."""

    def __init__(self, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.project = nn.Conv2d(6, 2, kernel, padding=kernel // 2)

    def forward(self, x):
        weight = self.project.weight.split(4, dim=1)[0]
        return F.conv2d(self.conv(x), weight, self.project.bias, padding=self.project.padding)


@torch.no_grad()
def test_functional_1x1_convolution_runs_on_blocks_and_others_are_refused():
    torch.manual_seed(0)
    dense = _FunctionalConv(1).eval()
    net = BlockCopyNetwork.from_module(dense, GRID).eval()
    assert net.nodes_with(Handling.DENSE) == []
    x0, x1 = torch.randn(2, 3, *SIZE), torch.randn(2, 3, *SIZE)
    state = net.init_state(batch_size=2, image_size=SIZE)
    _, state = net.forward_full(x0, state)
    out, state = net(x1, GRID.full_mask(2, SIZE), state)
    torch.testing.assert_close(out, dense(x1), rtol=1e-5, atol=1e-5)
    with pytest.raises(ConversionError, match=r"function conv2d.*plain 1x1.*kernel \(3, 3\)"):
        BlockCopyNetwork.from_module(_FunctionalConv(3), GRID)


class _Normalises(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.full((1, 3, 1, 1), 0.5))
        self.conv = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x):
        return self.conv(x - self.mean)


@torch.no_grad()
def test_buffers_and_parameters_follow_to():
    dense = _Normalises()
    net = BlockCopyNetwork.from_module(dense, BlockGrid(32, align=1)).to(torch.float64)
    frames = torch.randn(1, 3, 32, 64, dtype=torch.float64)
    state = net.init_state(1, (32, 64))
    assert all(value.dtype == torch.float64 for value in state.values())
    out, _ = net(frames, torch.tensor([[[True, True]]]), state)
    torch.testing.assert_close(out, dense.double()(frames), rtol=1e-12, atol=1e-12)
