"""The stateful Patchwork cell (Sec. 3.2), its pooling sibling, and the full-frame memory they keep.

Notation (Chai 2019, Sec. 3.2): a layer has full-frame size ``H x W`` cells; the window has
top-left ``(a, b)`` and size ``(h, w)`` cells at that layer.

* State update: ``S_t[m, n] = X_t[m - a, n - b]`` inside the window, else ``S_{t-1}[m, n]``.
* Feature propagation: ``X~_t`` is the window of ``S_t`` extended by the convolution's
  context on every side, zero outside the frame (the frame's own padding).
* Output: ``Y_t = ValidConv2d(X~_t)``.

The paper assumes stride 1 and a symmetric context ``k``. Here the context is derived
from the convolution itself so that a window pass over a memory holding the full
frame's features reproduces the crop of the full-frame output exactly, for any kernel,
stride, dilation, groups and zero padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from patchwork.nn.window_ops import (
    CHANNELS_LAST,
    WindowPlacement,
    cell_table_views,
    gather_windows,
    scatter_windows,
    to_channels_last,
)


def conv_context(kernel_size: int, stride: int, padding: int, dilation: int) -> tuple[int, int]:
    """Context a window needs on each side of one axis for a VALID conv to equal the SAME one.

    An output cell ``o`` of the padded convolution reads input cells
    ``o * stride - padding ... o * stride - padding + extent - 1`` with
    ``extent = dilation * (kernel_size - 1) + 1``. For a window of input cells
    ``[a, a + h)`` (``a`` and ``h`` multiples of ``stride``) the outputs are
    ``[a / stride, (a + h) / stride)``, which read ``[a - padding, a + h - stride - padding + extent)``.

    Returns:
        ``(before, after)`` in input cells. ``after`` may be smaller than ``before``
        (PyTorch's ``padding=1`` with stride 2 needs ``(1, 0)``; TensorFlow SAME would
        need ``(0, 1)``) and may be negative (the window's last cells are never read).
    """
    extent = dilation * (kernel_size - 1) + 1
    return padding, extent - stride - padding


def _conv_padding(conv: nn.Conv2d) -> tuple[int, int]:
    """The leading zero padding ``(top, left)`` that ``conv`` applies, whatever form it was given in."""
    if conv.padding_mode != "zeros":
        raise ValueError(
            f"a Patchwork cell replaces zero-padded convolutions; got padding_mode={conv.padding_mode!r}"
        )
    if conv.padding == "valid":
        return 0, 0
    if conv.padding == "same":
        # PyTorch's 'same' puts the odd cell of an even total on the bottom/right.
        return tuple(d * (k - 1) // 2 for k, d in zip(conv.kernel_size, conv.dilation))  # type: ignore[return-value]
    return tuple(conv.padding)  # type: ignore[return-value]


class FrameMemory(nn.Module):
    """A full-frame memory of one feature map, written one window at a time (the state update).

    The memory tensor lives in the caller's state, shaped ``(B, C, Hp, Wp)`` in
    ``channels_last`` layout (see :mod:`patchwork.nn.window_ops` for why): the
    layer's full-frame size ``(H / stride, W / stride)`` plus a fixed zero ``border``
    ``(top, bottom, left, right)`` that stands for the frame's own padding, so that
    reading a window with context never needs masks. The border is never written.

    Args:
        channels: ``C``.
        stride: the layer's stride relative to the image (its cells are ``stride`` pixels).
        border: zero cells kept around the frame on each side.
    """

    def __init__(self, channels: int, stride: int, border: tuple[int, int, int, int] = (0, 0, 0, 0)) -> None:
        super().__init__()
        self.channels = int(channels)
        self.stride = int(stride)
        self.border = tuple(int(b) for b in border)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, stride={self.stride}, border={self.border}"

    def frame_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """``(H, W)`` of the layer for an image of ``image_size`` pixels."""
        return image_size[0] // self.stride, image_size[1] // self.stride

    def init(
        self,
        batch_size: int,
        image_size: tuple[int, int],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """An empty (all-zero) memory ``(B, C, H + top + bottom, W + left + right)``, channels-last."""
        height, width = self.frame_size(image_size)
        top, bottom, left, right = self.border
        shape = (batch_size, self.channels, height + top + bottom, width + left + right)
        return torch.zeros(shape, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)

    def frame(self, memory: Tensor) -> Tensor:
        """The remembered full frame ``(B, C, H, W)``: a view of ``memory`` without its border."""
        top, bottom, left, right = self.border
        return memory[..., top : memory.shape[-2] - bottom, left : memory.shape[-1] - right]

    def write(self, memory: Tensor, window: Tensor, placement: WindowPlacement) -> Tensor:
        """State update: overwrite each stream's window with ``window``.

        Args:
            memory: ``(B, C, Hp, Wp)``.
            window: ``(B, C, h, w)`` the window's features.
            placement: the windows' ``(top, left)`` in frame cells of this layer.
        Returns:
            The new memory. Under ``torch.no_grad()`` it is ``memory`` itself, written in
            place (no full-frame copy per frame); with autograd enabled it is a new tensor
            and ``memory`` is left untouched, so gradients flow back through time.
        """
        shift = (self.border[0], self.border[2])
        return scatter_windows(memory, window, placement, inplace=not torch.is_grad_enabled(), shift=shift)

    def write_full(self, frame: Tensor) -> Tensor:
        """Remember a whole frame ``(B, C, H, W)``; returns a new memory (never an alias of ``frame``)."""
        top, bottom, left, right = self.border
        if any(self.border):
            return to_channels_last(F.pad(frame, (left, right, top, bottom)))
        return frame.clone(memory_format=torch.channels_last)


class ContextCell(nn.Module):
    """What every stateful sliding-window op shares: a memory of its input and the context it reads.

    Subclasses (:class:`PatchworkCell` for convolutions, :class:`PoolingCell` for pooling)
    derive ``context`` from their op's geometry and apply the op VALID to the window
    encased in remembered context. The same cell serves one window per stream (Patchwork)
    and a stacked set of windows, e.g. BlockCopy's executed blocks (``DESIGN`` Sec. 9): the
    windows are written into the memory first, then each is read back with its context.

    Args:
        channels: channels of the op's input.
        kernel_size, stride, padding, dilation: ``(rows, cols)`` geometry of the op.
        input_stride: stride of the op's input relative to the image (sets the memory's size).
    """

    def __init__(
        self,
        channels: int,
        kernel_size: tuple[int, int],
        stride: tuple[int, int],
        padding: tuple[int, int],
        dilation: tuple[int, int],
        input_stride: int,
    ) -> None:
        super().__init__()
        rows = conv_context(kernel_size[0], stride[0], padding[0], dilation[0])
        cols = conv_context(kernel_size[1], stride[1], padding[1], dilation[1])
        #: ``(top, bottom, left, right)`` context in input cells; negative means "trim".
        self.context = (rows[0], rows[1], cols[0], cols[1])
        self.memory = FrameMemory(channels, input_stride, border=tuple(max(c, 0) for c in self.context))

    def extend(self, memory: Tensor, placement: WindowPlacement, size: tuple[int, int]) -> Tensor:
        """Feature propagation: read each window of ``size = (h, w)`` back from ``memory`` with its context.

        Returns:
            ``X~_t`` of shape ``(N, C_in, h + top + bottom, w + left + right)``, zero where the
            context falls outside the frame.
        """
        top, bottom, left, right = self.context
        border = self.memory.border
        extended = (size[0] + top + bottom, size[1] + left + right)
        return gather_windows(memory, placement, extended, shift=(border[0] - top, border[2] - left))

    def propagate(self, window: Tensor, memory: Tensor, placement: WindowPlacement) -> tuple[Tensor, Tensor]:
        """State update and feature propagation: the window encased in remembered context.

        Args:
            window: ``X_t``, ``(N, C_in, h, w)``, the windows' input features (``N = B``
                for one window per stream).
            memory: ``S_{t-1}``, ``(B, C_in, Hp, Wp)`` (see :class:`FrameMemory`).
            placement: window top-left ``(a, b)`` in input cells, multiples of the
                op's stride.
        Returns:
            ``X~_t`` of shape ``(N, C_in, h + top + bottom, w + left + right)`` (zero where
            the context falls outside the frame) and ``S_t``.
        """
        if placement.streams is None and not torch.is_grad_enabled() and memory.is_contiguous(memory_format=CHANNELS_LAST):
            return self._propagate_in_place(window, memory, placement), memory
        memory = self.memory.write(memory, window, placement)
        return self.extend(memory, placement, (window.shape[-2], window.shape[-1])), memory

    def _propagate_in_place(self, window: Tensor, memory: Tensor, placement: WindowPlacement) -> Tensor:
        """:meth:`propagate` for inference, one window per stream: what :meth:`FrameMemory.write`
        and :meth:`extend` do, with the memory's cell table viewed once (it is written in place,
        so the views stay valid from frame to frame) and no intermediate layout checks; this
        runs once per cell per frame on Patchwork's hot path."""
        cells, wide = cell_table_views(self.memory, memory)
        map_size = (memory.shape[-2], memory.shape[-1])
        border, (top, bottom, left, right) = self.memory.border, self.context
        batch, channels, height, width = window.shape
        source = window.permute(0, 2, 3, 1).reshape(-1, channels)
        index = placement.cell_index(map_size, (border[0], border[2]), (height, width))
        if wide is None:
            cells.index_copy_(0, index, source)
        else:
            wide.index_copy_(0, index, source.contiguous().view(wide.dtype))
        size = (height + top + bottom, width + left + right)
        index = placement.cell_index(map_size, (border[0] - top, border[2] - left), size)
        return cells.index_select(0, index).view(batch, size[0], size[1], channels).permute(0, 3, 1, 2)

    def apply(self, extended: Tensor, memory: Tensor, placement: WindowPlacement) -> Tensor:
        """The op, VALID, on the extended windows ``(N, C_in, h', w')``."""
        raise NotImplementedError

    def forward(self, window: Tensor, memory: Tensor, placement: WindowPlacement) -> tuple[Tensor, Tensor]:
        """One step: state update, feature propagation, VALID op (Sec. 3.2).

        Args: as :meth:`propagate`.
        Returns:
            ``Y_t`` of shape ``(N, C_out, h / stride, w / stride)`` and ``S_t``.
        """
        extended, memory = self.propagate(window, memory, placement)
        return self.apply(extended, memory, placement), memory


class PatchworkCell(ContextCell):
    """Stateful replacement of a zero-padded convolution (Sec. 3.2, Fig. 1b).

    The cell adopts the convolution's ``weight`` and ``bias`` as its own parameters
    (same names, so a network keeps torchvision's ``state_dict`` keys when a cell takes
    a conv's place) and keeps a :class:`FrameMemory` of its *input* feature map.

    Args:
        conv: the convolution to replace; any kernel, stride, dilation, groups and zero
            padding (int, tuple, ``'same'`` or ``'valid'``). A window's outputs are exact
            wherever they lie inside the full-frame output, which for SAME-style padding
            (output size ``ceil(H / stride)``, as in MobileNetV2) is everywhere.
        input_stride: stride of the conv's input relative to the image, which sets the
            memory's size (e.g. 2 for the depthwise conv of MobileNetV2's first block).
    """

    def __init__(self, conv: nn.Conv2d, input_stride: int = 1) -> None:
        padding = _conv_padding(conv)
        super().__init__(
            conv.in_channels, tuple(conv.kernel_size), tuple(conv.stride), padding, tuple(conv.dilation), input_stride
        )
        self.in_channels = conv.in_channels
        self.out_channels = conv.out_channels
        self.kernel_size = tuple(conv.kernel_size)
        self.stride = tuple(conv.stride)
        self.dilation = tuple(conv.dilation)
        self.groups = conv.groups
        self.padding = padding
        self._full_frame_padding = conv.padding  # as given ('same' may be asymmetric)
        self.weight = conv.weight
        self.bias = conv.bias

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"dilation={self.dilation}, groups={self.groups}, context={self.context}"
        )

    def apply(self, extended: Tensor, memory: Tensor | None = None, placement: WindowPlacement | None = None) -> Tensor:
        """``ValidConv2d(X~_t)``: ``(N, C_in, h', w')`` -> ``(N, C_out, h / stride, w / stride)``."""
        return F.conv2d(extended, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    def forward(self, window: Tensor, memory: Tensor, placement: WindowPlacement) -> tuple[Tensor, Tensor]:
        """One step: state update, feature propagation, VALID convolution (Sec. 3.2).

        Args: as :meth:`propagate`.
        Returns:
            ``Y_t`` of shape ``(N, C_out, h / stride, w / stride)`` and ``S_t``.
        """
        # The base class's forward, with the convolution inlined: this runs once per cell per
        # frame on Patchwork's hot path.
        extended, memory = self.propagate(window, memory, placement)
        return F.conv2d(extended, self.weight, self.bias, self.stride, 0, self.dilation, self.groups), memory

    def forward_full(self, frame: Tensor) -> tuple[Tensor, Tensor]:
        """The stateless convolution on a whole frame ``(B, C_in, H, W)``; also returns the memory it leaves."""
        out = F.conv2d(
            frame, self.weight, self.bias, self.stride, self._full_frame_padding, self.dilation, self.groups
        )
        return out, self.memory.write_full(frame)


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class PoolingCell(ContextCell):
    """Stateful replacement of a padded max or average pooling (BlockCopy, Sec. 3.1: every padded op).

    Max pooling pads with ``-inf``, so the context cells that fall outside the frame are
    masked with ``-inf`` before the VALID pooling; average pooling with
    ``count_include_pad=True`` pads with zeros, which the memory's border already is.

    Args:
        pool: ``nn.MaxPool2d`` (``ceil_mode=False``, no indices) or ``nn.AvgPool2d``
            (``ceil_mode=False``, ``count_include_pad=True``).
        channels: channels of the pooling's input (pooling modules do not know them).
        input_stride: stride of the pooling's input relative to the image.
    """

    def __init__(self, pool: nn.MaxPool2d | nn.AvgPool2d, channels: int, input_stride: int = 1) -> None:
        if not isinstance(pool, (nn.MaxPool2d, nn.AvgPool2d)):
            raise TypeError(f"PoolingCell replaces nn.MaxPool2d or nn.AvgPool2d, got {type(pool).__name__}")
        if pool.ceil_mode:
            raise ValueError(f"{pool}: ceil_mode=True gives outputs not aligned to the input's cells")
        if isinstance(pool, nn.MaxPool2d) and pool.return_indices:
            raise ValueError(f"{pool}: return_indices=True is not supported")
        if isinstance(pool, nn.AvgPool2d) and not pool.count_include_pad:
            raise ValueError(
                f"{pool}: count_include_pad=False is not supported (the divisor would depend on the frame edge)"
            )
        kernel = _pair(pool.kernel_size)
        stride = _pair(pool.stride if pool.stride is not None else pool.kernel_size)
        dilation = _pair(getattr(pool, "dilation", 1))
        super().__init__(channels, kernel, stride, _pair(pool.padding), dilation, input_stride)
        self.pool = pool
        self.kernel_size, self.stride, self.dilation = kernel, stride, dilation

    def extra_repr(self) -> str:
        return f"context={self.context}"

    def apply(self, extended: Tensor, memory: Tensor, placement: WindowPlacement) -> Tensor:
        """The pooling, VALID, on the extended windows ``(N, C, h', w')``."""
        if isinstance(self.pool, nn.AvgPool2d):
            return F.avg_pool2d(extended, self.kernel_size, self.stride, 0, False, True, self.pool.divisor_override)
        top, bottom, left, right = self.memory.border
        frame_size = (memory.shape[-2] - top - bottom, memory.shape[-1] - left - right)
        offset = (-self.context[0], -self.context[2])
        outside = placement.outside_frame(frame_size, offset, (extended.shape[-2], extended.shape[-1]))
        extended = extended.masked_fill(outside, float("-inf"))
        return F.max_pool2d(extended, self.kernel_size, self.stride, 0, self.dilation)

    def forward_full(self, frame: Tensor) -> tuple[Tensor, Tensor]:
        """The stateless pooling on a whole frame ``(B, C, H, W)``; also returns the memory it leaves."""
        return self.pool(frame), self.memory.write_full(frame)
