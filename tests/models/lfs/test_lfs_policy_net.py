"""The adaptive interleaving Q-network (LFS Sec. 3.4): shapes, size and cost by hand."""

import pytest
import torch

from patchwork.nn.flops import count_flops
from patchwork.models.lfs import AdaptiveInterleavingQNetwork

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _observation(batch: int, channels: int = 320, size: int = 10) -> dict[str, torch.Tensor]:
    obs = {name: torch.randn(batch, channels, size, size) for name in ("c", "h", "c_delta", "h_delta")}
    obs["eta"] = torch.randint(0, 2, (batch, 20)).float()
    return obs


def test_q_values_shape_and_the_history_reaches_them():
    torch.manual_seed(0)
    net = AdaptiveInterleavingQNetwork()
    obs = _observation(3)
    q = net(obs)
    assert q.shape == (3, 2)
    flipped = {**obs, "eta": 1 - obs["eta"]}
    assert not torch.equal(net(flipped), q)


def test_parameters_and_multiply_adds_by_hand():
    net = AdaptiveInterleavingQNetwork()
    grouped, depthwise, pointwise, fc = 4 * 320 * 12, 48 * 9, 48 * 48, (48 + 20) * 2
    biases = 48 + 48 + 48 + 2
    assert sum(p.numel() for p in net.parameters()) == grouped + depthwise + pointwise + fc + biases == 18378
    # Convolutions run at every one of the 10 x 10 positions (paper: 1.76 M multiply-adds, 89.6K parameters).
    macs = count_flops(lambda: net(_observation(1))) // 2
    assert macs == 100 * (grouped + depthwise + pointwise) + fc == 1_809_736


def test_each_map_reaches_only_its_own_group():
    net = AdaptiveInterleavingQNetwork(state_channels=8, per_map_channels=2, hidden=4)
    grouped = net.features[0]
    obs = _observation(1, channels=8, size=3)
    maps = torch.cat([obs[k] for k in ("c", "h", "c_delta", "h_delta")], dim=1)
    changed = maps.clone()
    changed[:, 16:24] += 1.0  # c_delta
    diff = (grouped(changed) - grouped(maps)).abs().sum(dim=(0, 2, 3))
    assert diff[:4].eq(0).all() and diff[4:6].gt(0).all() and diff[6:].eq(0).all()
