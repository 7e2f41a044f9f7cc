"""The discrete attention action space of Patchwork (Sec. 3.1).

Each frame axis is cut into ``M`` equal slices and a window spans ``N`` adjacent
slices, giving ``(M - N + 1) ** 2`` windows of relative size ``N / M``. Windows are
indexed row-major: window ``i * (M - N + 1) + j`` has its top-left corner at
``(i / M, j / M)`` of the frame.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Total stride of MobileNetV2's last feature map. Image sides must be multiples of
#: ``M * NETWORK_STRIDE`` so every window boundary falls on a cell of every layer.
NETWORK_STRIDE = 32


class WindowGrid:
    """An ``(M, N)`` grid of attention windows.

    Args:
        slices: ``M``, how many slices each frame axis is cut into.
        span: ``N``, how many adjacent slices one window covers (``1 <= N <= M``).
        align: the stride every window boundary must be aligned to (32 for
            MobileNetV2, whose deepest layer has stride 32).

    ``WindowGrid(1, 1)`` is the single-frame model: one window, the whole frame.
    """

    def __init__(self, slices: int, span: int, align: int = NETWORK_STRIDE) -> None:
        if not (1 <= span <= slices):
            raise ValueError(f"WindowGrid needs 1 <= N <= M, got M={slices}, N={span}")
        self.slices = int(slices)
        self.span = int(span)
        self.align = int(align)

    @property
    def positions_per_axis(self) -> int:
        """``M - N + 1``: window positions along one axis."""
        return self.slices - self.span + 1

    @property
    def num_windows(self) -> int:
        """``(M - N + 1) ** 2``: the size of the action space."""
        return self.positions_per_axis**2

    @property
    def area_fraction(self) -> float:
        """Window area over frame area, ``(N / M) ** 2``."""
        return (self.span / self.slices) ** 2

    @property
    def is_full_frame(self) -> bool:
        """True for ``M == N``: a single window covering the whole frame."""
        return self.slices == self.span

    def __repr__(self) -> str:
        return f"WindowGrid(M={self.slices}, N={self.span})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WindowGrid) and (self.slices, self.span, self.align) == (
            other.slices,
            other.span,
            other.align,
        )

    def __hash__(self) -> int:
        return hash((self.slices, self.span, self.align))

    def check_image_size(self, image_size: tuple[int, int]) -> None:
        """Raise ``ValueError`` unless both sides are divisible by ``M * align``."""
        height, width = image_size
        unit = self.slices * self.align
        if height % unit or width % unit:
            raise ValueError(
                f"image size {height}x{width} does not fit {self!r}: both sides must be "
                f"divisible by M*{self.align} = {unit} so every window is aligned to the "
                f"stride-{self.align} grid (e.g. {(height // unit or 1) * unit}x"
                f"{(width // unit or 1) * unit})"
            )

    def window_size(self, image_size: tuple[int, int], stride: int = 1) -> tuple[int, int]:
        """``(h, w)`` of every window, in cells of a layer with the given stride."""
        self.check_image_size(image_size)
        height, width = image_size
        return (height // stride // self.slices * self.span, width // stride // self.slices * self.span)

    def slice_size(self, image_size: tuple[int, int], stride: int = 1) -> tuple[int, int]:
        """``(H / M, W / M)`` in cells of a layer with the given stride: the step between windows."""
        self.check_image_size(image_size)
        height, width = image_size
        return (height // stride // self.slices, width // stride // self.slices)

    def window_rows_cols(self, windows: Tensor) -> tuple[Tensor, Tensor]:
        """Grid position ``(i, j)`` of each window index; both LongTensors shaped like ``windows``."""
        windows = torch.as_tensor(windows, dtype=torch.long)
        if windows.numel() and (windows.min() < 0 or windows.max() >= self.num_windows):
            raise ValueError(f"window indices must lie in [0, {self.num_windows}) for {self!r}")
        per_axis = self.positions_per_axis
        return windows // per_axis, windows % per_axis

    def mirror(self, windows: Tensor) -> Tensor:
        """Index of the horizontally mirrored window: ``(i, j) -> (i, P - 1 - j)``, ``P`` positions per axis.

        A window spanning ``[j / M, (j + N) / M)`` mirrors to ``[(M - N - j) / M, ...)``, i.e.
        grid column ``M - N - j = P - 1 - j``: the mirror of a window is itself a window.

        Args:
            windows: LongTensor of window indices, any shape.
        Returns:
            LongTensor of the same shape.
        """
        rows, cols = self.window_rows_cols(windows)
        per_axis = self.positions_per_axis
        return rows * per_axis + (per_axis - 1 - cols)

    def offsets(self, windows: Tensor, image_size: tuple[int, int], stride: int = 1) -> Tensor:
        """Top-left corner ``(top, left)`` of each window, in cells at ``stride``.

        Args:
            windows: LongTensor ``(B,)`` of window indices.
        Returns:
            LongTensor ``(B, 2)``.
        """
        rows, cols = self.window_rows_cols(windows)
        step_h, step_w = self.slice_size(image_size, stride)
        return torch.stack((rows * step_h, cols * step_w), dim=-1)

    def boxes(self, image_size: tuple[int, int], stride: int = 1) -> Tensor:
        """Every window as an ``(x1, y1, x2, y2)`` box in cells at ``stride``.

        Returns:
            LongTensor ``(num_windows, 4)``, row-major window order; ``x2, y2`` exclusive.
        """
        offsets = self.offsets(torch.arange(self.num_windows), image_size, stride)
        h, w = self.window_size(image_size, stride)
        top, left = offsets.unbind(-1)
        return torch.stack((left, top, left + w, top + h), dim=-1)

    def crop(self, frames: Tensor, windows: Tensor, stride: int = 1) -> Tensor:
        """Cut each stream's window out of a batch of frames or feature maps.

        Args:
            frames: ``(B, C, H, W)`` with ``H, W`` the full-frame size at ``stride``
                (the image itself for ``stride=1``).
            windows: LongTensor ``(B,)``, one window index per stream.
        Returns:
            ``(B, C, h, w)`` with ``h = H * N / M``; a copy, batched without a Python loop.
        """
        if frames.dim() != 4:
            raise ValueError(f"crop expects (B, C, H, W) frames, got shape {tuple(frames.shape)}")
        image_size = (frames.shape[-2] * stride, frames.shape[-1] * stride)
        windows = torch.as_tensor(windows, dtype=torch.long, device=frames.device).reshape(-1)
        if windows.shape[0] != frames.shape[0]:
            raise ValueError(f"got {windows.shape[0]} windows for a batch of {frames.shape[0]} frames")
        h, w = self.window_size(image_size, stride)
        step_h, step_w = self.slice_size(image_size, stride)
        # unfold is a view: (B, C, M-N+1, M-N+1, h, w) holds every window without a copy.
        tiles = frames.unfold(2, h, step_h).unfold(3, w, step_w)
        rows, cols = self.window_rows_cols(windows)
        batch = torch.arange(frames.shape[0], device=frames.device)
        return tiles[batch, :, rows, cols]
