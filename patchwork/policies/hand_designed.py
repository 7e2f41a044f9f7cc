"""Hand-designed attention policies: the baselines of Table 1, and a fixed window.

None of them reads scores (``needs_scores = False``), so the policy network need not run.
Every output is a LongTensor ``(B,)`` of discrete actions (Patchwork: window indices in the
row-major order of :class:`~patchwork.nn.window_grid.WindowGrid`).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from patchwork.nn.window_grid import WindowGrid
from patchwork.policies.policy import rng_device


class RandomPolicy:
    """Table 1's "Random": each stream picks a window uniformly at random, independently.

    Args:
        num_windows: size of the action space (``WindowGrid.num_windows``).
    """

    needs_scores = False
    label = "Random"

    def __init__(self, num_windows: int) -> None:
        if num_windows < 1:
            raise ValueError(f"num_windows must be positive, got {num_windows}")
        self.num_windows = int(num_windows)

    def select(self, q_values: Tensor | None, steps: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``steps (B,)`` -> uniform LongTensor ``(B,)`` in ``[0, num_windows)`` on ``steps``' device."""
        actions = torch.randint(0, self.num_windows, steps.shape, generator=generator, device=rng_device(generator))
        return actions.to(steps.device)

    def __repr__(self) -> str:
        return f"RandomPolicy(num_windows={self.num_windows})"


def scan_order(grid: WindowGrid | tuple[int, int], order: Literal["raster", "snake"] = "raster") -> Tensor:
    """The window indices of one scanning cycle, LongTensor ``(num_windows,)``.

    ``"raster"``: row by row, each row left to right (``0, 1, ..., n - 1``).
    ``"snake"`` (boustrophedon): even rows left to right, odd rows right to left, so each
    step moves to an adjacent window (the window slides by one slice, ``1/M`` of the frame);
    only the wrap from the last row back to the first jumps.
    E.g. 3x3 windows (M=4, N=2): raster ``0 1 2 3 4 5 6 7 8``, snake ``0 1 2 5 4 3 6 7 8``.
    """
    rows, cols = _layout(grid)
    indices = torch.arange(rows * cols).view(rows, cols)  # row-major
    if order == "snake":
        indices[1::2] = indices[1::2].flip(-1)
    elif order != "raster":
        raise ValueError(f"scan order must be 'raster' or 'snake', got {order!r}")
    return indices.flatten()


def _layout(grid: WindowGrid | tuple[int, int]) -> tuple[int, int]:
    """``(rows, cols)`` of the windows: a grid's positions per axis, or the layout itself."""
    if isinstance(grid, WindowGrid):
        return grid.positions_per_axis, grid.positions_per_axis
    rows, cols = grid
    return int(rows), int(cols)


class ScanningPolicy:
    """Table 1's "Scanning": deterministically visit every window in a fixed cycle.

    Stream ``b`` at frame index ``steps[b]`` looks at ``scan_order(grid, order)[steps[b] mod
    num_windows]``, so every window is visited exactly once in any ``num_windows``
    consecutive frames of a stream, and each stream scans on its own clock.

    Args:
        grid: the window grid, or the ``(rows, cols)`` layout of the actions
            (a ``Discrete`` space's ``layout``).
        order: ``"raster"`` or ``"snake"``, see :func:`scan_order`.
    """

    needs_scores = False
    label = "Scanning"

    def __init__(self, grid: WindowGrid, order: Literal["raster", "snake"] = "raster") -> None:
        self.grid = grid
        self.order = order
        self.cycle = scan_order(grid, order)  # (num_windows,)

    def select(self, q_values: Tensor | None, steps: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``steps (B,)`` -> LongTensor ``(B,)``; ``q_values`` and ``generator`` are unused."""
        position = torch.remainder(steps.long(), self.cycle.numel())  # (B,)
        return self.cycle.to(steps.device)[position]

    def __repr__(self) -> str:
        return f"ScanningPolicy(grid={self.grid!r}, order={self.order!r})"


class FixedPolicy:
    """Always the same window, e.g. ``FixedPolicy(0)`` for the single-frame model (M = N = 1).

    Args:
        window: the window index.
    """

    needs_scores = False
    label = "Fixed"

    def __init__(self, window: int) -> None:
        if window < 0:
            raise ValueError(f"window must be a non-negative index, got {window}")
        self.window = int(window)

    def select(self, q_values: Tensor | None, steps: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``steps (B,)`` -> LongTensor ``(B,)`` filled with ``window``."""
        return torch.full_like(steps, self.window, dtype=torch.long)

    def __repr__(self) -> str:
        return f"FixedPolicy(window={self.window})"
