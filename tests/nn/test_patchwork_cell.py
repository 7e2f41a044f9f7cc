import pytest
import torch
from torch import nn

from patchwork.nn import FrameMemory, PatchworkCell, WindowPlacement, conv_context


def test_context_derived_from_conv_hand_computed():
    assert conv_context(kernel_size=3, stride=1, padding=1, dilation=1) == (1, 1)
    # PyTorch padding=1 with stride 2 on an even input: 1 cell above, none below.
    assert conv_context(kernel_size=3, stride=2, padding=1, dilation=1) == (1, 0)
    assert conv_context(kernel_size=3, stride=1, padding=2, dilation=2) == (2, 2)
    assert conv_context(kernel_size=5, stride=2, padding=2, dilation=1) == (2, 1)
    assert conv_context(kernel_size=3, stride=4, padding=1, dilation=1) == (1, -2)


CONVS = [
    dict(in_channels=4, out_channels=6, kernel_size=3, stride=1, padding=1),
    dict(in_channels=4, out_channels=4, kernel_size=3, stride=2, padding=1, groups=4),
    dict(in_channels=4, out_channels=8, kernel_size=3, stride=1, padding=2, dilation=2, groups=2),
    dict(in_channels=4, out_channels=3, kernel_size=5, stride=2, padding=2),
    dict(in_channels=4, out_channels=3, kernel_size=(3, 5), stride=1, padding="same"),
    dict(in_channels=4, out_channels=3, kernel_size=4, stride=1, padding="same"),
    dict(in_channels=4, out_channels=3, kernel_size=3, stride=4, padding=1),
]


@pytest.mark.parametrize("spec", CONVS, ids=lambda spec: str(spec))
def test_window_pass_over_full_memory_equals_crop_of_full_output(spec):
    torch.manual_seed(0)
    conv = nn.Conv2d(**spec)
    cell = PatchworkCell(conv)
    frame = torch.randn(2, 4, 16, 24)
    full = conv(frame)
    memory = cell.memory.write_full(frame)
    # Two streams at different windows, corners on the stride grid, windows touching frame edges.
    corners = torch.tensor([[0, 8], [8, 16]])
    window = torch.stack([frame[0, :, 0:8, 8:16], frame[1, :, 8:16, 16:24]])
    with torch.no_grad():
        out, _ = cell(window, memory.clone(), WindowPlacement(corners))
    s = conv.stride[0]
    for b, (top, left) in enumerate(corners.tolist()):
        h, w = out.shape[-2:]
        expected = full[b, :, top // s : top // s + h, left // s : left // s + w]
        torch.testing.assert_close(out[b], expected, rtol=1e-5, atol=1e-5)
    assert out.shape[-2:] == (8 // s, 8 // s)


def test_forward_full_equals_the_conv():
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)
    cell = PatchworkCell(conv)
    frame = torch.randn(1, 3, 8, 8)
    out, memory = cell.forward_full(frame)
    torch.testing.assert_close(out, conv(frame))
    assert torch.equal(cell.memory.frame(memory), frame)


def test_state_update_overwrites_window_only_and_keeps_the_rest():
    memory_module = FrameMemory(channels=2, stride=1, border=(1, 0, 1, 0))
    memory = memory_module.init(2, (4, 4))
    assert memory.shape == (2, 2, 5, 5)
    first = torch.ones(2, 2, 2, 2)
    with torch.no_grad():
        memory = memory_module.write(memory, first, WindowPlacement(torch.tensor([[0, 0], [2, 2]])))
        memory = memory_module.write(memory, 2 * first, WindowPlacement(torch.tensor([[0, 2], [2, 2]])))
    frame = memory_module.frame(memory)
    expected0 = torch.tensor([[1, 1, 2, 2], [1, 1, 2, 2], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.float32)
    expected1 = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 2, 2], [0, 0, 2, 2]], dtype=torch.float32)
    assert torch.equal(frame[0, 0], expected0) and torch.equal(frame[1, 1], expected1)
    assert memory[:, :, 0].abs().sum() == 0 and memory[:, :, :, 0].abs().sum() == 0  # border stays zero


def test_context_comes_from_memory_and_is_zero_outside_the_frame():
    # A 3x3 all-ones kernel sums the neighbourhood: at the window's edge the sum includes
    # remembered cells; at the frame's edge, zeros.
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    nn.init.ones_(conv.weight)
    cell = PatchworkCell(conv)
    memory = cell.memory.init(1, (4, 4))
    memory = cell.memory.write_full(torch.full((1, 1, 4, 4), 10.0))
    window = torch.ones(1, 1, 2, 2)
    with torch.no_grad():
        out, memory = cell(window, memory, WindowPlacement(torch.tensor([[0, 0]])))
    # Output (0, 0): the 4 window ones, the rest is frame padding. Output (0, 1): 4 ones
    # + 2 remembered tens in column 2. Output (1, 1): 4 ones + 5 remembered tens.
    expected = torch.tensor([[4.0, 4.0 + 20.0], [4.0 + 20.0, 4.0 + 50.0]])
    assert torch.equal(out[0, 0], expected)


def test_memory_update_is_functional_under_autograd_and_in_place_without():
    conv = nn.Conv2d(2, 2, 3, padding=1)
    cell = PatchworkCell(conv)
    memory = cell.memory.init(1, (4, 4))
    window = torch.randn(1, 2, 2, 2, requires_grad=True)
    placement = WindowPlacement(torch.tensor([[2, 2]]))
    out, new_memory = cell(window, memory, placement)
    assert new_memory is not memory and memory.abs().sum() == 0
    out.sum().backward()
    assert window.grad is not None and conv.weight.grad is not None
    with torch.no_grad():
        _, same = cell(window.detach(), memory, placement)
    assert same is memory and memory.abs().sum() > 0


def test_non_zero_padding_mode_is_rejected():
    with pytest.raises(ValueError, match="padding_mode"):
        PatchworkCell(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"))


def test_cell_keeps_torchvision_parameter_names():
    conv = nn.Conv2d(2, 2, 3, padding=1)
    cell = PatchworkCell(conv)
    assert set(cell.state_dict()) == {"weight", "bias"}
    assert cell.weight is conv.weight


def test_window_tables_give_the_indices_computed_from_corners():
    from patchwork.nn.window_ops import WindowTables

    corners = torch.tensor([[0, 0], [0, 2], [2, 0], [2, 2]])
    tables = WindowTables(corners)
    windows = torch.tensor([3, 1, 1])
    looked_up = tables.place(windows)
    computed = WindowPlacement(corners[windows])
    for map_size, shift, size in (((6, 6), (1, 1), (2, 2)), ((4, 4), (0, 0), (2, 2)), ((8, 5), (1, 0), (3, 3))):
        assert torch.equal(looked_up.cell_index(map_size, shift, size), computed.cell_index(map_size, shift, size))
    assert torch.equal(looked_up.corners, corners[windows]) and looked_up.num_windows == 3
    memory = torch.randn(3, 2, 6, 6).contiguous(memory_format=torch.channels_last)
    window = torch.randn(3, 2, 2, 2)
    a = FrameMemory(2, 1, border=(1, 1, 1, 1)).write(memory.clone(), window, looked_up)
    b = FrameMemory(2, 1, border=(1, 1, 1, 1)).write(memory.clone(), window, computed)
    assert torch.equal(a, b)
