"""BlockCopy's Tab. 3 split of online frames: the parts add up to the frame, the update only where it runs."""

import pytest
import torch

from patchwork.benchmarks.blockcopy_online import COLUMNS, mark_online_parts, online_frame_row, online_frame_splits
from patchwork.engine.online import OnlineLearning
from patchwork.models import BlockCopyModel, patchwork_detector
from patchwork.policies import BernoulliPolicy
from patchwork.rl import InformationGainReward, Reinforce

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_parts_add_up_to_the_frame_and_the_update_runs_every_fourth_frame():
    torch.manual_seed(0)
    detector = patchwork_detector((1, 1), width_mult=0.35, num_classes=3).eval()
    model = BlockCopyModel(detector, block_size=32, policy_width=0.25, policy_head_layers=1).eval()
    learner = Reinforce(model.policy_network, BernoulliPolicy(),
                        lambda params: torch.optim.RMSprop(params, lr=1e-4), update_every=4)
    online = mark_online_parts(OnlineLearning(learner, InformationGainReward(target=0.5)))
    splits = online_frame_splits(model, online, torch.rand(9, 1, 3, 64, 96))
    assert len(online.stats) == 2  # frames 1-8 chose by policy: updates after frames 4 and 8
    for t, split in enumerate(splits):
        assert all(split[key] >= 0 for key in COLUMNS), (t, split)
        assert sum(split[key] for key in COLUMNS) == pytest.approx(split["total"], rel=1e-12, abs=1e-9)
        assert (split["update"] > 0) == (t in (4, 8)), (t, split["update"])
        assert split["information_gain"] > 0 and split["policy"] > 0
        if t > 0:  # frame 0 runs every block densely: no overhead, no transfer
            assert split["overhead"] > 0 and split["transfer"] > 0
    row = online_frame_row(splits[1:], "64x96, bs 32")
    assert row["updates"] == 2 and row["frames"] == 8
    assert sum(row[f"{key}_ms"] for key in COLUMNS) == pytest.approx(row["frame_ms"], rel=1e-12)
    assert sum(row[f"{key}_%"] for key in COLUMNS) == pytest.approx(100.0, rel=1e-12)
    assert row["update_ms"] == pytest.approx((splits[4]["update"] + splits[8]["update"]) / 8, rel=1e-12)
