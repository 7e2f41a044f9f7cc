"""The attention Q-network (Sec. 3.1, Fig. 3; supplementary Sec. A)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class AttentionQNetwork(nn.Module):
    """Two conv layers and one fully connected layer: restored memory + history -> Q-values.

    The convolutions map the restored full-frame memory of a Patchwork cell to a small
    map; it is pooled to the ``slices x slices`` layout of the window grid (so the same
    weights serve any image size and each FC input still has a place in the frame),
    flattened, concatenated with the action history ``F_t`` (Eq. 1) and mapped to one
    Q-value per window.

    Args:
        in_channels: channels of the restored memory.
        num_actions: ``A``, the number of windows.
        slices: ``M`` of the window grid (the pooled map is ``M x M``).
        hidden: channels of the two conv layers.
    """

    def __init__(self, in_channels: int, num_actions: int, slices: int, hidden: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(slices),
        )
        self.head = nn.Linear(hidden * slices * slices + num_actions, num_actions)

    def forward(self, observation: dict[str, Tensor]) -> Tensor:
        """Q-values ``(B, A)`` from the observation ``S_t``: ``"memory"`` ``(B, C, H, W)``, the restored
        memory, and ``"history"`` ``(B, A)``, the action history."""
        pooled = self.features(observation["memory"]).flatten(1)
        return self.head(torch.cat((pooled, observation["history"].to(pooled.dtype)), dim=1))
