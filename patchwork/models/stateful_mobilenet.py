"""Stateful MobileNetV2 (supplementary Sec. A, Table 3, Fig. 9b).

Every SAME-padded convolution with kernel > 1 of torchvision's ``mobilenet_v2().features``
becomes a :class:`~patchwork.nn.PatchworkCell`; 1x1 convolutions, BatchNorm, ReLU6 and
the residual additions are pointwise and run on the window alone. The modules keep
torchvision's names, so ``state_dict`` keys are those of ``mobilenet_v2().features``
prefixed by ``features.`` and ImageNet weights load unchanged.

Three variants (``cells=``):

* ``"all"``: a cell before every k > 1 convolution (the method, Fig. 11b).
* ``"input"``: a single cell at the input that remembers the raw frames; the network runs
  on the window plus ``input_context`` pixels of remembered context on every side
  (clipped to the frame; ``None`` = the whole frame) and the window's features are cut
  from the result (Fig. 11a: most context, little saving).
* ``"none"``: no cells; each window is zero-padded like a separate image (vanilla
  recurrent attention, the Table 2 ablation).

In every variant the final feature map is also written into an ``"output"``
:class:`~patchwork.nn.FrameMemory`, the restored full-frame stride-32 map that the
detector's pyramid and the attention network read (Fig. 3, Fig. 10).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.models.mobilenetv2 import InvertedResidual

from patchwork.models.stateful import (
    StatefulPass,
    cell_memories,
    conv_input_strides,
    insert_cells,
    run_stateful,
    run_stateful_stages,
)
from patchwork.models.streaming import Stages, run_stages
from patchwork.nn import FrameMemory, StreamState, WindowGrid, WindowPlacement, gather_windows
from patchwork.nn.window_ops import WindowTables, to_channels_last

CellVariant = Literal["all", "input", "none"]

OUTPUT_MEMORY = "output"
INPUT_MEMORY = "input"


class StatefulMobileNetV2(nn.Module):
    """MobileNetV2 feature extractor that sees one window per frame and remembers the rest.

    Args:
        features: torchvision's ``mobilenet_v2(...).features`` (an ``nn.Sequential``);
            taken over as is (use :meth:`from_torchvision` to leave a model untouched).
        grid: the window grid; ``WindowGrid(1, 1)`` is the single-frame network.
        cells: ``"all"``, ``"input"`` or ``"none"`` (see the module docstring).
        input_context: for ``cells="input"``, pixels of remembered context around the
            window (a multiple of 32), or ``None`` for the whole frame.

    I/O contract (``B`` streams, image ``H x W`` divisible by ``M * 32``, window ``h x w``)::

        state = net.init_state(B, (H, W))
        feats, state = net(grid.crop(frames, windows), windows, state)  # feats (B, C, h/32, w/32)
        feats, state = net.forward_full(frames, state)                  # feats (B, C, H/32, W/32)
        net.memory(state, "output")                                     # (B, C, H/32, W/32)

    ``C`` is the last conv's channels (1280 for torchvision's width 1.0). The state is
    consumed: always continue with the returned one. Under ``torch.no_grad()`` memories
    are written in place; with autograd enabled new tensors are made, so gradients
    reach the weights through the memories of earlier frames.
    """

    def __init__(
        self,
        features: nn.Sequential,
        grid: WindowGrid,
        cells: CellVariant = "all",
        input_context: int | None = None,
    ) -> None:
        super().__init__()
        if cells not in ("all", "input", "none"):
            raise ValueError(f"cells must be 'all', 'input' or 'none', got {cells!r}")
        if input_context is not None and input_context % grid.align:
            raise ValueError(f"input_context must be a multiple of {grid.align} pixels, got {input_context}")
        self.grid = grid
        self.cells = cells
        self.input_context = input_context
        self.features = features
        convs = [m for m in features.modules() if isinstance(m, nn.Conv2d)]
        self.out_channels: int = convs[-1].out_channels
        self.out_stride = max(conv_input_strides(features).values()) * convs[-1].stride[0]
        # With M = N = 1 every window is the whole frame: no context is ever missing, so
        # the single-frame model is the stateless network (only the output is remembered).
        if cells == "all" and not grid.is_full_frame:
            insert_cells(features)
        self.output_memory = FrameMemory(self.out_channels, self.out_stride)
        self.input_memory = FrameMemory(3, 1) if cells == "input" and not grid.is_full_frame else None

    @classmethod
    def from_torchvision(
        cls,
        model: nn.Module,
        grid: WindowGrid,
        cells: CellVariant = "all",
        input_context: int | None = None,
    ) -> "StatefulMobileNetV2":
        """Build from a ``torchvision.models.mobilenet_v2`` (any width); the model is copied, not changed."""
        return cls(copy.deepcopy(model.features), grid, cells=cells, input_context=input_context)

    # ----------------------------------------------------------------- state
    def named_memories(self) -> Iterable[tuple[str, FrameMemory]]:
        """Every memory of the network as ``(state key, FrameMemory)``, cells in execution order."""
        if self.input_memory is not None:
            yield INPUT_MEMORY, self.input_memory
        for name, cell in cell_memories(self.features, "features"):
            yield name, cell.memory
        yield OUTPUT_MEMORY, self.output_memory

    def init_state(
        self,
        batch_size: int,
        image_size: tuple[int, int],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> StreamState:
        """Empty memories for ``batch_size`` streams of ``image_size = (H, W)`` pixels.

        Raises:
            ValueError: if ``H`` or ``W`` is not divisible by ``M * 32``.
        """
        self.grid.check_image_size(image_size)
        reference = next(self.parameters())
        device = reference.device if device is None else device
        dtype = reference.dtype if dtype is None else dtype
        return StreamState(
            {name: memory.init(batch_size, image_size, device, dtype) for name, memory in self.named_memories()}
        )

    def memory(self, state: StreamState, name: str) -> Tensor:
        """The restored full-frame map ``(B, C, H_l, W_l)`` of memory ``name`` (a view, no border)."""
        memories = self._memories_by_name()
        if name not in memories:
            raise KeyError(f"no memory named {name!r}; available: {list(memories)}")
        return memories[name].frame(state[name])

    def _memories_by_name(self) -> dict[str, FrameMemory]:
        # Built once: walking the module tree for it cost a window pass ~3% of its time.
        memories = self.__dict__.get("_memory_table")
        if memories is None:
            memories = self.__dict__["_memory_table"] = dict(self.named_memories())
        return memories

    def image_size(self, state: StreamState) -> tuple[int, int]:
        """The ``(H, W)`` in pixels that ``state`` was made for."""
        out = state[OUTPUT_MEMORY]
        return out.shape[-2] * self.out_stride, out.shape[-1] * self.out_stride

    # --------------------------------------------------------------- forward
    def forward(self, crops: Tensor, windows: Tensor, state: StreamState) -> tuple[Tensor, StreamState]:
        """One step on each stream's window.

        Args:
            crops: ``(B, 3, h, w)``, each stream's window cut from its frame
                (``grid.crop(frames, windows)``).
            windows: LongTensor ``(B,)`` of window indices of ``self.grid``.
            state: the streams' state from :meth:`init_state` or a previous step.
        Returns:
            The window's final features ``(B, C, h / 32, w / 32)`` and the new state.
        """
        out, _, state = self.forward_with_taps(crops, windows, state)
        return out, state

    def forward_full(self, frames: Tensor, state: StreamState) -> tuple[Tensor, StreamState]:
        """The stateless network on whole frames ``(B, 3, H, W)``, writing every memory in full.

        Returns:
            Features ``(B, C, H / 32, W / 32)``, equal to ``mobilenet_v2().features(frames)``,
            and the new state.
        """
        out, _, state = self.forward_full_with_taps(frames, state)
        return out, state

    def forward_with_taps(
        self, crops: Tensor, windows: Tensor, state: StreamState, taps: Iterable[str] = ()
    ) -> tuple[Tensor, dict[str, Tensor], StreamState]:
        """:meth:`forward`, also returning the window outputs of the modules named in ``taps``.

        ``taps`` are module paths inside the network, e.g. ``"features.14.conv.0"`` (the
        stride-16 expansion layer SSDLite attaches its first head to).
        """
        return run_stages(self.forward_stages(crops, windows, state, taps))

    def forward_full_with_taps(
        self, frames: Tensor, state: StreamState, taps: Iterable[str] = ()
    ) -> tuple[Tensor, dict[str, Tensor], StreamState]:
        """:meth:`forward_full`, also returning the full-frame outputs of the modules named in ``taps``."""
        return run_stages(self.forward_full_stages(frames, state, taps))

    def forward_stages(
        self, crops: Tensor, windows: Tensor, state: StreamState, taps: Iterable[str] = ()
    ) -> Stages[tuple[Tensor, dict[str, Tensor], StreamState]]:
        """:meth:`forward_with_taps` as a generator yielding after every block of ``features``."""
        image_size = self.image_size(state)
        expected = self.grid.window_size(image_size)
        if tuple(crops.shape[-2:]) != expected:
            raise ValueError(
                f"crops are {tuple(crops.shape[-2:])} but {self.grid!r} on {image_size[0]}x{image_size[1]} "
                f"frames has {expected[0]}x{expected[1]} windows"
            )
        strides = {memory.stride for memory in self._memories_by_name().values()}
        placements = self.window_placements(windows.to(crops.device, torch.long), image_size, strides)
        step = StatefulPass(StreamState(state), placements, dict.fromkeys(taps))
        # Channels-last throughout: the memories' layout, and faster CPU convolutions.
        crops = to_channels_last(crops)
        if self.input_memory is not None:
            out = self._forward_input_cell(crops, step, image_size)
        else:
            out = yield from self._run_blocks(crops, step)
        step.state[OUTPUT_MEMORY] = self.output_memory.write(step.state[OUTPUT_MEMORY], out, placements[self.out_stride])
        return out, self._checked_taps(step), step.state

    def forward_full_stages(
        self, frames: Tensor, state: StreamState, taps: Iterable[str] = ()
    ) -> Stages[tuple[Tensor, dict[str, Tensor], StreamState]]:
        """:meth:`forward_full_with_taps` as a generator yielding after every block of ``features``."""
        self.grid.check_image_size(tuple(frames.shape[-2:]))
        step = StatefulPass(StreamState(state), None, dict.fromkeys(taps))
        if self.input_memory is not None:
            step.state[INPUT_MEMORY] = self.input_memory.write_full(frames)
        out = yield from self._run_blocks(to_channels_last(frames), step)
        step.state[OUTPUT_MEMORY] = self.output_memory.write_full(out)
        return out, self._checked_taps(step), step.state

    # -------------------------------------------------------------- internals
    def window_placements(
        self, windows: Tensor, image_size: tuple[int, int], strides: Iterable[int]
    ) -> dict[int, WindowPlacement]:
        """Each stream's window at each of ``strides``: ``{stride: WindowPlacement}``.

        Every window's corners and cell indices are tabulated once per image size, stride and
        device (:class:`~patchwork.nn.window_ops.WindowTables`), so a step only looks its
        windows up: no per-frame index arithmetic, no device sync; task heads at other strides
        use the same tables.
        """
        cache = self.__dict__.setdefault("_corner_tables", {})
        placements = {}
        for stride in strides:
            key = (image_size, stride, windows.device)
            if key not in cache:
                all_windows = torch.arange(self.grid.num_windows)
                cache[key] = WindowTables(self.grid.offsets(all_windows, image_size, stride).to(windows.device))
            placements[stride] = cache[key].place(windows)
        return placements

    def _forward_input_cell(self, crops: Tensor, step: StatefulPass, image_size: tuple[int, int]) -> Tensor:
        """Fig. 11a: remember the raw frame, run the network on window + context, cut the window out."""
        pixels = step.placements[1]
        memory = self.input_memory.write(step.state[INPUT_MEMORY], crops, pixels)
        step.state[INPUT_MEMORY] = memory
        if self.input_context is None:
            region, region_corners = memory, torch.zeros_like(pixels.corners)
        else:
            # A fixed-size region, shifted to stay inside the frame, so frame edges keep
            # their true zero padding and the whole batch shares one shape.
            size = [min(full, part + 2 * self.input_context) for full, part in zip(image_size, crops.shape[-2:])]
            limit = torch.tensor([image_size[0] - size[0], image_size[1] - size[1]], device=crops.device)
            region_corners = torch.minimum((pixels.corners - self.input_context).clamp(min=0), limit)
            region = gather_windows(memory, WindowPlacement(region_corners), tuple(size))
        # To the stateless network the region is an ordinary image.
        out = run_stateful(self.features, "features", region, StatefulPass(step.state, None, step.taps))
        for name, tapped in [(None, out), *step.taps.items()]:
            stride = region.shape[-1] // tapped.shape[-1]
            local = WindowPlacement((pixels.corners - region_corners) // stride)
            window = gather_windows(tapped, local, (crops.shape[-2] // stride, crops.shape[-1] // stride))
            if name is None:
                out = window
            else:
                step.taps[name] = window
        return out

    def _run_blocks(self, x: Tensor, step: StatefulPass) -> Stages[Tensor]:
        """Run ``features`` layer by layer, yielding after each layer of every block.

        Yielding inside the inverted residual blocks keeps every stage small (the largest
        is one convolution), so the ``delay`` baseline can split a keyframe evenly; a
        stateless conv layer may further be split by output rows (:func:`run_stateful_stages`).
        """
        for name, block in self.features._modules.items():
            prefix = f"features.{name}"
            if isinstance(block, InvertedResidual):
                out = x
                for child_name, child in block.conv._modules.items():
                    out = yield from run_stateful_stages(child, f"{prefix}.conv.{child_name}", out, step)
                    yield
                x = x + out if block.use_res_connect else out
                if prefix in step.taps:
                    step.taps[prefix] = x
            else:
                x = yield from run_stateful_stages(block, prefix, x, step)
                yield
        return x

    @staticmethod
    def _checked_taps(step: StatefulPass) -> dict[str, Tensor]:
        missing = [name for name, value in step.taps.items() if value is None]
        if missing:
            raise KeyError(f"no module named {missing} was run")
        return step.taps  # type: ignore[return-value]
