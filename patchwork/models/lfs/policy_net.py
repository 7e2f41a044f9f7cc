"""The adaptive interleaving Q-network of Looking Fast and Slow (Sec. 3.4, Fig. 4).

It reads ``S = (c_t, h_t, c_t - c_{t-1}, h_t - h_{t-1}, eta_t)``
(:meth:`~patchwork.models.lfs.detector.LookingFastSlowDetector.observe`): "a grouped
convolution using each of the four feature maps in S as separate groups", "a depthwise
separable convolution", "max pooling to remove the spatial dimensions", the action
history concatenated, and "a fully connected layer to obtain m outputs, the Q-values".

Size. The paper gives 89.6K parameters and 1.76 M multiply-adds. The defaults here
(a 1x1 grouped convolution to 12 channels per map, a 3x3 separable convolution to 48
channels) give 1.81 M multiply-adds on the 10 x 10 memory but only 18.4K parameters.
The two paper figures cannot both describe these layers on a 10 x 10 map: every weight of
a stride-1 convolution is used once per output position, so 1.76 M multiply-adds allow at
most 17.6K convolution weights, and the single FC after global pooling has only
``2 (C + 20) + 2`` parameters; 89.6K would need a ~36K-wide pooled vector. The widths are
arguments, so either figure can be matched.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: The observation's maps, in the grouped convolution's group order.
OBSERVATION_MAPS = ("c", "h", "c_delta", "h_delta")


class AdaptiveInterleavingQNetwork(nn.Module):
    """Q-values of the two actions (0 = run f0 next, 1 = run f1 next) from the LSTM state.

    Args:
        state_channels: ``S``, channels of each of the four maps (320).
        history_length: length of ``eta`` (20).
        per_map_channels: outputs of the grouped convolution per map.
        hidden: outputs of the separable convolution.
        num_actions: ``m`` (2).
    """

    def __init__(
        self,
        state_channels: int = 320,
        history_length: int = 20,
        per_map_channels: int = 12,
        hidden: int = 48,
        num_actions: int = 2,
    ) -> None:
        super().__init__()
        groups = len(OBSERVATION_MAPS)
        grouped = groups * per_map_channels
        self.features = nn.Sequential(
            nn.Conv2d(groups * state_channels, grouped, 1, groups=groups),
            nn.ReLU6(),
            nn.Conv2d(grouped, grouped, 3, padding=1, groups=grouped),
            nn.Conv2d(grouped, hidden, 1),
            nn.ReLU6(),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(1),
        )
        self.head = nn.Linear(hidden + history_length, num_actions)

    def forward(self, observation: dict[str, Tensor]) -> Tensor:
        """``observation``: ``c``, ``h``, ``c_delta``, ``h_delta`` ``(B, S, h, w)`` and ``eta`` ``(B, 20)``
        -> Q-values ``(B, num_actions)``."""
        maps = torch.cat([observation[name] for name in OBSERVATION_MAPS], dim=1)
        pooled = self.features(maps)
        return self.head(torch.cat([pooled, observation["eta"].to(pooled.dtype)], dim=1))
