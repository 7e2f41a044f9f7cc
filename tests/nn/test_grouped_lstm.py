"""The grouped bottleneck ConvLSTM of Looking Fast and Slow (Sec. 3.2)."""

import math

import pytest
import torch

from patchwork.nn.grouped_lstm import GroupedBottleneckLSTM

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def _relu6(v: float) -> float:
    return min(max(v, 0.0), 6.0)


def _hand_set_cell(**options) -> GroupedBottleneckLSTM:
    """One input channel, S = 2, G = 2 (one channel per group); on 1x1 maps only the
    depthwise centre taps matter: they are 1, the other taps random."""
    cell = GroupedBottleneckLSTM([1], state_channels=2, groups=2, **options)
    with torch.no_grad():
        for conv in (cell.pre_bottleneck[0].depthwise, cell.gates.depthwise):
            conv.weight.uniform_(-1, 1)
            conv.weight[:, :, 1, 1] = 1.0
        # Pre-bottleneck: group 0 reads [x, h^0], group 1 reads [x, h^1].
        cell.pre_bottleneck[0].pointwise.weight.copy_(torch.tensor([[2.0, 1.0], [1.0, 4.0]]).view(2, 2, 1, 1))
        cell.pre_bottleneck[0].pointwise.bias.copy_(torch.tensor([0.5, 0.0]))
        # Gates: group k maps b^k to [i^k, j^k, f^k, o^k].
        cell.gates.pointwise.weight.copy_(torch.tensor([1.0, 1.0, 0.0, -1.0, 0.0, 0.5, 1.0, 1.0]).view(8, 1, 1, 1))
        cell.gates.pointwise.bias.copy_(torch.tensor([0.0, 0.5, 0.0, 0.0, -1.0, 0.0, -8.0, 0.0]))
    return cell


def test_hand_set_weights_give_the_hand_computed_step():
    cell = _hand_set_cell()
    x = torch.tensor([0.5]).view(1, 1, 1, 1)
    c = torch.tensor([3.0, -1.0]).view(1, 2, 1, 1)
    h = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1)
    with torch.no_grad():
        out, c_new, h_new = cell(x, 0, c, h)
    b0 = _relu6(2 * 0.5 + 1 * 1.0 + 0.5)  # 2.5
    b1 = _relu6(1 * 0.5 + 4 * 2.0 + 0.0)  # 8.5 -> 6
    i0, j0, f0, o0 = b0, b0 + 0.5, 0.0, -b0
    i1, j1, f1, o1 = -1.0, 0.5 * b1, b1 - 8.0, b1
    c0 = 3.0 * _sigmoid(f0 + 1) + _sigmoid(i0) * _relu6(j0)
    c1 = -1.0 * _sigmoid(f1 + 1) + _sigmoid(i1) * _relu6(j1)
    h0, h1 = _relu6(c0) * _sigmoid(o0), _relu6(c1) * _sigmoid(o1)
    torch.testing.assert_close(c_new.flatten(), torch.tensor([c0, c1]), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(h_new.flatten(), torch.tensor([h0, h1]), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.flatten(), torch.tensor([h0, h1, b0, b1]), rtol=1e-6, atol=1e-6)


def test_cell_state_is_clipped_and_relu6_storage_is_an_option():
    x = torch.tensor([0.5]).view(1, 1, 1, 1)
    c = torch.tensor([100.0, -100.0]).view(1, 2, 1, 1)
    h = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1)
    with torch.no_grad():
        _, c_plain, h_plain = _hand_set_cell()(x, 0, c, h)
        _, c_relu6, h_relu6 = _hand_set_cell(store_relu6_state=True)(x, 0, c, h)
    assert c_plain.flatten().tolist() == [6.0, -6.0]
    assert c_relu6.flatten().tolist() == [6.0, 0.0]
    assert torch.equal(h_plain, h_relu6)
    with torch.no_grad():
        _, c_small_clip, _ = _hand_set_cell(clip=2.0)(x, 0, c, h)
    assert c_small_clip.flatten().tolist() == [2.0, -2.0]


def test_shapes_and_per_extractor_bottlenecks():
    torch.manual_seed(0)
    cell = GroupedBottleneckLSTM([448, 112])
    assert cell.out_channels == 640
    c, h = cell.init_state(3, (10, 10))
    assert c.shape == h.shape == (3, 320, 10, 10)
    for extractor, channels in enumerate((448, 112)):
        out, c_new, h_new = cell(torch.rand(3, channels, 10, 10), extractor, c, h)
        assert out.shape == (3, 640, 10, 10) and c_new.shape == h_new.shape == (3, 320, 10, 10)
    with pytest.raises(ValueError, match="channels"):
        cell(torch.rand(3, 448, 10, 10), 1, c, h)
    with pytest.raises(ValueError, match="extractor"):
        cell(torch.rand(3, 448, 10, 10), 2, c, h)


@torch.no_grad()
def test_groups_are_independent_and_streams_do_not_mix():
    torch.manual_seed(0)
    cell = GroupedBottleneckLSTM([6], state_channels=8, groups=4)
    x = torch.rand(2, 6, 5, 5)
    c, h = torch.randn(2, 8, 5, 5), torch.rand(2, 8, 5, 5)
    out, c_new, h_new = cell(x, 0, c, h)
    # Changing group 3's previous state changes group 3 only.
    c2, h2 = c.clone(), h.clone()
    c2[:, 6:] += 1.0
    h2[:, 6:] += 1.0
    out2, c_new2, h_new2 = cell(x, 0, c2, h2)
    assert torch.equal(c_new2[:, :6], c_new[:, :6]) and torch.equal(h_new2[:, :6], h_new[:, :6])
    assert not torch.equal(c_new2[:, 6:], c_new[:, 6:])
    assert torch.equal(out2[:, 8:14], out[:, 8:14])  # b^0..b^2 unchanged
    # Stream 1 alone gives stream 1's result of the batch.
    one, c_one, h_one = cell(x[1:], 0, c[1:], h[1:])
    torch.testing.assert_close(one, out[1:], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(c_one, c_new[1:], rtol=1e-6, atol=1e-6)


@torch.no_grad()
def test_without_state_update_the_output_is_the_same_and_the_state_is_kept():
    torch.manual_seed(0)
    cell = GroupedBottleneckLSTM([6, 3], state_channels=8, groups=4)
    x = torch.rand(2, 3, 4, 4)
    c, h = torch.randn(2, 8, 4, 4), torch.rand(2, 8, 4, 4)
    updated, c_new, h_new = cell(x, 1, c, h)
    kept, c_kept, h_kept = cell(x, 1, c, h, update_state=False)
    assert torch.equal(kept, updated)
    assert c_kept is c and h_kept is h
    assert torch.equal(kept[:, :8], h_new) and not torch.equal(h_new, h)


@torch.no_grad()
def test_full_state_pre_bottleneck_reads_all_of_h():
    torch.manual_seed(0)
    cell = GroupedBottleneckLSTM([6], state_channels=8, groups=4, pre_bottleneck_state="full")
    assert cell.pre_bottleneck[0].pointwise.weight.shape == (8, 6 + 8, 1, 1)
    x, c, h = torch.rand(2, 6, 5, 5), torch.randn(2, 8, 5, 5), torch.rand(2, 8, 5, 5)
    out, _, _ = cell(x, 0, c, h)
    h2 = h.clone()
    h2[:, 6:] += 1.0
    out2, _, _ = cell(x, 0, c, h2)
    assert out.shape == (2, 16, 5, 5)
    assert (out2[:, 8:14] - out[:, 8:14]).abs().amax(dim=(0, 2, 3)).gt(0).all()  # every b^k sees h^3
    with pytest.raises(ValueError):
        GroupedBottleneckLSTM([6], state_channels=8, groups=4, pre_bottleneck_state="half")
