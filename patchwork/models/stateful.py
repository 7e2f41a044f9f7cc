"""Running ordinary ``nn.Module`` trees statefully: cells find their memories, one window per stream.

A network becomes stateful by replacing its k > 1 convolutions with
:class:`~patchwork.nn.PatchworkCell` (:func:`insert_cells`); :func:`run_stateful` then walks
the module tree like ``forward`` would, routing every cell to its memory in the streams'
:class:`~patchwork.nn.StreamState` (keyed by the cell's module path) and its window
placement (by the cell's input stride). Keeping torchvision's module tree, rather than
rewriting each block, keeps its ``state_dict`` keys and its ``forward`` semantics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn
from torchvision.models.mobilenetv2 import InvertedResidual

from patchwork.models.streaming import Stages, banded_conv, layer_stages
from patchwork.nn import PatchworkCell, StreamState, WindowPlacement


@dataclass
class StatefulPass:
    """What one pass over stateful modules needs besides the activations.

    Attributes:
        state: the streams' state, updated as cells run.
        placements: window placement per input stride; ``None`` for a full-frame pass.
        taps: module paths whose outputs to record (filled during the pass).
    """

    state: StreamState
    placements: dict[int, WindowPlacement] | None
    taps: dict[str, Tensor | None] = field(default_factory=dict)


def conv_input_strides(module: nn.Module, start: int = 1) -> dict[str, int]:
    """Stride (relative to the image) of each conv's input, in registration order.

    Valid for purely sequential modules such as MobileNetV2's ``features`` or an SSD head's
    blocks, where registration order is execution order and no branch changes resolution.
    """
    strides, stride = {}, start
    for name, child in module.named_modules():
        if isinstance(child, nn.Conv2d):
            strides[name] = stride
            stride *= child.stride[0]
    return strides


def insert_cells(module: nn.Module, start_stride: int = 1) -> None:
    """Replace every convolution with kernel > 1 inside ``module`` by a :class:`PatchworkCell`, in place."""
    for name, stride in conv_input_strides(module, start_stride).items():
        conv = module.get_submodule(name)
        if max(conv.kernel_size) > 1:
            parent, _, child = name.rpartition(".")
            setattr(module.get_submodule(parent) if parent else module, child, PatchworkCell(conv, input_stride=stride))


def cell_memories(module: nn.Module, prefix: str) -> list[tuple[str, PatchworkCell]]:
    """``(state key, cell)`` of every cell inside ``module``, keys ``prefix.path``."""
    return [(f"{prefix}.{name}", cell) for name, cell in module.named_modules() if isinstance(cell, PatchworkCell)]


def run_stateful(module: nn.Module, name: str, x: Tensor, step: StatefulPass) -> Tensor:
    """Run ``module`` (registered under path ``name``) on ``x``; cells use ``step``'s memories.

    Handles ``nn.Sequential`` trees, torchvision's ``InvertedResidual`` (residual add when
    its stride is 1 and channels match) and :class:`PatchworkCell`; any other module is
    stateless and called as is.
    """
    if isinstance(module, PatchworkCell):
        if step.placements is None:
            x, step.state[name] = module.forward_full(x)
        else:
            x, step.state[name] = module(x, step.state[name], step.placements[module.memory.stride])
    elif isinstance(module, InvertedResidual):
        out = run_stateful(module.conv, f"{name}.conv", x, step)
        x = x + out if module.use_res_connect else out
    elif isinstance(module, nn.Sequential):
        # What Sequential.forward iterates (named_children() would also build a memo set per call).
        for child_name, child in module._modules.items():
            x = run_stateful(child, f"{name}.{child_name}", x, step)
    elif not isinstance(module, nn.Identity):  # folded BatchNorm layers are identities: skip the call
        x = module(x)
    if name in step.taps:
        step.taps[name] = x
    return x


def run_stateful_stages(module: nn.Module, name: str, x: Tensor, step: StatefulPass) -> Stages[Tensor]:
    """:func:`run_stateful` as a staged computation: a stateless conv layer (no cell inside,
    :func:`~patchwork.models.streaming.banded_conv`) runs through
    :func:`~patchwork.models.streaming.layer_stages`, so the ``delay`` baseline may split its
    output rows over frames; any other module runs whole."""
    if banded_conv(module) is None:
        return run_stateful(module, name, x, step)
    x = yield from layer_stages(module, x)
    if name in step.taps:
        step.taps[name] = x
    return x
