"""Which operations run on stacked blocks, which need the dense map, and how BlockCopy runs each.

BlockCopy (Sec. 3.1) executes a network on its executed blocks only. Per operation:

* **block-wise** (:data:`Handling.BLOCKWISE`): the op reads each output cell's own input
  cell (BatchNorm, activations, 1x1 convolutions without padding, residual adds, channel
  concatenation, channel softmax); it runs on the stacked blocks as it is.
* **cell** (:data:`Handling.CELL`): a padded convolution or pooling reads a neighbourhood;
  it becomes a :class:`~patchwork.nn.PatchworkCell` / :class:`~patchwork.nn.PoolingCell`
  with a memory of its input, so each block reads its halo from the current frame where
  the neighbour executed and from the previous features where it did not.
* **dense** (:data:`Handling.DENSE`): a global op (adaptive pooling, interpolation,
  flattening, linear layers, reshapes), or a spatial op whose output stride does not
  divide the block size (e.g. a detector's pyramid below the block resolution), gets the
  dense map: the executed blocks written into the previous dense map first.
* **shape** (:data:`Handling.SHAPE`): ``x.shape`` / ``x.size()`` of blocks answer the dense
  map's shape, so code that sizes an interpolation from a feature map keeps working.

Anything else that meets block-sparse features is refused with an error naming it.
"""

from __future__ import annotations

import enum
import operator

import torch
import torch.nn.functional as F
from torch import nn


class Handling(enum.Enum):
    """How one graph node runs in a block-sparse pass."""

    PLAIN = "plain"  # no block-sparse input: runs as it is
    INPUT = "input"  # the frames, split into blocks
    BLOCKWISE = "blockwise"
    CELL = "cell"
    DENSE = "dense"
    SHAPE = "shape"
    OUTPUT = "output"


#: Modules that compute each output cell from the same input cell (in eval mode).
POINTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm2d,
    nn.Identity,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
    nn.Dropout,
    nn.Dropout2d,
)

#: Modules whose output mixes the whole map: they get the dense map.
GLOBAL_MODULES: tuple[type[nn.Module], ...] = (
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Linear,
    nn.Flatten,
    nn.Upsample,
    nn.UpsamplingBilinear2d,
    nn.UpsamplingNearest2d,
)

#: Modules whose channel dimension decides: block-wise along channels, dense otherwise.
CHANNEL_MODULES: tuple[type[nn.Module], ...] = (nn.Softmax, nn.LogSoftmax)

POINTWISE_FUNCTIONS = frozenset(
    {
        operator.add,
        operator.sub,
        operator.mul,
        operator.truediv,
        operator.neg,
        operator.iadd,
        operator.isub,
        operator.imul,
        operator.itruediv,
        torch.add,
        torch.sub,
        torch.mul,
        torch.div,
        torch.relu,
        torch.sigmoid,
        torch.tanh,
        torch.exp,
        torch.clamp,
        torch.where,
        F.relu,
        F.relu6,
        F.leaky_relu,
        F.elu,
        F.gelu,
        F.silu,
        F.mish,
        F.hardswish,
        F.hardsigmoid,
        F.hardtanh,
        F.dropout,
        F.batch_norm,
    }
)

#: Functions that act along one dimension: block-wise when it is the channel dimension.
CHANNEL_FUNCTIONS = frozenset({torch.cat, torch.concat, F.softmax, F.log_softmax, torch.softmax, torch.log_softmax})

GLOBAL_FUNCTIONS = frozenset(
    {
        F.interpolate,
        F.adaptive_avg_pool2d,
        F.adaptive_max_pool2d,
        F.linear,
        torch.flatten,
        torch.mean,
        torch.sum,
        torch.amax,
        torch.matmul,
        operator.getitem,
    }
)

POINTWISE_METHODS = frozenset(
    {
        "add",
        "add_",
        "sub",
        "mul",
        "mul_",
        "div",
        "relu",
        "relu_",
        "sigmoid",
        "tanh",
        "clamp",
        "clamp_",
        "contiguous",
        "float",
        "half",
        "to",
        "type_as",
        "expand_as",
    }
)

CHANNEL_METHODS = frozenset({"softmax", "log_softmax"})

GLOBAL_METHODS = frozenset(
    {"view", "reshape", "flatten", "permute", "transpose", "mean", "sum", "amax", "max", "unflatten", "squeeze"}
)

#: Tensor attributes that are the same for the blocks and the dense map.
SHARED_ATTRIBUTES = frozenset({"dtype", "device", "ndim"})


def channel_dim(args: tuple, kwargs: dict, position: int, default: int | None) -> int | None:
    """The ``dim`` argument of a call (positional at ``position`` or keyword), or ``default``."""
    if "dim" in kwargs:
        return kwargs["dim"]
    return args[position] if len(args) > position else default


def is_channel(dim: int | None) -> bool:
    """Whether ``dim`` is the channel dimension of a ``(B, C, H, W)`` map."""
    return dim in (1, -3)


def spatial_geometry(module: nn.Module) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
    """``(kernel, stride, padding, dilation)`` pairs of a conv or pooling module (padding as applied, leading)."""

    def pair(value):
        return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))

    kernel = pair(module.kernel_size)
    stride = pair(module.stride if module.stride is not None else module.kernel_size)
    dilation = pair(getattr(module, "dilation", 1))
    padding = module.padding
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    return kernel, stride, pair(padding), dilation
