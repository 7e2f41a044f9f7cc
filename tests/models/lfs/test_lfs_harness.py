"""Looking Fast and Slow on the shared harness: the stream runner, its cost and the adaptive policy's scores."""

import pytest
import torch
from lfs_fixtures import TINY_SIZE, tiny_lfs

from patchwork.engine.runner import StreamRunner
from patchwork.evaluation.cost import theoretical_cost
from patchwork.evaluation.rows import method_label
from patchwork.nn.flops import count_flops
from patchwork.policies import FixedInterleavingPolicy, GreedyPolicy

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@torch.no_grad()
def test_fixed_interleaving_through_the_runner_and_its_cost():
    model = tiny_lfs().eval()
    runner = StreamRunner(model, FixedInterleavingPolicy(2))
    runner.start(2, TINY_SIZE)
    frames = torch.rand(6, 2, 3, *TINY_SIZE)
    actions = [runner.step(frames[t]).actions.tolist() for t in range(6)]
    assert actions == [[0, 0], [1, 1], [1, 1], [0, 0], [1, 1], [1, 1]]
    state = model.init_state(1, TINY_SIZE)
    f0 = count_flops(lambda: model(frames[0, :1], torch.tensor([0]), state))
    f1 = count_flops(lambda: model(frames[0, :1], torch.tensor([1]), state))
    cost = theoretical_cost(model, TINY_SIZE, FixedInterleavingPolicy(2), num_frames=6)
    assert cost.mflops_max * 1e6 == f0
    assert cost.mflops_avg * 1e6 == pytest.approx((f0 + 2 * f1) / 3)
    assert method_label(model, FixedInterleavingPolicy(9)) == "LFS interleaved tau=9"


@torch.no_grad()
def test_adaptive_policy_reads_the_observation_and_starts_with_f0():
    model = tiny_lfs().eval()
    runner = StreamRunner(model, GreedyPolicy())
    runner.start(3, TINY_SIZE)
    first = runner.step(torch.rand(3, 3, *TINY_SIZE))
    assert first.actions.tolist() == [0, 0, 0] and first.scores is None  # no observation before frame 0
    second = runner.step(torch.rand(3, 3, *TINY_SIZE))
    assert second.scores.shape == (3, 2)
    assert torch.equal(second.actions, second.scores.argmax(-1))
