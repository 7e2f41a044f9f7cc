"""The one streaming interface every model implements: Patchwork, baselines, and the peer methods.

A streaming model processes ``B`` independent video streams one frame at a time, in the roles
that the three methods share (a model, its action space, its observation, a policy network)::

    state = model.init_state(B, (H, W))
    out = model(frames, actions, state)     # frames (B, 3, H, W) in [0, 1]; actions of model.action_space
    out.predictions                         # eval mode: one full-frame prediction per stream
    out.state                               # the new state; the old one is consumed
    observation = model.observe(out)        # what a policy reads for the next action, or None
    scores = model.policy_network(model.policy_input(observation, next_frames))  # Q-values (B, A), block logits (B, h, w)
    losses = model.loss(out, targets)       # training: dict of scalar task losses

``actions`` follow ``model.action_space`` (:mod:`patchwork.nn.spaces`): Patchwork looks at
window ``actions[b]``, Looking Fast and Slow runs extractor ``actions[b]``, BlockCopy executes
the blocks where ``actions[b]`` is True. A model without an action space (a single-frame model)
takes ``actions=None``. Policies, training, evaluation and the notebook API only ever see this
interface (see :mod:`patchwork.engine.runner`), so they never care which method runs.

Frames are float images in ``[0, 1]`` (or uint8); each model normalises them itself.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from patchwork.nn import StreamState
from patchwork.nn.pointwise import PointwiseConv2d
from patchwork.nn.spaces import ActionSpace

#: ImageNet statistics, as torchvision's weights expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

T = TypeVar("T")

#: A computation that yields between its layers and returns its result: a model's
#: ``step_stages`` lets the ``delay`` baseline spread one keyframe over several frames.
#: It yields ``None`` after a layer, and :data:`ROW_BAND` between the row bands of one
#: layer that was asked to run in bands (:func:`row_bands`, :func:`layer_stages`).
Stages = Generator[str | None, None, T]

#: What a staged computation yields between two row bands of one layer.
ROW_BAND = "row band"

_ROW_BANDS: ContextVar[int] = ContextVar("row_bands", default=1)

#: Modules that act on each position alone: a conv layer ending in them splits by rows.
_POINTWISE = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Identity)


@contextmanager
def row_bands(bands: int) -> Iterator[None]:
    """Ask the next layer that a staged computation runs through :func:`layer_stages`, inside
    this block, to compute its output in ``bands`` bands of rows (one stage each).

    The ``delay`` baseline uses it when one layer alone exceeds the per-frame budget. Only
    the first such layer in the block takes the request; layers that cannot be split
    (:func:`banded_conv` is ``None``) run whole.
    """
    token = _ROW_BANDS.set(int(bands))
    try:
        yield
    finally:
        _ROW_BANDS.reset(token)


def banded_conv(layer: nn.Module) -> nn.Conv2d | None:
    """The convolution of a layer that :func:`layer_stages` can split by output rows, else ``None``.

    Splittable: a zero-padded ``nn.Conv2d`` (or its matmul form,
    :class:`~patchwork.nn.pointwise.PointwiseConv2d`), or an ``nn.Sequential`` of one (torchvision's
    ``Conv2dNormActivation``) followed only by pointwise modules (BatchNorm, ReLU, ReLU6).
    """
    children = list(layer.children()) if isinstance(layer, nn.Sequential) else [layer]
    conv = children[0] if children else None
    if type(conv) not in (nn.Conv2d, PointwiseConv2d) or conv.padding_mode != "zeros":
        return None
    if isinstance(conv.padding, str) or not all(isinstance(child, _POINTWISE) for child in children[1:]):
        return None
    return conv


def layer_stages(layer: nn.Module, x: Tensor, weight: Tensor | None = None,
                 shift: Tensor | None = None) -> Stages[Tensor]:
    """``layer(x)`` as a staged computation: whole, or in the bands of output rows that
    :func:`row_bands` asked for, yielding :data:`ROW_BAND` between bands.

    Band ``[a, b)`` of output rows convolves input rows ``[a s - p, (b - 1) s - p + d (k - 1)]``
    (zero rows outside the frame), so the bands together compute exactly the layer's
    outputs: the same FLOPs, split. Asked for more bands than the layer has output rows, each
    row runs in groups of output channels (exact too: an output channel reads only its own
    filter, and BatchNorm in eval mode and the activations act per channel), when the layer
    is an ungrouped convolution followed by such modules. ``x`` ``(B, C, H, W)`` ->
    ``(B, C', H', W')``.

    ``weight`` (a slice of the convolution's input channels, ``(C', C, k, k)``) replaces the
    convolution's weight, and ``shift`` (broadcast to its output, e.g. ``(B, C', 1, 1)``) is
    added to the convolution's output before the layer's pointwise modules: the layer on a
    concatenation whose other part contributes ``shift`` (a convolution is linear in its
    input channels). Either needs a layer that :func:`banded_conv` can split.
    """
    bands = _ROW_BANDS.get()
    _ROW_BANDS.set(1)  # the request is for one layer
    conv = banded_conv(layer)
    if conv is None and (weight is not None or shift is not None):
        raise ValueError(f"layer_stages: a weight or shift needs a convolution layer it can split, got {layer}")
    if conv is None or (bands <= 1 and weight is None and shift is None):
        return layer(x)
    weight = conv.weight if weight is None else weight
    rest = list(layer.children())[1:] if isinstance(layer, nn.Sequential) else []

    def finish(band: Tensor, channels: slice = slice(None)) -> Tensor:
        if shift is not None:
            # Sliced only in a channel group (never under torch.fx, which traces the whole layer).
            split = channels != slice(None) and shift.dim() == 4 and shift.shape[1] > 1
            band = band + (shift[:, channels] if split else shift)
        for module in rest:
            if isinstance(module, nn.BatchNorm2d) and channels != slice(None):
                band = F.batch_norm(band, module.running_mean[channels], module.running_var[channels],
                                    module.weight[channels], module.bias[channels], False, 0.0, module.eps)
            else:
                band = module(band)
        return band

    if bands <= 1:
        return finish(conv._conv_forward(x, weight, conv.bias))  # the layer's own kernel (e.g. a matmul)
    (kernel, _), (stride, _), (dilation, _), (pad, pad_w) = (
        conv.kernel_size, conv.stride, conv.dilation, conv.padding
    )
    rows_out = (x.shape[-2] + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
    row_count = min(bands, rows_out)
    per_channel = conv.groups == 1 and all(
        not module.training and module.track_running_stats if isinstance(module, nn.BatchNorm2d) else True
        for module in rest
    )
    channel_groups = min(math.ceil(bands / row_count), weight.shape[0]) if per_channel else 1
    row_edges, channel_edges = _edges(rows_out, row_count), _edges(weight.shape[0], channel_groups)
    padded = F.pad(x, (0, 0, pad, pad))
    parts, first_piece = [], True
    for first, end in zip(row_edges[:-1], row_edges[1:]):
        rows = padded[..., first * stride : (end - 1) * stride + dilation * (kernel - 1) + 1, :]
        groups = []
        for low, high in zip(channel_edges[:-1], channel_edges[1:]):
            if not first_piece:
                yield ROW_BAND
            first_piece = False
            channels = slice(low, high) if channel_groups > 1 else slice(None)
            bias = None if conv.bias is None else conv.bias[channels]
            band = F.conv2d(rows, weight[channels], bias, conv.stride, (0, pad_w), conv.dilation, conv.groups)
            groups.append(finish(band, channels))
        parts.append(torch.cat(groups, dim=1) if len(groups) > 1 else groups[0])
    return torch.cat(parts, dim=-2)


def _edges(size: int, parts: int) -> list[int]:
    """``parts + 1`` boundaries splitting ``range(size)`` into near-equal contiguous parts."""
    return [round(i * size / parts) for i in range(parts + 1)]


Prediction = dict[str, Tensor]


def run_stages(stages: Stages[T]) -> T:
    """Run a staged computation to the end and return its result."""
    while True:
        try:
            next(stages)
        except StopIteration as finished:
            return finished.value


def normalize_frames(frames: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """``(B, 3, H, W)`` images in ``[0, 1]`` (or uint8) to normalised floats ``(frames - mean) / std``."""
    if frames.dtype == torch.uint8:
        frames = frames.float() / 255.0
    if frames.dim() == 4 and not frames.is_contiguous() and frames.is_contiguous(memory_format=torch.channels_last):
        # Broadcasting the per-channel (1, 3, 1, 1) constants over channels-last frames runs a
        # strided loop 2x slower than the NCHW round trip (1.3 against 0.57 ms at 320x320, one
        # thread); the result is the same to the bit, and channels-last again for the network.
        return ((frames.contiguous() - mean) / std).contiguous(memory_format=torch.channels_last)
    return (frames - mean) / std


@dataclass
class StepOutput:
    """What one step of a streaming model returns.

    Attributes:
        raw: model-specific head outputs of this step (what :meth:`StreamingModel.loss`
            and :meth:`StreamingModel.predict` read).
        state: the new state of the ``B`` streams.
        predictions: the full-frame predictions per stream (filled in eval mode).
    """

    raw: dict[str, Any]
    state: StreamState
    predictions: list[Prediction] | None = field(default=None)


@dataclass(frozen=True)
class Description:
    """How a model names itself in tables and plots.

    Attributes:
        family: the method, e.g. ``"SF"``, ``"Patchwork"``, ``"LFS"``, ``"BlockCopy"``.
        options: the label's parts after the family, in order, e.g. ``("M=4, N=2", "depth=0.5")``.
        fields: table columns the model contributes (e.g. ``{"M": 4, "N": 2, "cells": "all"}``).
    """

    family: str
    options: tuple[str, ...] = ()
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``family`` and ``options``, e.g. ``"Patchwork M=4, N=2, depth=0.5"``; ``"Single-frame (SF)"`` bare."""
        if self.family == "SF" and not self.options:
            return "Single-frame (SF)"
        return " ".join([self.family, ", ".join(self.options)]).strip()

    def with_options(self, before: tuple[str, ...] = (), after: tuple[str, ...] = (), **fields: Any) -> "Description":
        """A copy with options added in front of and behind the existing ones, and more fields."""
        return Description(self.family, (*before, *self.options, *after), {**self.fields, **fields})


class StreamingModel(nn.Module):
    """Base class of every streaming model and baseline wrapper.

    Subclasses implement :meth:`init_state`, :meth:`forward_raw` (or :meth:`step_stages`),
    :meth:`predict`, :meth:`loss`, :meth:`empty_prediction` and :meth:`describe`; a model
    with a policy also sets :attr:`action_space` and implements :meth:`observe` and
    :attr:`policy_network`. Optional capabilities that only some baselines need:
    :meth:`step_stages` (``delay``), ``mirror_raw`` / ``mirror_actions`` (``flip``).

    Attributes:
        task: ``"detection"`` or ``"segmentation"``.
        action_space: the actions :meth:`forward` takes, or ``None`` (no choice to make).
    """

    task: str = ""
    action_space: ActionSpace | None = None

    def register_imagenet_normalization(self) -> None:
        """Buffers ``pixel_mean`` and ``pixel_std`` ``(1, 3, 1, 1)``, ImageNet's (not in state dicts),
        for :meth:`normalize`: the input torchvision's backbones were trained on."""
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def normalize(self, frames: Tensor) -> Tensor:
        """``(B, 3, H, W)`` images in ``[0, 1]`` (or uint8) to ImageNet-normalised floats
        (a model that calls :meth:`register_imagenet_normalization`)."""
        return normalize_frames(frames, self.pixel_mean, self.pixel_std)

    def init_state(
        self, batch_size: int, image_size: tuple[int, int], device: torch.device | str | None = None
    ) -> StreamState:
        """Empty state for ``batch_size`` streams of ``image_size = (H, W)`` pixels."""
        raise NotImplementedError

    def check_image_size(self, image_size: tuple[int, int]) -> None:
        """Raise ``ValueError`` when the model cannot run on frames of ``image_size``."""

    def forward(self, frames: Tensor, actions: Tensor | None, state: StreamState) -> StepOutput:
        """One step on frames ``(B, 3, H, W)``; in eval mode the output carries decoded ``predictions``."""
        out = self.forward_raw(frames, actions, state)
        if not self.training:
            out.predictions = self.predict(out)
        return out

    def forward_raw(self, frames: Tensor, actions: Tensor | None, state: StreamState) -> StepOutput:
        """:meth:`forward` without decoding predictions (wrappers decode once, from combined outputs)."""
        return run_stages(self.step_stages(frames, actions, state))

    def step_stages(self, frames: Tensor, actions: Tensor | None, state: StreamState) -> Stages[StepOutput]:
        """:meth:`forward_raw` as a generator that yields between layers (optional; the delay baseline needs it)."""
        raise NotImplementedError(f"{type(self).__name__} has no staged step (needed by the delay baseline)")

    def observe(self, out: StepOutput) -> dict[str, Tensor] | None:
        """What the policy reads after this step, batch-first (``None``: the model has no policy input).

        The tensors may alias the state, which the next step updates in place under
        ``torch.no_grad()``: a caller that keeps them (replay) copies them.
        """
        return None

    def policy_input(self, observation: dict[str, Tensor], frames: Tensor) -> dict[str, Tensor]:
        """What :attr:`policy_network` reads before frame ``t + 1`` runs: the observation after
        frame ``t`` and, for a policy that looks at the incoming frame (BlockCopy, Eq. 2), that
        frame ``(B, 3, H, W)``. Default: the observation alone."""
        return observation

    @property
    def policy_network(self) -> nn.Module | None:
        """Observation dict -> per-stream scores (Q-values, logits), or ``None``."""
        return None

    def policy_parameters(self) -> list[nn.Parameter]:
        """The parameters of the policy network (what a policy-learning stage trains)."""
        network = self.policy_network
        return [] if network is None else list(network.parameters())

    def task_parameters(self) -> list[nn.Parameter]:
        """Every parameter that is not the policy network's (what task training trains)."""
        policy = {id(p) for p in self.policy_parameters()}
        return [p for p in self.parameters() if id(p) not in policy]

    def policy_parameter_names(self) -> set[str]:
        """``named_parameters`` names of :meth:`policy_parameters` (e.g. to load task-only weights)."""
        policy = {id(p) for p in self.policy_parameters()}
        return {name for name, p in self.named_parameters() if id(p) in policy}

    def policy_state_names(self) -> set[str]:
        """``state_dict`` keys of the policy network, parameters and buffers (BatchNorm statistics):
        what a checkpoint of the task network alone may lack."""
        network = self.policy_network
        if network is None:
            return set()
        ids = {id(t) for t in (*network.parameters(), *network.buffers())}
        return {name for name, value in self.state_dict(keep_vars=True).items() if id(value) in ids}

    def predict(self, out: StepOutput, min_score: float | None = None) -> list[Prediction]:
        """Full-frame predictions per stream from a step's ``raw`` outputs.

        ``min_score`` (detection) decodes only predictions above it: a reward that looks at
        confident boxes only (Chai 2019, Sec. 3.3: score > 0.5) need not decode the rest.
        """
        raise NotImplementedError

    def loss(self, out: StepOutput, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Task losses of a step against per-stream full-frame targets."""
        raise NotImplementedError(f"{type(self).__name__} has no training loss")

    def empty_prediction(self, image_size: tuple[int, int], device: torch.device | str) -> Prediction:
        """What a stream predicts before it has any output (e.g. while a delayed keyframe runs)."""
        raise NotImplementedError

    def describe(self) -> Description:
        """The model's name and table fields (labels come from here, never from its parts)."""
        return Description(type(self).__name__)

    def memory_image(self, state: StreamState) -> tuple[str, Tensor] | None:
        """``(name, (B, C, h, w))``: a memory worth looking at during training (``None``: none)."""
        return None

    def action_statistics(self, actions: Tensor) -> dict[str, float]:
        """Training curves of the actions taken, ``actions (..., *action_shape)`` over frames and streams,
        e.g. LFS's f0 rate (Liu et al. 2019, Fig. 8); namespaced tags (``{}``: nothing to plot)."""
        return {}

    def action_overlay(self, actions: Tensor, image_size: tuple[int, int],
                       state: StreamState | None = None) -> dict[str, Any]:
        """What one stream's action looks like on its frame, for drawing; ``state``, when given, is
        that stream's state after the step (a batch of one), for overlays that read the memory.

        Returns any of ``{"box": (x1, y1, x2, y2) pixels, "blocks": BoolTensor (h, w), "text": str}``.
        """
        return {}
