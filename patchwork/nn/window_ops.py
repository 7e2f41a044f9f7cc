"""Batched window reads and writes on full-frame maps: one window per stream, no Python loop.

Maps are kept in ``channels_last`` layout, so a map is a table of cells whose ``C``
channels are contiguous. A batch of windows is then one list of cell indices, and a
read is one ``index_select`` of contiguous rows (several times faster on the CPU than an
element-wise ``gather``); a write is one ``index_copy_``.

A :class:`WindowPlacement` holds the windows' corners for one step and caches the cell
indices per map geometry, so the many cells of a network that share a stride share one
index computation per frame.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

CHANNELS_LAST = torch.channels_last

# index_copy_ moves one element at a time on the CPU; moving 16-byte words instead of
# 4-byte floats makes the in-place state update about twice as fast (a pure bit copy).
_WIDE = torch.complex128
_WIDE_BYTES = 16


@lru_cache(maxsize=1024)
def _window_pattern(size: tuple[int, int], row_length: int, device: torch.device) -> Tensor:
    """Cell offsets ``r * row_length + c`` of an ``h x w`` window, shape ``(1, h * w)``."""
    rows = torch.arange(size[0], device=device) * row_length
    return (rows[:, None] + torch.arange(size[1], device=device)[None, :]).reshape(1, -1)


@lru_cache(maxsize=1024)
def _stream_starts(batch: int, map_size: tuple[int, int], shift: tuple[int, int], device: torch.device) -> Tensor:
    """Flat index of cell ``shift`` of each stream's map, shape ``(B,)``."""
    height, width = map_size
    return torch.arange(batch, device=device) * (height * width) + (shift[0] * width + shift[1])


@lru_cache(maxsize=256)
def _row_weights(width: int, device: torch.device) -> Tensor:
    return torch.tensor([width, 1], device=device)


class WindowPlacement:
    """Where each stream's window lies at one layer, plus cached cell indices.

    Args:
        corners: LongTensor ``(B, 2)`` of the windows' ``(top, left)`` in frame cells of
            the layer; every window read or written must lie inside the map (not
            checked: checking would cost a device sync per call).
    """

    def __init__(self, corners: Tensor) -> None:
        self.corners = corners
        self._indices: dict[tuple[int, ...], Tensor] = {}

    def cell_index(self, map_size: tuple[int, int], shift: tuple[int, int], size: tuple[int, int]) -> Tensor:
        """Flat indices ``(B * h * w,)`` of the windows in the ``(B * Hp * Wp)`` cells of a map.

        Args:
            map_size: ``(Hp, Wp)`` of the map.
            shift: ``(dy, dx)`` added to every corner (a memory's border minus the context).
            size: ``(h, w)`` of the windows read or written.
        """
        key = (*map_size, *shift, *size)
        index = self._indices.get(key)
        if index is None:
            device = self.corners.device
            first = (self.corners * _row_weights(map_size[1], device)).sum(1)
            first = first + _stream_starts(self.corners.shape[0], map_size, shift, device)
            index = (first[:, None] + _window_pattern(size, map_size[1], device)).reshape(-1)
            self._indices[key] = index
        return index


def to_channels_last(maps: Tensor) -> Tensor:
    """``maps`` in channels-last layout (itself when it already is)."""
    return maps.contiguous(memory_format=CHANNELS_LAST)


def _cells(maps: Tensor) -> Tensor:
    """``(B * H * W, C)`` view of channels-last ``maps``."""
    return maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])


def _from_cells(cells: Tensor, batch: int, size: tuple[int, int]) -> Tensor:
    """Inverse of :func:`_cells`: ``(B * h * w, C)`` rows to a channels-last ``(B, C, h, w)``."""
    return cells.view(batch, size[0], size[1], cells.shape[1]).permute(0, 3, 1, 2)


def gather_windows(
    maps: Tensor, placement: WindowPlacement, size: tuple[int, int], shift: tuple[int, int] = (0, 0)
) -> Tensor:
    """Read one window per stream.

    Args:
        maps: ``(B, C, Hp, Wp)`` full-frame maps (channels-last avoids a copy).
        placement: the windows' corners.
        size: ``(h, w)`` of the windows.
        shift: ``(dy, dx)`` added to every corner.
    Returns:
        ``(B, C, h, w)``, a new channels-last tensor; differentiable with respect to ``maps``.
    """
    maps = to_channels_last(maps)
    index = placement.cell_index(tuple(maps.shape[-2:]), shift, size)
    return _from_cells(_cells(maps).index_select(0, index), maps.shape[0], size)


def scatter_windows(
    maps: Tensor, windows: Tensor, placement: WindowPlacement, inplace: bool, shift: tuple[int, int] = (0, 0)
) -> Tensor:
    """Write one window per stream into full-frame maps.

    Args:
        maps: ``(B, C, Hp, Wp)`` channels-last.
        windows: ``(B, C, h, w)`` the values to write.
        placement: the windows' corners.
        inplace: write into ``maps`` itself (no full-frame copy; for inference) or into a
            copy (so autograd can reach both the old maps and the window).
        shift: ``(dy, dx)`` added to every corner.
    Returns:
        The updated channels-last ``(B, C, Hp, Wp)`` maps (``maps`` itself when ``inplace``).
    """
    if inplace and not maps.is_contiguous(memory_format=CHANNELS_LAST):
        raise ValueError("scatter_windows(inplace=True) needs channels-last maps")
    maps = to_channels_last(maps)
    size = (windows.shape[-2], windows.shape[-1])
    index = placement.cell_index(tuple(maps.shape[-2:]), shift, size)
    cells = _cells(maps)
    source = windows.permute(0, 2, 3, 1).reshape(-1, windows.shape[1])
    if not inplace:
        return _from_cells(cells.index_copy(0, index, source), maps.shape[0], tuple(maps.shape[-2:]))
    if (cells.shape[1] * cells.element_size()) % _WIDE_BYTES == 0 and maps.device.type == "cpu":
        cells, source = cells.view(_WIDE), source.contiguous().view(_WIDE)
    cells.index_copy_(0, index, source)
    return maps
