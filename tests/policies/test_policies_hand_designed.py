"""Hand-designed policies (Table 1): random, scanning; and the fixed window."""

import pytest
import torch

from patchwork.nn import WindowGrid
from patchwork.policies import FixedPolicy, RandomPolicy, ScanningPolicy, scan_order

GRIDS = [WindowGrid(2, 1), WindowGrid(4, 2), WindowGrid(4, 1)]


@pytest.mark.parametrize("order", ["raster", "snake"])
@pytest.mark.parametrize("grid", GRIDS, ids=repr)
def test_scanning_visits_every_window_once_per_cycle(grid, order):
    policy = ScanningPolicy(grid, order)
    n = grid.num_windows
    # Any n consecutive frames of a stream, starting anywhere, cover all windows once.
    for start in range(n):
        actions = policy.select(None, torch.arange(start, start + n))
        assert sorted(actions.tolist()) == list(range(n))
    # Deterministic and periodic.
    steps = torch.arange(3 * n)
    assert torch.equal(policy.select(None, steps), policy.select(None, steps + n))


def test_scan_patterns_by_hand():
    grid = WindowGrid(4, 2)  # 3x3 windows
    assert scan_order(grid, "raster").tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert scan_order(grid, "snake").tolist() == [0, 1, 2, 5, 4, 3, 6, 7, 8]
    with pytest.raises(ValueError):
        scan_order(grid, "spiral")


@pytest.mark.parametrize("grid", GRIDS, ids=repr)
def test_snake_moves_to_adjacent_windows(grid):
    rows, cols = grid.window_rows_cols(scan_order(grid, "snake"))
    moves = (rows.diff().abs() + cols.diff().abs()).tolist()
    assert moves == [1] * (grid.num_windows - 1)


def test_scanning_is_per_stream():
    policy = ScanningPolicy(WindowGrid(4, 2), "snake")
    # Streams at frames 0, 4, 12 (= 3 mod 9) and 17 (= 8 mod 9).
    assert policy.select(None, torch.tensor([0, 4, 12, 17])).tolist() == [0, 4, 5, 8]


def test_random_is_seeded_and_uniform():
    policy = RandomPolicy(9)
    steps = torch.zeros(9000, dtype=torch.long)
    a = policy.select(None, steps, torch.Generator().manual_seed(1))
    b = policy.select(None, steps, torch.Generator().manual_seed(1))
    c = policy.select(None, steps, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    counts = torch.bincount(a, minlength=9)
    assert counts.numel() == 9
    # 1000 expected per window, std ~30: a 5-sigma band.
    assert int(counts.min()) > 850 and int(counts.max()) < 1150


def test_fixed_policy():
    actions = FixedPolicy(4).select(None, torch.tensor([0, 1, 2]))
    assert actions.dtype == torch.long and actions.tolist() == [4, 4, 4]
    with pytest.raises(ValueError):
        FixedPolicy(-1)
