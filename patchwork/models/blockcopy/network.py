"""BlockCopy's block-sparse execution with feature transfer (Verelst and Tuytelaars, ICCV 2021, Sec. 3.1).

A dense network is traced once (:mod:`patchwork.models.blockcopy.plan`); each frame, only the
executed blocks of every stream run through it, stacked on the batch dimension. Before each
padded convolution or pooling the executed blocks are written into the op's memory of its
input and read back with their halo (the Patchwork cell with many windows, ``patchwork.nn``);
non-executed blocks keep the previous features in every memory, which is the feature
transfer. Global ops get the dense map: the blocks written into the previous dense map.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import reduce
from typing import Any

import torch
from torch import Tensor, fx, nn
from torch.fx.immutable_collections import immutable_dict, immutable_list

from patchwork.models.blockcopy.ops import Handling
from patchwork.models.blockcopy.plan import ConversionError, NodePlan, Planner, describe, trace
from patchwork.models.blockcopy.profiling import OVERHEAD, TRANSFER, part
from patchwork.nn import BlockGrid, ContextCell, FrameMemory, PatchworkCell, PoolingCell, StreamState, WindowPlacement
from patchwork.nn.window_ops import gather_windows

#: State key of the frame state ``H_{t-1}`` (Sec. 3.3): per block, the pixels of the last
#: frame in which it executed.
FRAME_STATE = "frame_state"
#: Prefix of the state keys of dense memories (values densified for global ops and outputs).
VALUE_PREFIX = "value."



def _rebuild(value: Any, fn: Callable[[Any], Any]) -> Any:
    """``fn`` applied to every leaf of nested lists, tuples and dicts, keeping their types
    (fx's immutable containers become plain ones)."""
    if isinstance(value, dict):
        kind = dict if isinstance(value, immutable_dict) else type(value)
        return kind((key, _rebuild(item, fn)) for key, item in value.items())
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_rebuild(item, fn) for item in value))
    if isinstance(value, (list, tuple)):
        kind = list if isinstance(value, immutable_list) else type(value)
        return kind(_rebuild(item, fn) for item in value)
    return fn(value)


class BlockCopyNetwork(nn.Module):
    """A dense CNN run block-sparse with feature transfer (BlockCopy, Sec. 3.1).

    Build with :meth:`from_module`. I/O contract (``B`` streams, frames ``(B, C, H, W)`` as
    the dense module takes them, ``H`` and ``W`` multiples of the block size ``bs``)::

        state = net.init_state(batch_size=B, image_size=(H, W))
        out, state = net.forward_full(frames, state)  # dense pass, every memory written; out == module(frames)
        out, state = net(frames, mask, state)         # mask: bool (B, H // bs, W // bs), True = execute

    ``out`` has the dense module's structure (tensor, or lists/tuples/dicts of them) and is
    the full-frame output: executed blocks computed from the current frame (with halos from
    the current frame where neighbours executed, from the previous features elsewhere);
    blocks not executed keep their previous features at every layer. Global ops see the
    dense map. The state (a :class:`~patchwork.nn.StreamState`, batch-first, so streams
    reset one at a time) holds one memory per padded op, keyed by the op's module path,
    one per densified value (``"value.<node>"``) and the frame state (``"frame_state"``).
    Under ``torch.no_grad()`` memories are written in place; with autograd enabled new
    tensors are made. The state is consumed: continue with the returned one.

    Args:
        graph_module: the traced dense network (see :func:`~patchwork.models.blockcopy.plan.trace`).
        grid: the block grid.
        in_channels: channels of the network's input.
    """

    def __init__(self, graph_module: fx.GraphModule, grid: BlockGrid, in_channels: int = 3) -> None:
        super().__init__()
        planner = Planner(graph_module, grid, in_channels)
        self.plans: dict[str, NodePlan] = planner.plan()
        self.grid = grid
        self.in_channels = int(in_channels)
        self.module = graph_module
        self._nodes = list(graph_module.graph.nodes)
        self._callables: dict[str, Any] = {}
        self._cell_keys: dict[str, str] = {}
        cell_targets = [node.target for node in self._nodes if self.plans[node.name].handling is Handling.CELL]
        for node in self._nodes:
            plan = self.plans[node.name]
            if plan.handling is Handling.CELL:
                if cell_targets.count(node.target) > 1:
                    raise ConversionError(
                        f"{describe(node, graph_module)} is called more than once; each call needs its own memory"
                    )
                op = graph_module.get_submodule(node.target)
                if isinstance(op, nn.Conv2d):
                    cell: ContextCell = PatchworkCell(op, input_stride=plan.in_stride)
                else:
                    cell = PoolingCell(op, planner.channels(node.args[0]), input_stride=plan.in_stride)
                graph_module.add_submodule(node.target, cell)
                self._cell_keys[node.name] = str(node.target)
            if node.op == "call_module":
                self._callables[node.name] = graph_module.get_submodule(node.target)
        densified = {name for plan in self.plans.values() for name in plan.densify}
        self.value_memories = nn.ModuleDict(
            {
                node.name: FrameMemory(planner.channels(node), self.plans[node.name].stride)
                for node in self._nodes
                if node.name in densified
            }
        )
        self.frame_memory = FrameMemory(in_channels, 1)
        strides = {1} | {plan.stride for plan in self.plans.values() if plan.is_blocks}
        strides |= {plan.in_stride for plan in self.plans.values() if plan.in_stride is not None}
        self.strides = tuple(sorted(strides))

    @classmethod
    def from_module(
        cls, module: nn.Module, grid: BlockGrid, in_channels: int = 3, method: str = "forward"
    ) -> "BlockCopyNetwork":
        """Convert a dense network (copied, not changed).

        Args:
            module: a torchvision-style CNN taking ``(B, in_channels, H, W)`` frames, e.g.
                ``mobilenet_v2().features``, a ResNet without its classifier,
                ``lraspp_mobilenet_v3_large()``, or a project model with ``method="forward_dense"``.
            grid: the block grid.
            in_channels: channels of the frames.
            method: the method of ``module`` that computes the dense output.
        Raises:
            ConversionError: an op cannot run on block-sparse features (the error names it).
        """
        return cls(trace(module, method), grid, in_channels)

    # --------------------------------------------------------------- inspect
    def nodes_with(self, handling: Handling) -> list[str]:
        """The ops planned with ``handling``, named as :func:`~patchwork.models.blockcopy.plan.describe` does."""
        return [describe(node, self.module) for node in self._nodes if self.plans[node.name].handling is handling]

    def extra_repr(self) -> str:
        handlings = (Handling.CELL, Handling.BLOCKWISE, Handling.DENSE)
        counts = {handling.value: len(self.nodes_with(handling)) for handling in handlings}
        return f"grid={self.grid!r}, ops={counts}"

    # ----------------------------------------------------------------- state
    def named_memories(self) -> list[tuple[str, FrameMemory]]:
        """Every memory as ``(state key, FrameMemory)``: frame state, cells, densified values."""
        memories = [(FRAME_STATE, self.frame_memory)]
        memories += [(key, self._callables[name].memory) for name, key in self._cell_keys.items()]
        memories += [(VALUE_PREFIX + name, memory) for name, memory in self.value_memories.items()]
        return memories

    def init_state(
        self,
        batch_size: int,
        image_size: tuple[int, int],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> StreamState:
        """Empty (all-zero) memories for ``batch_size`` streams of ``image_size = (H, W)`` pixels.

        Raises:
            ValueError: ``H`` or ``W`` is not a multiple of the block size.
        """
        self.grid.check_image_size(image_size)
        reference = next(iter(self.parameters()), None)
        device = (reference.device if reference is not None else "cpu") if device is None else device
        dtype = (reference.dtype if reference is not None else torch.get_default_dtype()) if dtype is None else dtype
        return StreamState(
            {key: memory.init(batch_size, image_size, device, dtype) for key, memory in self.named_memories()}
        )

    def frame_state(self, state: StreamState) -> Tensor:
        """``H_t`` ``(B, C, H, W)``: per block, the input of the last frame in which it executed (a view)."""
        return self.frame_memory.frame(state[FRAME_STATE])

    # --------------------------------------------------------------- forward
    def forward_full(self, frames: Tensor, state: StreamState) -> tuple[Any, StreamState]:
        """The dense network on whole frames ``(B, C, H, W)``, writing every memory in full.

        Returns:
            The dense module's output (equal to ``module(frames)``) and the new state.
        """
        self.grid.check_image_size((frames.shape[-2], frames.shape[-1]))
        return self._run(frames, StreamState(state), None)

    def forward(self, frames: Tensor, mask: Tensor, state: StreamState) -> tuple[Any, StreamState]:
        """One block-sparse step: the blocks of ``mask`` execute, the others keep their features.

        Args:
            frames: ``(B, C, H, W)``, as the dense module takes them.
            mask: ``(B, H // bs, W // bs)`` bool (or 0/1), True = execute. A video's first
                frame should execute every block (or use :meth:`forward_full`).
            state: from :meth:`init_state` or a previous step.
        Returns:
            The full-frame output (structure of the dense module's) and the new state.
        """
        expected = (frames.shape[0], *self.grid.blocks_per_axis((frames.shape[-2], frames.shape[-1])))
        if tuple(mask.shape) != expected:
            raise ValueError(
                f"execution mask has shape {tuple(mask.shape)}, expected (B, H // bs, W // bs) = {expected}"
            )
        with part(OVERHEAD):
            placements = self.grid.placements(mask.to(frames.device), self.strides)
        return self._run(frames, StreamState(state), placements)

    # -------------------------------------------------------------- internals
    def _run(
        self, frames: Tensor, state: StreamState, placements: dict[int, WindowPlacement] | None
    ) -> tuple[Any, StreamState]:
        """Execute the plan; ``placements=None`` is the dense pass."""
        env: dict[str, Any] = {}
        dense: dict[str, Tensor] = {}
        batch, image_size = frames.shape[0], (frames.shape[-2], frames.shape[-1])

        def densify(name: str) -> Tensor:
            """The dense map of a blocks-valued node: its blocks written into its memory."""
            if name not in dense:
                key, memory = VALUE_PREFIX + name, self.value_memories[name]
                if placements is None:
                    state[key] = memory.write_full(env[name])
                    dense[name] = env[name]
                else:
                    with part(TRANSFER):
                        state[key] = memory.write(state[key], env[name], placements[memory.stride])
                    dense[name] = memory.frame(state[key])
            return dense[name]

        def fetch(arg: fx.Node, plan: NodePlan) -> Any:
            if arg.name in plan.densify:
                return densify(arg.name)
            value = env[arg.name]
            conversion = plan.to_blocks.get(arg.name)
            if placements is None or conversion is None:
                return value
            with part(OVERHEAD):
                placement = placements[plan.in_stride]
                if conversion == "streams":
                    return value.index_select(0, placement.streams)
                cells = self.grid.block_cells(plan.in_stride)
                return gather_windows(value, placement, (cells, cells))

        for node in self._nodes:
            plan = self.plans[node.name]
            if node.op == "placeholder":
                env[node.name] = self._input(frames, state, placements)
                continue
            if node.op == "output":
                out = _rebuild(node.args[0], lambda arg: fetch(arg, plan) if isinstance(arg, fx.Node) else arg)
                return self._unaliased(out, state), state
            args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda arg: fetch(arg, plan))
            if plan.handling is Handling.CELL:
                env[node.name] = self._cell(node, args[0], state, placements)
            elif plan.handling is Handling.SHAPE and placements is not None:
                env[node.name] = self._dense_shape(node, args, batch, image_size)
            elif node.op == "call_module":
                env[node.name] = self._callables[node.name](*args, **kwargs)
            elif node.op == "call_function":
                env[node.name] = node.target(*args, **kwargs)
            elif node.op == "call_method":
                env[node.name] = getattr(args[0], node.target)(*args[1:], **kwargs)
            else:  # get_attr: looked up each time, since .to() replaces buffers
                env[node.name] = reduce(getattr, str(node.target).split("."), self.module)
        raise RuntimeError("the traced graph has no output")

    def _input(self, frames: Tensor, state: StreamState, placements: dict[int, WindowPlacement] | None) -> Tensor:
        """The frames (dense pass) or their executed blocks ``(N, C, bs, bs)``; updates the frame state."""
        if placements is None:
            state[FRAME_STATE] = self.frame_memory.write_full(frames)
            return frames
        with part(OVERHEAD):
            blocks = gather_windows(frames, placements[1], (self.grid.block_size, self.grid.block_size))
        with part(TRANSFER):
            state[FRAME_STATE] = self.frame_memory.write(state[FRAME_STATE], blocks, placements[1])
        return blocks

    def _cell(
        self, node: fx.Node, x: Tensor, state: StreamState, placements: dict[int, WindowPlacement] | None
    ) -> Tensor:
        """A padded op: dense with its memory written in full, or the cell on the executed blocks."""
        cell, key = self._callables[node.name], self._cell_keys[node.name]
        if placements is None:
            out, state[key] = cell.forward_full(x)
            return out
        placement = placements[cell.memory.stride]
        with part(TRANSFER):
            memory = cell.memory.write(state[key], x, placement)
        with part(OVERHEAD):
            extended = cell.extend(memory, placement, (x.shape[-2], x.shape[-1]))
        state[key] = memory
        return cell.apply(extended, memory, placement)

    def _dense_shape(self, node: fx.Node, args: tuple, batch: int, image_size: tuple[int, int]) -> Any:
        """``x.shape`` / ``x.size(...)`` of blocks, answered for the dense map they stand for."""
        blocks, stride = args[0], self.plans[node.args[0].name].stride
        shape = torch.Size((batch, blocks.shape[1], image_size[0] // stride, image_size[1] // stride))
        if node.op == "call_method" and len(args) > 1:
            return shape[args[1]]
        return shape

    @staticmethod
    def _unaliased(out: Any, state: StreamState) -> Any:
        """``out`` with every tensor that shares storage with a memory cloned (memories change in place)."""
        storages = {value.untyped_storage().data_ptr() for value in state.values()}

        def own(value: Any) -> Any:
            if isinstance(value, Tensor) and value.untyped_storage().data_ptr() in storages:
                return value.clone()
            return value

        return _rebuild(out, own)
