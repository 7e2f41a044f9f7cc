"""Tracing a dense network and planning its block-sparse execution (BlockCopy, Sec. 3.1).

Why ``torch.fx``: BlockCopy converts *any* torchvision-style CNN, and what must change is
decided per operation, including functional ones hidden inside ``forward`` methods
(``F.interpolate`` in LR-ASPP, ``x + identity`` in ResNet, ``scale * x`` in
squeeze-excitation, ``torch.cat`` and ``view`` in SSD heads). Symbolic tracing records every
module call, function and method as a graph node without running the network; walking
modules (as :func:`patchwork.models.stateful.run_stateful` does for MobileNetV2) would miss
the functional ones. A probe pass on ``meta`` tensors (no memory, no FLOPs) gives every
node's shape, hence its stride and channels.

The plan assigns every node a :class:`~patchwork.models.blockcopy.ops.Handling` and says
which of its inputs must be densified (blocks written into a dense memory) or converted to
blocks. It is made once per network and checked there: an operation that cannot run on
block-sparse features is refused before any frame is processed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from patchwork.models.blockcopy.ops import (
    CHANNEL_FUNCTIONS,
    CHANNEL_METHODS,
    CHANNEL_MODULES,
    GLOBAL_FUNCTIONS,
    GLOBAL_METHODS,
    GLOBAL_MODULES,
    POINTWISE_FUNCTIONS,
    POINTWISE_METHODS,
    POINTWISE_MODULES,
    SHARED_ATTRIBUTES,
    Handling,
    channel_dim,
    is_channel,
    spatial_geometry,
)
from patchwork.nn import BlockGrid, conv_context

#: Batch size of the probe pass: a tensor whose first dimension is this is per stream.
PROBE_BATCH = 2
#: Blocks per axis of the probe frame; unequal, so no stride is guessed from a coincidence.
PROBE_BLOCKS = (2, 3)


@dataclass
class NodePlan:
    """How one node runs in a block-sparse pass.

    Attributes:
        handling: see :class:`~patchwork.models.blockcopy.ops.Handling`.
        stride: for a node whose value is blocks, the stride of its map; else ``None``.
        in_stride: for a cell or block-wise node, the stride of its block inputs.
        densify: input nodes whose blocks are written into their dense memory first.
        to_blocks: dense input nodes converted to blocks: ``"streams"`` (a per-stream
            ``(B, C, 1, 1)`` value picked per block) or ``"gather"`` (blocks cut from a dense map).
    """

    handling: Handling
    stride: int | None = None
    in_stride: int | None = None
    densify: tuple[str, ...] = ()
    to_blocks: dict[str, str] = field(default_factory=dict)

    @property
    def is_blocks(self) -> bool:
        return self.stride is not None


class ConversionError(ValueError):
    """A network (or one of its operations) cannot run block-sparse."""


def trace(module: nn.Module, method: str = "forward") -> fx.GraphModule:
    """``module.<method>`` as a ``GraphModule`` (module paths, hence ``state_dict`` keys, kept).

    The module is deep-copied; dead code (e.g. state a dense forward writes and never reads)
    is removed.
    """
    root = copy.deepcopy(module)
    if method != "forward":
        # Trace another method as the forward of a subclass, so submodule paths stay the same.
        root.__class__ = type(type(root).__name__, (type(root),), {"forward": getattr(type(root), method)})
    try:
        graph = fx.Tracer().trace(root)
    except Exception as error:  # noqa: BLE001 - re-raised with context
        raise ConversionError(
            f"cannot trace {type(module).__name__}.{method} with torch.fx (data-dependent control flow?): {error}"
        ) from error
    graph_module = fx.GraphModule(root, graph, class_name=f"Dense{type(module).__name__}")
    graph_module.graph.eliminate_dead_code()
    graph_module.recompile()
    return graph_module


def probe_shapes(graph_module: fx.GraphModule, grid: BlockGrid, in_channels: int) -> dict[str, object]:
    """Every node's output on a ``meta`` probe frame ``(2, in_channels, 2 bs, 3 bs)``: ``{name: value}``."""
    meta = copy.deepcopy(graph_module).to("meta")
    size = (PROBE_BLOCKS[0] * grid.block_size, PROBE_BLOCKS[1] * grid.block_size)
    probe = torch.empty(PROBE_BATCH, in_channels, *size, device="meta")
    try:
        ShapeProp(meta).propagate(probe)
    except Exception as error:  # noqa: BLE001 - re-raised with context
        raise ConversionError(f"the network fails on a {tuple(probe.shape)} probe frame: {error}") from error
    return {node.name: node.meta.get("tensor_meta") for node in meta.graph.nodes}


def describe(node: fx.Node, graph_module: fx.GraphModule) -> str:
    """A node as a user would name it: ``module 'layer1.0.conv1' (Conv2d)``, ``function interpolate``."""
    if node.op == "call_module":
        return f"module '{node.target}' ({type(graph_module.get_submodule(node.target)).__name__})"
    if node.op == "call_function":
        return f"function {getattr(node.target, '__name__', node.target)}"
    if node.op == "call_method":
        return f"method .{node.target}()"
    return f"{node.op} {node.target}"


class Planner:
    """Builds the :class:`NodePlan` of every node of a traced network for one block grid.

    Args:
        graph_module: the traced dense network (from :func:`trace`).
        grid: the block grid.
        in_channels: channels of the network's input (3 for images).
    """

    def __init__(self, graph_module: fx.GraphModule, grid: BlockGrid, in_channels: int) -> None:
        self.gm = graph_module
        self.grid = grid
        self.shapes = probe_shapes(graph_module, grid, in_channels)
        self.plans: dict[str, NodePlan] = {}

    # ------------------------------------------------------------------ probe
    def shape(self, node: fx.Node) -> torch.Size | None:
        """The probe shape of a tensor-valued node, else ``None``."""
        meta = self.shapes.get(node.name)
        return getattr(meta, "shape", None)

    def probe_stride(self, node: fx.Node) -> int | None:
        """The stride of a node's ``(B, C, H / s, W / s)`` map on the probe frame, if it is one."""
        shape = self.shape(node)
        if shape is None or len(shape) != 4 or shape[0] != PROBE_BATCH:
            return None
        height, width = (blocks * self.grid.block_size for blocks in PROBE_BLOCKS)
        if shape[2] == 0 or shape[3] == 0 or height % shape[2] or width % shape[3]:
            return None
        stride = height // shape[2]
        return stride if width // shape[3] == stride else None

    def channels(self, node: fx.Node) -> int:
        """Channels of a node's map."""
        return int(self.shape(node)[1])

    # ------------------------------------------------------------------- plan
    def plan(self) -> dict[str, NodePlan]:
        """Plan every node in execution order; raises :class:`ConversionError` on an op it cannot run."""
        placeholders = [node for node in self.gm.graph.nodes if node.op == "placeholder"]
        if len(placeholders) != 1:
            raise ConversionError(
                f"BlockCopyNetwork converts networks with one input (frames); got {len(placeholders)}"
            )
        for node in self.gm.graph.nodes:
            self.plans[node.name] = self._plan_node(node)
        return self.plans

    def _blocks_inputs(self, node: fx.Node) -> list[fx.Node]:
        return [arg for arg in node.all_input_nodes if self.plans[arg.name].is_blocks]

    def _plan_node(self, node: fx.Node) -> NodePlan:
        if node.op == "placeholder":
            if self.probe_stride(node) != 1:
                raise ConversionError(f"the network's input must be a (B, C, H, W) frame, got {self.shape(node)}")
            return NodePlan(Handling.INPUT, stride=1)
        blocks_inputs = self._blocks_inputs(node)
        if node.op == "output":
            return NodePlan(Handling.OUTPUT, densify=tuple(arg.name for arg in blocks_inputs))
        if not blocks_inputs:
            return NodePlan(Handling.PLAIN)
        strides = {self.plans[arg.name].stride for arg in blocks_inputs}
        if len(strides) != 1:
            raise ConversionError(f"{describe(node, self.gm)} mixes block-sparse maps of strides {sorted(strides)}")
        in_stride = strides.pop()
        if node.op == "call_module":
            return self._plan_module(node, in_stride, blocks_inputs)
        if node.op == "call_function":
            return self._plan_function(node, in_stride, blocks_inputs)
        if node.op == "call_method":
            return self._plan_method(node, in_stride, blocks_inputs)
        raise ConversionError(f"cannot run {describe(node, self.gm)} on block-sparse features")

    def _dense(self, blocks_inputs: list[fx.Node]) -> NodePlan:
        return NodePlan(Handling.DENSE, densify=tuple(arg.name for arg in blocks_inputs))

    def _blockwise(self, node: fx.Node, in_stride: int, handling: Handling = Handling.BLOCKWISE,
                   parameters: tuple[fx.Node, ...] = ()) -> NodePlan:
        """A node run on blocks: its output stride, and how its dense tensor inputs (other than
        ``parameters``, e.g. a functional convolution's weight) become blocks."""
        stride = self.probe_stride(node)
        if stride is None or self.grid.block_size % stride:
            raise ConversionError(
                f"{describe(node, self.gm)} on block-sparse features gives a map of shape {self.shape(node)} "
                f"on the probe frame, not one aligned to {self.grid!r}"
            )
        to_blocks = {}
        for arg in node.all_input_nodes:
            shape = self.shape(arg)
            if self.plans[arg.name].is_blocks or shape is None or arg in parameters:
                continue  # blocks, a python value, or a weight
            per_stream = len(shape) == 4 and shape[0] == PROBE_BATCH
            if all(size == 1 for size in shape[-2:]):
                if per_stream:
                    to_blocks[arg.name] = "streams"  # (B, C, 1, 1): each block takes its stream's value
                continue  # otherwise it broadcasts over blocks as over the map
            if per_stream and self.probe_stride(arg) == in_stride:
                to_blocks[arg.name] = "gather"
                continue
            raise ConversionError(
                f"{describe(node, self.gm)} combines block-sparse features with a dense tensor of shape "
                f"{tuple(shape)} on the probe frame that is neither per stream (B, C, 1, 1), a per-stream map at "
                f"stride {in_stride}, nor spatially constant"
            )
        in_place = node.op == "call_method" and str(node.target).endswith("_")
        if in_place and isinstance(node.args[0], fx.Node) and node.args[0].name in to_blocks:
            # The dense tensor itself would be modified; its converted copy is not what later ops read.
            raise ConversionError(
                f"{describe(node, self.gm)} modifies a dense tensor in place with block-sparse features"
            )
        return NodePlan(handling, stride=stride, in_stride=in_stride, to_blocks=to_blocks)

    def _plan_spatial(self, node: fx.Node, module: nn.Module, in_stride: int, blocks_inputs: list[fx.Node]) -> NodePlan:
        """A convolution or pooling: block-wise (1x1), a cell (padded), or dense (output below block resolution)."""
        kernel, stride, padding, dilation = spatial_geometry(module)
        if stride[0] != stride[1]:
            return self._dense(blocks_inputs)
        out_stride = in_stride * stride[0]
        if self.grid.block_size % out_stride:
            # Outputs coarser than a block: the op reduces the dense map (e.g. a detector's pyramid).
            return self._dense(blocks_inputs)
        if kernel == (1, 1) and padding == (0, 0):
            return self._blockwise(node, in_stride)
        if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
            raise ConversionError(f"{describe(node, self.gm)}: padding_mode={module.padding_mode!r} is not supported")
        same = isinstance(module, nn.Conv2d) and module.padding == "same"
        for k, s, p, d in zip(kernel, stride, padding, dilation):
            before, after = conv_context(k, s, p, d)
            if not same and not 0 <= before - after < s:
                raise ConversionError(
                    f"{describe(node, self.gm)}: kernel {kernel}, stride {stride}, padding {padding}, dilation "
                    f"{dilation} does not give ceil(H / stride) outputs aligned to the input's cells"
                )
        if len(node.args) != 1 or node.kwargs:
            raise ConversionError(f"{describe(node, self.gm)} must be called on one map")
        return self._blockwise(node, in_stride, Handling.CELL)

    def _plan_module(self, node: fx.Node, in_stride: int, blocks_inputs: list[fx.Node]) -> NodePlan:
        module = self.gm.get_submodule(node.target)
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            return self._plan_spatial(node, module, in_stride, blocks_inputs)
        if isinstance(module, POINTWISE_MODULES):
            return self._blockwise(node, in_stride)
        if isinstance(module, CHANNEL_MODULES):
            return self._blockwise(node, in_stride) if is_channel(module.dim) else self._dense(blocks_inputs)
        if isinstance(module, GLOBAL_MODULES):
            return self._dense(blocks_inputs)
        raise ConversionError(f"cannot run {describe(node, self.gm)} on block-sparse features")

    def _plan_function(self, node: fx.Node, in_stride: int, blocks_inputs: list[fx.Node]) -> NodePlan:
        target = node.target
        if target is getattr:
            attribute = node.args[1]
            if attribute == "shape":
                return NodePlan(Handling.SHAPE)
            if attribute in SHARED_ATTRIBUTES:
                return NodePlan(Handling.PLAIN)
        elif target in POINTWISE_FUNCTIONS:
            return self._blockwise(node, in_stride)
        elif target in CHANNEL_FUNCTIONS:
            # cat(tensors, dim=0) and softmax(input, dim): the dim is the second argument.
            default = 0 if target in (torch.cat, torch.concat) else None
            dim = channel_dim(node.args, node.kwargs, 1, default)
            return self._blockwise(node, in_stride) if is_channel(dim) else self._dense(blocks_inputs)
        elif target in GLOBAL_FUNCTIONS:
            return self._dense(blocks_inputs)
        elif target in (F.conv2d, torch.conv2d):
            return self._plan_functional_conv(node, in_stride, blocks_inputs)
        raise ConversionError(f"cannot run {describe(node, self.gm)} on block-sparse features")

    def _plan_functional_conv(self, node: fx.Node, in_stride: int, blocks_inputs: list[fx.Node]) -> NodePlan:
        """``F.conv2d(blocks, weight, bias)``: block-wise when it is a plain 1x1 convolution (each
        output cell reads its own input cell, as a 1x1 ``nn.Conv2d``); a functional convolution with
        a neighbourhood would need a cell's memory, which only an ``nn.Conv2d`` module gets."""
        names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
        args = dict(zip(names, node.args)) | dict(node.kwargs)
        weight, bias = args.get("weight"), args.get("bias")
        geometry = [args.get(name, default) for name, default in (("stride", 1), ("padding", 0), ("dilation", 1))]
        kernel = tuple(self.shape(weight)[-2:]) if isinstance(weight, fx.Node) and self.shape(weight) else None
        pairs = [tuple(value) if isinstance(value, (tuple, list)) else (value, value) for value in geometry]
        plain = kernel == (1, 1) and pairs == [(1, 1), (0, 0), (1, 1)]
        if blocks_inputs != [args.get("input")] or not plain:
            raise ConversionError(
                f"{describe(node, self.gm)}: a functional convolution runs on block-sparse features only as a "
                f"plain 1x1 convolution of its input (kernel {kernel}, stride / padding / dilation {geometry}); "
                "use an nn.Conv2d, which becomes a cell"
            )
        parameters = tuple(arg for arg in (weight, bias) if isinstance(arg, fx.Node))
        return self._blockwise(node, in_stride, parameters=parameters)

    def _plan_method(self, node: fx.Node, in_stride: int, blocks_inputs: list[fx.Node]) -> NodePlan:
        name = node.target
        if name == "size":
            return NodePlan(Handling.SHAPE)
        if name == "dim":
            return NodePlan(Handling.PLAIN)
        if name in POINTWISE_METHODS:
            return self._blockwise(node, in_stride)
        if name in CHANNEL_METHODS:
            dim = channel_dim(node.args, node.kwargs, 1, None)
            return self._blockwise(node, in_stride) if is_channel(dim) else self._dense(blocks_inputs)
        if name in GLOBAL_METHODS:
            return self._dense(blocks_inputs)
        raise ConversionError(f"cannot run {describe(node, self.gm)} on block-sparse features")
