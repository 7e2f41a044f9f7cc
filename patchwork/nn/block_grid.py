"""BlockCopy's execution grid (Verelst and Tuytelaars, ICCV 2021, Sec. 3.1): the frame cut into blocks.

The frame is cut into square blocks of ``block_size`` pixels; an execution mask
``(B, H // bs, W // bs)`` says which blocks of each stream run this frame. The executed
blocks of all streams are stacked on the batch dimension (stream by stream, each in
raster order) and placed at every layer like Patchwork's windows are: a
:class:`~patchwork.nn.window_ops.WindowPlacement` per layer stride, each block with the
index of its stream, so the Patchwork cells run them unchanged.

The index tables of every block position are computed once per map geometry and kept;
a frame only picks the rows of its executed blocks (one ``index_select`` per geometry).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from patchwork.nn.window_grid import NETWORK_STRIDE
from patchwork.nn.window_ops import WindowPlacement


class BlockGrid:
    """Square blocks of ``block_size`` pixels.

    Args:
        block_size: ``bs``, the side of a block in pixels (the paper uses 128 at 2048x1024).
        align: the network stride every block boundary must fall on (32 for MobileNetV2
            and ResNet), so a block is a whole number of cells at every layer.

    Raises:
        ValueError: ``block_size`` is not a positive multiple of ``align``.
    """

    def __init__(self, block_size: int, align: int = NETWORK_STRIDE) -> None:
        if block_size < 1 or align < 1 or block_size % align:
            raise ValueError(
                f"block_size must be a positive multiple of the network stride {align} so every block "
                f"is a whole number of cells at every layer; got block_size={block_size}"
            )
        self.block_size = int(block_size)
        self.align = int(align)

    def __repr__(self) -> str:
        return f"BlockGrid(block_size={self.block_size}, align={self.align})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BlockGrid) and (self.block_size, self.align) == (other.block_size, other.align)

    def __hash__(self) -> int:
        return hash((self.block_size, self.align))

    def check_image_size(self, image_size: tuple[int, int]) -> None:
        """Raise ``ValueError`` unless both sides of ``image_size = (H, W)`` are multiples of ``block_size``."""
        height, width = image_size
        if height % self.block_size or width % self.block_size or height <= 0 or width <= 0:
            bs = self.block_size
            raise ValueError(
                f"image size {height}x{width} does not fit {self!r}: both sides must be divisible by the "
                f"block size {bs} (e.g. {max(height // bs, 1) * bs}x{max(width // bs, 1) * bs})"
            )

    def blocks_per_axis(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """``(H // bs, W // bs)``: the execution mask's spatial shape."""
        self.check_image_size(image_size)
        return image_size[0] // self.block_size, image_size[1] // self.block_size

    def num_blocks(self, image_size: tuple[int, int]) -> int:
        """Blocks per frame."""
        rows, cols = self.blocks_per_axis(image_size)
        return rows * cols

    def block_cells(self, stride: int) -> int:
        """Side of a block in cells of a layer with ``stride`` (which must divide ``block_size``)."""
        if self.block_size % stride:
            raise ValueError(f"stride {stride} does not divide the block size {self.block_size}")
        return self.block_size // stride

    def full_mask(
        self, batch_size: int, image_size: tuple[int, int], device: torch.device | str | None = None
    ) -> Tensor:
        """Every block executed, BoolTensor ``(B, H // bs, W // bs)`` (a video's first frame)."""
        return torch.ones(batch_size, *self.blocks_per_axis(image_size), dtype=torch.bool, device=device)

    def _all_blocks(self, batch: int, blocks: tuple[int, int], stride: int, device: torch.device) -> WindowPlacement:
        """Every block of ``batch`` streams at ``stride`` (cached with its index tables)."""
        cache = self.__dict__.setdefault("_all_blocks_cache", {})
        key = (batch, blocks, stride, device)
        if key not in cache:
            streams, rows, cols = torch.ones(batch, *blocks, dtype=torch.bool, device=device).nonzero(as_tuple=True)
            cache[key] = WindowPlacement(torch.stack((rows, cols), dim=1) * self.block_cells(stride), streams)
        return cache[key]

    def placements(self, mask: Tensor, strides: Iterable[int]) -> dict[int, WindowPlacement]:
        """The executed blocks at each layer stride.

        Args:
            mask: ``(B, H // bs, W // bs)`` bool (or 0/1), True = execute.
            strides: layer strides relative to the image, each dividing ``block_size``.
        Returns:
            ``{stride: WindowPlacement}``; every placement holds the same ``N`` blocks in the
            same order (stream by stream, raster order within a stream) with corners in cells
            of that stride and ``streams`` ``(N,)``. Finding the executed blocks costs one
            device sync per frame (the number of blocks sets every tensor's shape).
        """
        if mask.dim() != 3:
            raise ValueError(f"execution mask must be (B, H // bs, W // bs), got shape {tuple(mask.shape)}")
        ids = mask.to(torch.bool).reshape(-1).nonzero().squeeze(1)  # (N,) flat block ids, stream-major
        batch, blocks = mask.shape[0], (mask.shape[1], mask.shape[2])
        placements = {}
        for stride in strides:
            every = self._all_blocks(batch, blocks, stride, mask.device)
            placements[stride] = _ExecutedBlocks(every, ids)
        return placements

    def to_pixels(self, blocks: Tensor) -> Tensor:
        """Per-block values ``(..., H // bs, W // bs)`` repeated over their pixels, ``(..., H, W)``."""
        bs = self.block_size
        return blocks.repeat_interleave(bs, dim=-2).repeat_interleave(bs, dim=-1)


class _ExecutedBlocks(WindowPlacement):
    """The executed subset ``ids`` of every block's placement: index tables are rows of its tables."""

    def __init__(self, every: WindowPlacement, ids: Tensor) -> None:
        super().__init__(every.corners.index_select(0, ids), every.streams.index_select(0, ids))
        self._every, self._ids = every, ids

    def _rows_of(self, table: Tensor) -> Tensor:
        return table.view(self._every.num_windows, -1).index_select(0, self._ids).view(-1, *table.shape[1:])

    def cell_index(self, map_size: tuple[int, int], shift: tuple[int, int], size: tuple[int, int]) -> Tensor:
        key = (*map_size, *shift, *size)
        if key not in self._indices:
            self._indices[key] = self._rows_of(self._every.cell_index(map_size, shift, size)).reshape(-1)
        return self._indices[key]

    def row_index(self, map_size: tuple[int, int], shift: tuple[int, int], size: tuple[int, int]) -> Tensor:
        key = (-2, *map_size, *shift, *size)
        if key not in self._indices:
            self._indices[key] = self._rows_of(self._every.row_index(map_size, shift, size)).reshape(-1)
        return self._indices[key]

    def outside_frame(self, frame_size: tuple[int, int], offset: tuple[int, int], size: tuple[int, int]) -> Tensor:
        key = (-1, *frame_size, *offset, *size)
        if key not in self._indices:
            self._indices[key] = self._every.outside_frame(frame_size, offset, size).index_select(0, self._ids)
        return self._indices[key]
