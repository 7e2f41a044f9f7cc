"""Batched window reads and writes on full-frame maps: one window per stream, no Python loop.

Both work on linear indices into the flattened ``H * W`` plane, so a batch of streams
with different windows costs one ``gather`` or ``scatter`` over window-sized tensors.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor


@lru_cache(maxsize=512)
def _window_pattern(height: int, width: int, row_length: int, device: torch.device) -> Tensor:
    """Linear offsets ``r * row_length + c`` of an ``height x width`` window, shape ``(h * w,)``."""
    rows = torch.arange(height, device=device) * row_length
    return (rows[:, None] + torch.arange(width, device=device)[None, :]).reshape(-1)


def _linear_index(maps: Tensor, corners: Tensor, size: tuple[int, int]) -> Tensor:
    """Index ``(B, C, h*w)`` (expanded, no copy) of each stream's window in ``maps.flatten(2)``."""
    batch, channels, _, row_length = maps.shape
    starts = corners[:, 0] * row_length + corners[:, 1]
    index = starts[:, None] + _window_pattern(size[0], size[1], row_length, maps.device)[None, :]
    return index[:, None, :].expand(batch, channels, index.shape[1])


def gather_windows(maps: Tensor, corners: Tensor, size: tuple[int, int]) -> Tensor:
    """Read one window per stream.

    Args:
        maps: ``(B, C, H, W)`` full-frame maps.
        corners: LongTensor ``(B, 2)`` of ``(top, left)`` in cells; every window must lie
            inside the map (not checked: checking would cost a device sync per call).
        size: ``(h, w)`` of the windows.
    Returns:
        ``(B, C, h, w)``, a new tensor; differentiable with respect to ``maps``.
    """
    index = _linear_index(maps, corners, size)
    return maps.flatten(2).gather(2, index).view(maps.shape[0], maps.shape[1], *size)


def scatter_windows(maps: Tensor, windows: Tensor, corners: Tensor, inplace: bool) -> Tensor:
    """Write one window per stream into full-frame maps.

    Args:
        maps: ``(B, C, H, W)``, contiguous.
        windows: ``(B, C, h, w)`` the values to write.
        corners: LongTensor ``(B, 2)`` of ``(top, left)`` in cells.
        inplace: write into ``maps`` itself (no full-frame copy; for inference) or into a
            copy (so autograd can reach both the old maps and the window).
    Returns:
        The updated ``(B, C, H, W)`` maps (``maps`` itself when ``inplace``).
    """
    index = _linear_index(maps, corners, windows.shape[-2:])
    source = windows.reshape(windows.shape[0], windows.shape[1], -1)
    if inplace:
        if not maps.is_contiguous():
            raise ValueError("scatter_windows(inplace=True) needs contiguous maps")
        maps.flatten(2).scatter_(2, index, source)
        return maps
    return maps.flatten(2).scatter(2, index, source).view_as(maps)
