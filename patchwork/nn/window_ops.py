"""Batched window reads and writes on full-frame maps: one or many windows per stream, no Python loop.

Maps are kept in ``channels_last`` layout, so a map is a table of cells whose ``C``
channels are contiguous. A batch of windows is then one list of cell indices, and a
read is one ``index_select`` of contiguous rows (several times faster on the CPU than an
element-wise ``gather``); a write is one ``index_copy_``.

A :class:`WindowPlacement` holds the windows' corners for one step and caches the cell
indices per map geometry, so the many cells of a network that share a stride share one
index computation per frame. Patchwork places one window per stream; BlockCopy places a
set of equal-size windows (the executed blocks of all streams, stacked on the batch
dimension), each with the index of the stream it belongs to: the same reads and writes
serve both.
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
# index_copy_ of many large windows is slower on the CPU than copying each window as a strided
# slice (rows of w * C contiguous values): 4x at 64x64-cell blocks, even at 16x16.
_SLICE_MIN_CELLS = 256


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


class WindowTables:
    """Every window of an action space at one layer, with its cell indices tabulated once.

    Patchwork's windows come from a fixed grid, so the flat cell indices of every window
    for every map geometry can be computed once; a step then looks its windows' rows up
    (one ``index_select`` per geometry) instead of recomputing indices from corners, and
    nothing is read back to the host.

    Args:
        corners: LongTensor ``(num_windows, 2)``, each window's ``(top, left)`` in frame cells.
    """

    def __init__(self, corners: Tensor) -> None:
        self.corners = corners
        self._tables: dict[tuple[int, ...], Tensor] = {}

    def cell_table(self, map_size: tuple[int, int], shift: tuple[int, int], size: tuple[int, int]) -> Tensor:
        """``(num_windows, h * w)`` flat cell indices of each window in stream 0 of a ``(Hp, Wp)`` map (cached)."""
        key = (*map_size, *shift, *size)
        table = self._tables.get(key)
        if table is None:
            first = self.corners[:, 0] * map_size[1] + self.corners[:, 1] + (shift[0] * map_size[1] + shift[1])
            table = first[:, None] + _window_pattern(size, map_size[1], self.corners.device)
            self._tables[key] = table
        return table

    def stream_offsets(self, batch: int, map_size: tuple[int, int]) -> Tensor:
        """``(B, 1)``: flat index of each stream's first cell in a ``(B, C, Hp, Wp)`` map (cached)."""
        key = (-1, batch, *map_size)
        offsets = self._tables.get(key)
        if offsets is None:
            offsets = _stream_starts(batch, map_size, (0, 0), self.corners.device)[:, None]
            self._tables[key] = offsets
        return offsets

    def place(self, windows: Tensor) -> "WindowPlacement":
        """The placement of window ``windows[b]`` in stream ``b``; ``windows`` LongTensor ``(B,)`` on the tables' device."""
        return WindowPlacement(None, tables=self, windows=windows)


class WindowPlacement:
    """Where the windows lie at one layer, plus cached cell indices.

    Args:
        corners: LongTensor ``(N, 2)`` of the windows' ``(top, left)`` in frame cells of
            the layer; every window read or written must lie inside the map (not
            checked: checking would cost a device sync per call). May be ``None`` when
            ``tables`` and ``windows`` are given (then looked up on first use).
        streams: LongTensor ``(N,)``, the stream (batch index of the full-frame maps) each
            window belongs to; ``None`` (Patchwork) means one window per stream, window
            ``n`` in stream ``n``. Windows written in one call must not overlap.
        tables: :class:`WindowTables` of the action space (one window per stream only);
            cell indices are then looked up by ``windows`` rather than computed.
        windows: LongTensor ``(N,)``, the window of each stream, rows of ``tables``.
    """

    def __init__(
        self,
        corners: Tensor | None,
        streams: Tensor | None = None,
        tables: WindowTables | None = None,
        windows: Tensor | None = None,
    ) -> None:
        if corners is None and (tables is None or windows is None):
            raise ValueError("WindowPlacement needs corners, or tables and windows")
        if tables is not None and streams is not None:
            raise ValueError("window tables serve one window per stream (streams=None)")
        self._corners = corners
        self.streams = streams
        self.tables = tables
        self.windows = windows
        self._indices: dict[tuple[int, ...], Tensor] = {}
        self._host: list[tuple[int, int, int]] | None = None

    @property
    def corners(self) -> Tensor:
        """LongTensor ``(N, 2)``: each window's ``(top, left)`` in frame cells of the layer."""
        if self._corners is None:
            self._corners = self.tables.corners.index_select(0, self.windows)
        return self._corners

    @property
    def num_windows(self) -> int:
        """``N``, the number of windows (the batch size of the windows read or written)."""
        return self.windows.shape[0] if self._corners is None else self._corners.shape[0]

    def _first_cells(self, map_size: tuple[int, int], shift: tuple[int, int]) -> Tensor:
        """Flat index ``(N,)`` of each window's top-left cell (plus ``shift``) in the ``(B * Hp * Wp)`` cells."""
        device = self.corners.device
        first = (self.corners * _row_weights(map_size[1], device)).sum(1)
        if self.streams is None:
            return first + _stream_starts(self.corners.shape[0], map_size, shift, device)
        return first + (self.streams * (map_size[0] * map_size[1]) + (shift[0] * map_size[1] + shift[1]))

    def cell_index(self, map_size: tuple[int, int], shift: tuple[int, int], size: tuple[int, int]) -> Tensor:
        """Flat indices ``(N * h * w,)`` of the windows in the ``(B * Hp * Wp)`` cells of a map.

        Args:
            map_size: ``(Hp, Wp)`` of the map.
            shift: ``(dy, dx)`` added to every corner (a memory's border minus the context).
            size: ``(h, w)`` of the windows read or written.
        """
        key = (*map_size, *shift, *size)
        index = self._indices.get(key)
        if index is None:
            if self.tables is not None:
                # One table lookup per geometry and step (the tables hold every window's indices).
                index = self.tables.cell_table(map_size, shift, size).index_select(0, self.windows)
                if index.shape[0] > 1:
                    index = index + self.tables.stream_offsets(index.shape[0], map_size)
                index = index.view(-1)
            else:
                first = self._first_cells(map_size, shift)
                index = (first[:, None] + _window_pattern(size, map_size[1], self.corners.device)).reshape(-1)
            self._indices[key] = index
        return index

    def row_index(self, map_size: tuple[int, int], shift: tuple[int, int], size: tuple[int, int]) -> Tensor:
        """Flat cell indices ``(N * h,)`` of the first cell of every window row (cached like :meth:`cell_index`)."""
        key = (-2, *map_size, *shift, *size)
        index = self._indices.get(key)
        if index is None:
            first = self._first_cells(map_size, shift)
            rows = torch.arange(size[0], device=self.corners.device) * map_size[1]
            index = (first[:, None] + rows[None, :]).reshape(-1)
            self._indices[key] = index
        return index

    @property
    def host_windows(self) -> list[tuple[int, int, int]]:
        """``(stream, top, left)`` of every window as Python ints (one device read, then cached)."""
        if self._host is None:
            streams = self.streams
            if streams is None:
                streams = torch.arange(self.num_windows, device=self.corners.device)
            self._host = [tuple(row) for row in torch.cat((streams[:, None], self.corners), dim=1).tolist()]
        return self._host

    def outside_frame(self, frame_size: tuple[int, int], offset: tuple[int, int], size: tuple[int, int]) -> Tensor:
        """Which cells of windows read at ``corner + offset`` lie outside a ``frame_size`` frame.

        Args:
            frame_size: ``(H, W)`` of the frame, in cells of the layer.
            offset: ``(dy, dx)`` added to every corner (e.g. minus the context).
            size: ``(h, w)`` of the windows read.
        Returns:
            BoolTensor ``(N, 1, h, w)``, cached like :meth:`cell_index` (a max pooling masks
            these cells with ``-inf``, the padding it implies).
        """
        key = (-1, *frame_size, *offset, *size)
        mask = self._indices.get(key)
        if mask is None:
            device = self.corners.device
            rows = self.corners[:, :1] + offset[0] + torch.arange(size[0], device=device)  # (N, h)
            cols = self.corners[:, 1:] + offset[1] + torch.arange(size[1], device=device)  # (N, w)
            outside_rows = (rows < 0) | (rows >= frame_size[0])
            outside_cols = (cols < 0) | (cols >= frame_size[1])
            mask = (outside_rows[:, :, None] | outside_cols[:, None, :])[:, None]
            self._indices[key] = mask
        return mask


def to_channels_last(maps: Tensor) -> Tensor:
    """``maps`` in channels-last layout (itself when it already is)."""
    return maps.contiguous(memory_format=CHANNELS_LAST)


def _cells(maps: Tensor) -> Tensor:
    """``(B * H * W, C)`` view of channels-last ``maps``."""
    return maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])


def _rows(maps: Tensor, width: int) -> Tensor:
    """Overlapping ``(B * H * W - width + 1, width * C)`` view of channels-last ``maps``: row ``i``
    holds the ``width`` cells starting at cell ``i`` (contiguous in memory), so one index per
    window row reads a whole row of a window."""
    channels = maps.shape[1]
    flat = maps.permute(0, 2, 3, 1).reshape(-1)
    return flat.as_strided((flat.numel() // channels - width + 1, width * channels), (channels, 1))


def _from_cells(cells: Tensor, batch: int, size: tuple[int, int]) -> Tensor:
    """Inverse of :func:`_cells`: ``(B * h * w, C)`` rows to a channels-last ``(B, C, h, w)``."""
    return cells.view(batch, size[0], size[1], cells.shape[1]).permute(0, 3, 1, 2)


class _ViewCache:
    """Holds :func:`cell_table_views`' last views; copies and pickles of its owner start empty."""

    def __init__(self) -> None:
        self.entry: tuple | None = None

    def __deepcopy__(self, memo: dict) -> "_ViewCache":
        return _ViewCache()

    def __getstate__(self) -> dict:
        return {"entry": None}


def cell_table_views(owner: object, maps: Tensor) -> tuple[Tensor, Tensor | None]:
    """The ``(B * Hp * Wp, C)`` cell view of channels-last ``maps`` and, where the bit copy of
    :func:`scatter_windows` applies, its ``(B * Hp * Wp, C / 4)`` 16-byte-word view (else ``None``).

    Cached on ``owner`` (e.g. the :class:`~patchwork.nn.FrameMemory` that ``maps`` belongs
    to) for the last ``maps`` seen: a memory written in place keeps its storage, so the
    same views serve every frame. The cache keeps that one storage alive (so no other
    tensor can take its address while the key refers to it).
    """
    key = (maps.data_ptr(), maps.device, maps.dtype, maps.shape, maps.stride())
    cache = owner.__dict__.get("_cell_views")
    if cache is None:
        cache = owner.__dict__["_cell_views"] = _ViewCache()
    if cache.entry is not None and cache.entry[0] == key:
        return cache.entry[1], cache.entry[2]
    cells = _cells(maps)
    wide = None
    if (cells.shape[1] * cells.element_size()) % _WIDE_BYTES == 0 and maps.device.type == "cpu":
        wide = cells.view(_WIDE)
    cache.entry = (key, cells, wide)
    return cells, wide


def gather_windows(
    maps: Tensor, placement: WindowPlacement, size: tuple[int, int], shift: tuple[int, int] = (0, 0)
) -> Tensor:
    """Read the windows of ``placement`` (one per stream, or a stacked set of windows).

    Args:
        maps: ``(B, C, Hp, Wp)`` full-frame maps (channels-last avoids a copy).
        placement: the windows' corners (and streams).
        size: ``(h, w)`` of the windows.
        shift: ``(dy, dx)`` added to every corner.
    Returns:
        ``(N, C, h, w)`` (``N = B`` for one window per stream), a new channels-last
        tensor; differentiable with respect to ``maps``.
    """
    maps = to_channels_last(maps)
    if placement.streams is None:
        index = placement.cell_index(tuple(maps.shape[-2:]), shift, size)
        return _from_cells(_cells(maps).index_select(0, index), placement.num_windows, size)
    # Many windows (BlockCopy's blocks): one index per window row reads ``w * C`` contiguous
    # values at once, up to ~3x faster on the CPU than one index per cell for large blocks.
    index = placement.row_index(tuple(maps.shape[-2:]), shift, size)
    rows = _rows(maps, size[1]).index_select(0, index)  # (N * h, w * C)
    return _from_cells(rows.view(-1, maps.shape[1]), placement.num_windows, size)


def scatter_windows(
    maps: Tensor, windows: Tensor, placement: WindowPlacement, inplace: bool, shift: tuple[int, int] = (0, 0)
) -> Tensor:
    """Write the windows of ``placement`` into full-frame maps.

    Args:
        maps: ``(B, C, Hp, Wp)`` channels-last.
        windows: ``(N, C, h, w)`` the values to write (``N = B`` for one window per stream).
        placement: the windows' corners (and streams); the windows must not overlap.
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
    if placement.streams is not None and size[0] * size[1] >= _SLICE_MIN_CELLS and maps.device.type == "cpu":
        return _scatter_slices(maps, windows, placement, inplace, shift)
    index = placement.cell_index(tuple(maps.shape[-2:]), shift, size)
    cells = _cells(maps)
    source = windows.permute(0, 2, 3, 1).reshape(-1, windows.shape[1])
    if not inplace:
        return _from_cells(cells.index_copy(0, index, source), maps.shape[0], tuple(maps.shape[-2:]))
    if (cells.shape[1] * cells.element_size()) % _WIDE_BYTES == 0 and maps.device.type == "cpu":
        cells, source = cells.view(_WIDE), source.contiguous().view(_WIDE)
    cells.index_copy_(0, index, source)
    return maps


def _scatter_slices(
    maps: Tensor, windows: Tensor, placement: WindowPlacement, inplace: bool, shift: tuple[int, int]
) -> Tensor:
    """:func:`scatter_windows` of many large windows, one strided slice copy per window."""
    if not inplace:
        maps = maps.clone(memory_format=CHANNELS_LAST)
    height, width = windows.shape[-2], windows.shape[-1]
    for n, (stream, top, left) in enumerate(placement.host_windows):
        top, left = top + shift[0], left + shift[1]
        maps[stream, :, top : top + height, left : left + width].copy_(windows[n])
    return maps
