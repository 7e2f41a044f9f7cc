import pytest
import torch

from patchwork.nn import WindowGrid


@pytest.mark.parametrize(("slices", "span", "count"), [(1, 1, 1), (2, 1, 4), (4, 2, 9), (4, 1, 16)])
def test_number_of_windows_is_paper_count(slices, span, count):
    assert WindowGrid(slices, span).num_windows == count == (slices - span + 1) ** 2


def test_windows_are_row_major_with_corners_at_multiples_of_one_over_m():
    grid = WindowGrid(4, 2)
    # Window i * (M - N + 1) + j has its top-left at (i / M, j / M) of a 256 x 512 frame.
    offsets = grid.offsets(torch.arange(9), (256, 512))
    expected = torch.tensor([[i * 64, j * 128] for i in range(3) for j in range(3)])
    assert torch.equal(offsets, expected)
    assert grid.window_size((256, 512)) == (128, 256)


def test_geometry_at_feature_stride():
    grid = WindowGrid(4, 1)
    assert grid.window_size((384, 384), stride=32) == (3, 3)
    assert torch.equal(grid.offsets(torch.tensor([5]), (384, 384), stride=32), torch.tensor([[3, 3]]))
    assert torch.equal(grid.boxes((128, 128), stride=32)[6], torch.tensor([2, 1, 3, 2]))


@pytest.mark.parametrize("size", [(100, 128), (128, 96), (64, 64)])
def test_image_size_not_divisible_by_m_times_32_is_rejected_naming_sizes(size):
    grid = WindowGrid(4, 2)
    with pytest.raises(ValueError, match=rf"{size[0]}x{size[1]}.*128"):
        grid.check_image_size(size)


def test_invalid_grid_is_rejected():
    with pytest.raises(ValueError):
        WindowGrid(2, 3)


def test_crop_cuts_each_streams_own_window():
    grid = WindowGrid(2, 1)
    frames = torch.arange(3 * 2 * 64 * 64, dtype=torch.float32).view(3, 2, 64, 64)
    windows = torch.tensor([3, 0, 1])
    crops = grid.crop(frames, windows)
    assert crops.shape == (3, 2, 32, 32)
    assert torch.equal(crops[0], frames[0, :, 32:, 32:])
    assert torch.equal(crops[1], frames[1, :, :32, :32])
    assert torch.equal(crops[2], frames[2, :, :32, 32:])


def test_crop_of_overlapping_windows_and_bad_indices():
    grid = WindowGrid(4, 2)
    frames = torch.randn(2, 1, 128, 128)
    crops = grid.crop(frames, torch.tensor([4, 8]))
    assert torch.equal(crops[0], frames[0, :, 32:96, 32:96])
    assert torch.equal(crops[1], frames[1, :, 64:, 64:])
    with pytest.raises(ValueError, match="window indices"):
        grid.crop(frames, torch.tensor([0, 9]))
