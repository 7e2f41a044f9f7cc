import pytest
import torch
from torch import nn

from patchwork.nn import BlockGrid, PatchworkCell, PoolingCell, WindowPlacement, gather_windows, scatter_windows


def test_blocks_per_axis_and_refusals_name_the_sizes():
    grid = BlockGrid(64)
    assert grid.blocks_per_axis((384, 256)) == (6, 4)
    assert grid.num_blocks((384, 256)) == 24
    assert grid.block_cells(32) == 2
    with pytest.raises(ValueError, match=r"100x128.*block size 64"):
        grid.check_image_size((100, 128))
    with pytest.raises(ValueError, match=r"network stride 32.*block_size=48"):
        BlockGrid(48)
    with pytest.raises(ValueError, match="stride 128 does not divide"):
        grid.block_cells(128)


def test_placements_stack_executed_blocks_stream_by_stream_with_corners_per_stride():
    grid = BlockGrid(64)
    mask = torch.tensor([[[False, True], [True, False]], [[False, False], [False, True]]])
    placements = grid.placements(mask, strides=(1, 32))
    # Raster order within a stream, streams one after the other.
    assert torch.equal(placements[1].streams, torch.tensor([0, 0, 1]))
    assert torch.equal(placements[1].corners, torch.tensor([[0, 64], [64, 0], [64, 64]]))
    assert torch.equal(placements[32].corners, torch.tensor([[0, 2], [2, 0], [2, 2]]))
    assert placements[32].num_windows == 3
    assert torch.equal(grid.full_mask(2, (128, 192)), torch.ones(2, 2, 3, dtype=torch.bool))
    pixels = torch.tensor([[1.0] * 64 + [2.0] * 64]).expand(64, -1)
    assert torch.equal(grid.to_pixels(torch.tensor([[1.0, 2.0]])), pixels)


def test_many_windows_per_stream_gather_and_scatter_hand_computed():
    maps = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    placement = WindowPlacement(torch.tensor([[0, 2], [2, 0], [2, 2]]), streams=torch.tensor([0, 1, 1]))
    windows = gather_windows(maps, placement, (2, 2))
    assert windows.shape == (3, 1, 2, 2)
    assert torch.equal(windows[0, 0], torch.tensor([[2.0, 3.0], [6.0, 7.0]]))
    assert torch.equal(windows[1, 0], torch.tensor([[24.0, 25.0], [28.0, 29.0]]))
    assert torch.equal(windows[2, 0], torch.tensor([[26.0, 27.0], [30.0, 31.0]]))
    with torch.no_grad():
        written = scatter_windows(maps.clone(memory_format=torch.channels_last), -windows, placement, inplace=True)
    expected = maps.clone()
    expected[0, :, 0:2, 2:4] *= -1
    expected[1, :, 2:4, :] *= -1
    assert torch.equal(written, expected)
    # A shifted read: every corner moves by (1, 1), cells (1, 3) of stream 0, (3, 1) and (3, 3) of stream 1.
    assert torch.equal(gather_windows(maps, placement, (1, 1), shift=(1, 1)).flatten(), torch.tensor([7.0, 29.0, 31.0]))


def test_outside_frame_marks_the_cells_beyond_the_frame_edges():
    placement = WindowPlacement(torch.tensor([[0, 0], [2, 2]]), streams=torch.tensor([0, 0]))
    outside = placement.outside_frame((4, 4), offset=(-1, -1), size=(3, 3))
    assert outside.shape == (2, 1, 3, 3)
    assert torch.equal(outside[0, 0], torch.tensor([[1, 1, 1], [1, 0, 0], [1, 0, 0]], dtype=torch.bool))
    assert torch.equal(outside[1, 0], torch.tensor([[0, 0, 0], [0, 0, 0], [0, 0, 0]], dtype=torch.bool))
    assert placement.outside_frame((4, 4), (-1, -1), (3, 3)) is outside  # cached


def _blocks_of(frame: torch.Tensor, corners: torch.Tensor, streams: torch.Tensor, size: int) -> torch.Tensor:
    windows = zip(corners.tolist(), streams.tolist())
    return torch.stack([frame[s, :, r : r + size, c : c + size] for (r, c), s in windows])


OPS = [
    ("conv", lambda: nn.Conv2d(4, 6, 3, padding=1)),
    ("strided depthwise", lambda: nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4)),
    ("dilated", lambda: nn.Conv2d(4, 5, 3, padding=2, dilation=2)),
    ("max pool", lambda: nn.MaxPool2d(3, stride=2, padding=1)),
    ("avg pool", lambda: nn.AvgPool2d(3, stride=1, padding=1)),
]


@pytest.mark.parametrize(("name", "make"), OPS, ids=[name for name, _ in OPS])
def test_stacked_blocks_over_a_full_memory_equal_the_blocks_of_the_full_output(name, make):
    torch.manual_seed(0)
    op = make()
    cell = PatchworkCell(op) if isinstance(op, nn.Conv2d) else PoolingCell(op, channels=4)
    # Negative inputs: a max pooling that padded with zeros instead of -inf would differ at the edges.
    frame = torch.randn(2, 4, 16, 24) - 3.0
    full = op(frame)
    _, memory = cell.forward_full(frame)
    corners, streams = torch.tensor([[0, 0], [8, 16], [0, 8], [8, 16]]), torch.tensor([0, 0, 1, 1])
    with torch.no_grad():
        out, _ = cell(_blocks_of(frame, corners, streams, 8), memory, WindowPlacement(corners, streams))
    s = 16 // full.shape[-2]
    expected = _blocks_of(full, corners // s, streams, 8 // s)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_blocks_read_fresh_neighbours_and_remembered_ones():
    # Two adjacent blocks of one stream executed together: each one's halo holds the other's
    # new values, and the remembered ones elsewhere.
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    nn.init.ones_(conv.weight)
    cell = PatchworkCell(conv)
    memory = cell.memory.write_full(torch.full((1, 1, 4, 4), 10.0))
    placement = WindowPlacement(torch.tensor([[0, 0], [0, 2]]), torch.tensor([0, 0]))
    with torch.no_grad():
        out, memory = cell(torch.ones(2, 1, 2, 2), memory, placement)
    # Output (1, 1) of block 0 sums rows 0-2, cols 0-2: rows 0-1 are new ones (6 cells), row 2
    # is remembered tens (3 cells).
    assert out[0, 0, 1, 1] == 6.0 + 30.0
    # Output (0, 0) of block 1 sums rows -1..1 (row -1 is the frame's padding), cols 1-3:
    # column 1 belongs to block 0 and holds its new ones, not the remembered tens (24).
    assert out[1, 0, 0, 0] == 6.0
    assert torch.equal(cell.memory.frame(memory)[0, 0, 2:], torch.full((2, 4), 10.0))


def test_pooling_cell_refuses_layouts_it_cannot_align():
    with pytest.raises(ValueError, match="ceil_mode"):
        PoolingCell(nn.MaxPool2d(3, 2, 1, ceil_mode=True), channels=1)
    with pytest.raises(ValueError, match="count_include_pad"):
        PoolingCell(nn.AvgPool2d(3, 1, 1, count_include_pad=False), channels=1)


@pytest.mark.parametrize("size", [(2, 2), (16, 16)], ids=["cell index", "slices"])
def test_many_window_reads_and_writes_are_differentiable(size):
    # Small windows go through the cell index, large ones through per-window slices.
    h, w = size
    maps = torch.randn(2, 2, 2 * h + 1, 2 * w, dtype=torch.float64, requires_grad=True)  # a 1-row border on top
    windows = torch.randn(3, 2, h, w, dtype=torch.float64, requires_grad=True)
    placement = WindowPlacement(torch.tensor([[0, w], [h, 0], [h, w]]), torch.tensor([0, 1, 1]))

    def read_after_write(maps, windows):
        written = scatter_windows(maps.contiguous(memory_format=torch.channels_last), windows, placement, False, (1, 0))
        return gather_windows(written, placement, (h + 1, w))  # each window with the row above it

    if h > 2:
        assert placement.host_windows == [(0, 0, w), (1, h, 0), (1, h, w)]
    torch.autograd.gradcheck(read_after_write, (maps, windows), fast_mode=True)


def test_executed_blocks_pick_the_rows_of_every_blocks_cached_tables():
    grid = BlockGrid(64)
    masks = (
        torch.tensor([[[True, False, True], [False, True, False]]]).expand(2, -1, -1).clone(),
        torch.tensor([[[False, False, False], [True, False, False]], [[True, True, True], [True, True, True]]]),
    )
    for mask in masks:
        placement = grid.placements(mask, [32])[32]
        fresh = WindowPlacement(placement.corners, placement.streams)
        for args in (((4, 6), (1, 1), (2, 2)), ((6, 8), (0, 0), (4, 4))):
            assert torch.equal(placement.cell_index(*args), fresh.cell_index(*args))
            assert torch.equal(placement.row_index(*args), fresh.row_index(*args))
        args = ((4, 6), (-1, -1), (4, 4))
        assert torch.equal(placement.outside_frame(*args), fresh.outside_frame(*args))
