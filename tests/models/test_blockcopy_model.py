"""BlockCopyModel on the harness: the task model's weights and predictions, the roles, cost as executed,
and the online policy that learns while it streams without touching the task network."""

import pytest
import torch
from model_fixtures import randomize_batchnorm

from patchwork.engine.online import OnlineLearning
from patchwork.engine.runner import StreamRunner
from patchwork.evaluation.cost import theoretical_cost
from patchwork.models import BlockCopyModel, patchwork_detector, patchwork_segmenter
from patchwork.models.blockcopy import paint_detections
from patchwork.nn.flops import count_flops
from patchwork.nn.spaces import MultiBinary
from patchwork.policies import BernoulliPolicy
from patchwork.rl import InformationGainReward, Reinforce

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = (64, 96)  # 2 x 3 blocks of 32 pixels
MASK = torch.tensor([[[True, False, True], [False, False, True]], [[False, True, False], [False, False, False]]])


def _detector():
    torch.manual_seed(0)
    return randomize_batchnorm(patchwork_detector((1, 1), width_mult=0.35, num_classes=3)).eval()


def _segmenter():
    torch.manual_seed(0)
    return randomize_batchnorm(patchwork_segmenter((1, 1), width_mult=0.35)).eval()


def _blockcopy(task_model, **options):
    options = {"block_size": 32, "policy_width": 0.25, "policy_head_layers": 1, **options}
    return BlockCopyModel(task_model, **options).eval()


def test_weights_are_the_task_models_plus_the_policy_network():
    detector = _detector()
    model = _blockcopy(detector)
    keys = set(model.state_dict())
    task = set(detector.state_dict())
    assert task <= keys and all(k.startswith("policy_net.") for k in keys - task)
    assert model.policy_state_names() == keys - task  # BatchNorm statistics of the policy included
    # A stage-1 checkpoint of the task model loads as it is; only the policy is missing.
    fresh = _blockcopy(patchwork_detector((1, 1), width_mult=0.35, num_classes=3))
    missing, unexpected = fresh.load_state_dict(detector.state_dict(), strict=False)
    assert not unexpected and missing and set(missing) <= model.policy_state_names()
    for key, value in detector.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


@torch.no_grad()
@pytest.mark.parametrize("make", [_detector, _segmenter])
def test_predictions_are_the_task_models_and_a_mask_on_the_same_frame_changes_nothing(make):
    task_model = make()
    model = _blockcopy(task_model)
    frames = torch.rand(2, 3, *SIZE)
    reference = task_model(frames, None if task_model.action_space is None else torch.zeros(2, dtype=torch.long),
                           task_model.init_state(2, SIZE))
    state = model.init_state(2, SIZE)
    first = model(frames, None, state)  # every block: the dense pass
    again = model(frames, MASK, first.state)
    for out in (first, again):
        for ours, theirs in zip(out.predictions, reference.predictions):
            assert ours.keys() == theirs.keys()
            for key in theirs:
                torch.testing.assert_close(ours[key].float(), theirs[key].float(), rtol=1e-4, atol=1e-4)
    assert torch.equal(again.state["executed"], MASK)


@torch.no_grad()
def test_roles_action_space_observation_policy_logits_and_description():
    model = _blockcopy(_detector(), target_cost=0.3)
    assert model.action_space == MultiBinary(32, first=True)
    assert model.describe().label == "BlockCopy tau=0.3" and model.describe().family == "BlockCopy"
    assert model.describe().fields["tau"] == 0.3
    frames = torch.rand(2, 3, *SIZE)
    out = model(frames, None, model.init_state(2, SIZE))
    observation = model.observe(out)
    assert observation["output"].shape == (2, 3, 16, 24)  # 8 policy cells per block side
    assert torch.equal(observation["frame_state"], model.normalize(frames))
    logits = model.policy_network(model.policy_input(observation, torch.rand(2, 3, *SIZE)))
    assert logits.shape == (2, 2, 3)
    assert torch.equal(model.action_overlay(MASK[0], SIZE)["blocks"], MASK[0])
    assert {id(p) for p in model.policy_parameters()} == {id(p) for p in model.policy_net.parameters()}


def test_detections_are_painted_as_per_class_maximum_scores():
    boxes = torch.tensor([[0.0, 0.0, 16.0, 8.0], [8.0, 0.0, 32.0, 16.0]])
    maps = paint_detections(boxes, torch.tensor([0.5, 0.75]), torch.tensor([1, 1]), 2, (16, 32), (2, 4))
    # Cells of 8x8 pixels; centres at x = 4, 12, 20, 28 and y = 4, 12.
    expected = torch.tensor([[0.5, 0.75, 0.75, 0.75], [0.0, 0.75, 0.75, 0.75]])
    assert torch.equal(maps[1], expected) and not maps[0].any()


@torch.no_grad()
def test_cost_as_executed_counts_the_blocks_and_the_policy_network():
    model = _blockcopy(_detector())
    frames = torch.rand(1, 3, *SIZE)
    dense = count_flops(lambda: model.network.forward_full(model.normalize(frames), model.init_state(1, SIZE)))
    state = model(frames, None, model.init_state(1, SIZE)).state
    observation = model.policy_input(model.observe(model(frames, None, state)), frames)
    policy = count_flops(lambda: model.policy_network(observation))
    # A frame without executed blocks costs only the densified global ops (the pyramid, its heads).
    none = torch.zeros(1, 2, 3, dtype=torch.bool)
    state = model(frames, None, model.init_state(1, SIZE)).state
    skipped = count_flops(lambda: model(frames, none, state))
    assert skipped < dense / 2 and policy > 0
    # Every block on the first frame (no scores yet), then the policy network and no block.
    cost = theoretical_cost(model, SIZE, BernoulliPolicy(threshold=2.0), num_frames=3)  # probabilities never > 2
    assert cost.mflops_max * 1e6 == pytest.approx(dense)
    assert cost.mflops_avg * 1e6 == pytest.approx((dense + 2 * (skipped + policy)) / 3)


def test_online_policy_learns_while_streaming_and_never_changes_the_task_network():
    model = _blockcopy(_segmenter())
    task_before = {k: v.clone() for k, v in model.state_dict().items() if k not in model.policy_state_names()}
    policy_before = [p.detach().clone() for p in model.policy_parameters()]
    learner = Reinforce(model.policy_network, BernoulliPolicy(),
                        lambda params: torch.optim.RMSprop(params, lr=1e-2, weight_decay=1e-3), update_every=2)
    online = OnlineLearning(learner, InformationGainReward(target=0.5))
    runner = StreamRunner(model, online, seed=0)
    assert runner.score_graph
    frames = torch.rand(2, 5, 3, *SIZE)
    model.eval()
    with torch.no_grad():  # as the evaluation runs it: the policy's scores still get their graph
        runner.start(2, SIZE, videos=torch.arange(2))
        for t in range(5):
            runner.step(frames[:, t])
    assert len(online.stats) == 2 and online.frames_seen == 5  # frames 1-4 chose by policy: two updates
    assert online.reward.cost_average.shape == (2,)
    for key, value in model.state_dict().items():
        if key in task_before:
            assert torch.equal(value, task_before[key]), key
    assert any(not torch.equal(p, q) for p, q in zip(model.policy_parameters(), policy_before))
