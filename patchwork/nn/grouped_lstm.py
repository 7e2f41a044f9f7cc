"""The speed-optimised grouped bottleneck ConvLSTM of Looking Fast and Slow (Liu et al. 2019, Sec. 3.2).

For ``G`` groups and a state of ``S`` channels (``S / G`` per group), on an input ``x_t``
from extractor ``e`` and the previous state ``(c_{t-1}, h_{t-1})``, group ``k`` computes::

    b^k          = relu6(SepConv_{e,k}([x_t, h_{t-1}^k]))        # S / G channels
    [i, j, f, o] = SepConv_k(b^k)                                # 4 x S / G, no activation
    c^k          = clip(c_{t-1}^k * sigmoid(f + 1) + sigmoid(i) * relu6(j), -6, 6)
    h^k          = relu6(c^k) * sigmoid(o)

and the output is ``M_t = [h_t, b_t]`` (``2 S`` channels): the bottleneck skips past the
memory into the output (Sec. 3.2, Fig. 3). Every ``SepConv`` is a depthwise 3x3 convolution
followed by a pointwise 1x1 convolution with bias. The pre-bottleneck ``SepConv_{e,k}`` has
its own weights per extractor (the extractors' features live in different spaces and have
different depths); the gates are shared.

Both grouped stages run as one depthwise and one grouped pointwise convolution over all
groups at once (no Python loop over groups or streams).

Two facts of the authors' TensorFlow release differ from the paper's text; the paper's
form is the default:

* the release's pre-bottleneck is one separable convolution of ``[x_t, h_{t-1}]`` (the
  whole ``h``) to ``S`` channels, split into groups afterwards (``pre_bottleneck_state="full"``
  here); by default each group sees its own slice ``h_{t-1}^k`` as the paper's Sec. 3.2 says.
  The paper's MACs (Tab. 2: f1 path 84 M) match the release's form: at 320 x 320 it costs
  7.4 M more multiply-adds with f1's 112 channels and 6.5 M more with f0's 448;
* the release stores ``relu6(c)`` as the cell state (``store_relu6_state=True`` here).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GroupedSeparableConv(nn.Module):
    """``G`` independent separable convolutions on the ``G`` channel groups of one tensor.

    Group ``k`` maps input channels ``[k * in/G, (k+1) * in/G)`` to output channels
    ``[k * out/G, (k+1) * out/G)`` by a depthwise ``kernel x kernel`` convolution (no bias)
    and a pointwise convolution (with bias). Spatial size is kept (``same`` padding).

    Args:
        in_channels, out_channels: totals over the groups, both divisible by ``groups``.
        groups: ``G``.
        kernel_size: the depthwise kernel (3 in the paper).
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int, kernel_size: int = 3) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels {in_channels} -> {out_channels} are not divisible by {groups} groups")
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, kernel_size, padding=kernel_size // 2, groups=in_channels, bias=False
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, groups=groups)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in, h, w)`` -> ``(B, out, h, w)``."""
        return self.pointwise(self.depthwise(x))


class GroupedBottleneckLSTM(nn.Module):
    """The grouped bottleneck ConvLSTM cell (Sec. 3.2), shared by several feature extractors.

    Args:
        input_channels: channels of each extractor's features (``(448, 112)`` for LFS's
            f0 and f1); ``extractor`` in :meth:`forward` indexes this list.
        state_channels: ``S``, the depth of ``c`` and ``h`` (320 in the paper).
        groups: ``G`` (4 in the paper).
        clip: the cell state is clipped to ``[-clip, clip]`` (6 in the paper).
        forget_bias: added to the forget gate before its sigmoid (1, as the TF release).
        store_relu6_state: store ``relu6(c)`` rather than the clipped ``c`` (the TF release
            does; the paper does not say so).
        kernel_size: the depthwise kernel of every separable convolution.
        pre_bottleneck_state: ``"group"``: group ``k`` of the pre-bottleneck reads
            ``[x, h^k]`` (the paper); ``"full"``: one separable convolution reads ``[x, h]``
            (the TF release).

    Weights (per extractor ``e``): ``pre_bottleneck[e]`` is a :class:`GroupedSeparableConv`
    whose group ``k`` reads ``[x, h^k]`` (``C_e + S/G`` channels) and writes ``b^k`` (with
    ``"full"``: one group reading ``[x, h]``, ``C_e + S`` channels, writing ``b``);
    ``gates`` is one whose group ``k`` reads ``b^k`` and writes ``[i^k, j^k, f^k, o^k]``.
    """

    def __init__(
        self,
        input_channels: Sequence[int],
        state_channels: int = 320,
        groups: int = 4,
        clip: float = 6.0,
        forget_bias: float = 1.0,
        store_relu6_state: bool = False,
        kernel_size: int = 3,
        pre_bottleneck_state: Literal["group", "full"] = "group",
    ) -> None:
        super().__init__()
        if pre_bottleneck_state not in ("group", "full"):
            raise ValueError(f"pre_bottleneck_state must be 'group' or 'full', got {pre_bottleneck_state!r}")
        if state_channels % groups:
            raise ValueError(f"state_channels={state_channels} is not divisible by groups={groups}")
        self.input_channels = [int(c) for c in input_channels]
        self.state_channels = int(state_channels)
        self.groups = int(groups)
        self.clip = float(clip)
        self.forget_bias = float(forget_bias)
        self.store_relu6_state = bool(store_relu6_state)
        self.pre_bottleneck_state = pre_bottleneck_state
        per_group = self.state_channels // self.groups
        if pre_bottleneck_state == "group":
            self.pre_bottleneck = nn.ModuleList(
                GroupedSeparableConv(self.groups * (c + per_group), self.state_channels, self.groups, kernel_size)
                for c in self.input_channels
            )
        else:
            self.pre_bottleneck = nn.ModuleList(
                GroupedSeparableConv(c + self.state_channels, self.state_channels, 1, kernel_size)
                for c in self.input_channels
            )
        self.gates = GroupedSeparableConv(self.state_channels, 4 * self.state_channels, self.groups, kernel_size)

    @property
    def out_channels(self) -> int:
        """Channels of the output ``M_t = [h_t, b_t]``: ``2 S``."""
        return 2 * self.state_channels

    def init_state(self, batch_size: int, size: tuple[int, int], device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        """Zero ``(c, h)``, each ``(B, S, h, w)`` for maps of ``size = (h, w)``."""
        shape = (batch_size, self.state_channels, *size)
        return torch.zeros(shape, device=device), torch.zeros(shape, device=device)

    def bottleneck(self, x: Tensor, extractor: int, h: Tensor) -> Tensor:
        """``b_t``: ``x (B, C_e, h, w)`` and ``h_{t-1} (B, S, h, w)`` -> ``(B, S, h, w)``, in ``[0, 6]``."""
        if self.pre_bottleneck_state == "full":
            return F.relu6(self.pre_bottleneck[extractor](torch.cat([x, h], dim=1)))
        batch, _, height, width = x.shape
        h_groups = h.reshape(batch, self.groups, self.state_channels // self.groups, height, width)
        x_groups = x.unsqueeze(1).expand(-1, self.groups, -1, -1, -1)
        # (B, G, C_e + S/G, h, w): group k's input is [x, h^k], as one grouped convolution reads it.
        stacked = torch.cat([x_groups, h_groups], dim=2)
        return F.relu6(self.pre_bottleneck[extractor](stacked.flatten(1, 2)))

    def forward(
        self, x: Tensor, extractor: int, c: Tensor, h: Tensor, update_state: bool = True
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One step on the features of extractor ``extractor`` for ``B`` streams.

        Args:
            x: ``(B, C_e, h, w)`` features of extractor ``extractor``.
            extractor: index into ``input_channels`` (0 = f0, 1 = f1 in LFS).
            c, h: the previous state, each ``(B, S, h, w)``.
            update_state: False keeps the previous state (LFS runs f1 this way, Sec. 3.2:
                "skipping state updates when f1 is run"): the output is still computed
                from ``x`` and the previous state, but the returned ``(c, h)`` are the
                given tensors themselves.
        Returns:
            ``(M_t (B, 2S, h, w), c_t (B, S, h, w), h_t (B, S, h, w))``; ``M_t = [h_t, b_t]``
            where ``h_t`` is this step's new ``h`` even when the state is not updated.
        """
        if not 0 <= extractor < len(self.input_channels):
            raise ValueError(f"extractor must be in [0, {len(self.input_channels)}), got {extractor}")
        if x.shape[1] != self.input_channels[extractor]:
            raise ValueError(f"extractor {extractor} has {self.input_channels[extractor]} channels, got {x.shape[1]}")
        batch, _, height, width = x.shape
        b = self.bottleneck(x, extractor, h)
        per_group = self.state_channels // self.groups
        # (B, G, 4, S/G, h, w): group k's pointwise outputs are [i^k, j^k, f^k, o^k].
        gates = self.gates(b).view(batch, self.groups, 4, per_group, height, width)
        i, j, f, o = (gates[:, :, n].reshape(batch, self.state_channels, height, width) for n in range(4))
        c_new = c * torch.sigmoid(f + self.forget_bias) + torch.sigmoid(i) * F.relu6(j)
        c_new = c_new.clamp(-self.clip, self.clip)
        c_act = F.relu6(c_new)
        h_new = c_act * torch.sigmoid(o)
        output = torch.cat([h_new, b], dim=1)
        if not update_state:
            return output, c, h
        return output, (c_act if self.store_relu6_state else c_new), h_new
