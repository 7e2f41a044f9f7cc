"""The Looking Fast and Slow detector: state semantics, grouping by action, loss, contract."""

import pytest
import torch
from lfs_fixtures import TINY_SIZE, tiny_lfs

from patchwork.models import looking_fast_slow_detector
from patchwork.models.lfs import F0, F1, HISTORY_LENGTH
from patchwork.models.lfs.detector import C, C_PREV, ETA, H, H_PREV

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    return tiny_lfs().eval()


def _warm_state(model, batch: int = 2):
    """A state after one f0 step, so that the memory is not zero."""
    torch.manual_seed(1)
    with torch.no_grad():
        return model(torch.rand(batch, 3, *TINY_SIZE), None, model.init_state(batch)).state


@torch.no_grad()
def test_f1_keeps_the_memory_and_f0_updates_it_and_both_outputs_depend_on_the_frame(model):
    state = _warm_state(model)
    frames = torch.rand(2, 3, *TINY_SIZE)
    other = torch.rand(2, 3, *TINY_SIZE)
    small = model(frames, torch.full((2,), F1), state)
    assert torch.equal(small.state[C], state[C]) and torch.equal(small.state[H], state[H])
    large = model(frames, torch.full((2,), F0), state)
    assert not torch.equal(large.state[C], state[C]) and not torch.equal(large.state[H], state[H])
    assert not torch.equal(small.raw["cls_logits"], large.raw["cls_logits"])
    # Each output is computed from its own frame: another frame, another output (same state).
    for action, out in ((F1, small), (F0, large)):
        moved = model(other, torch.full((2,), action), state)
        assert not torch.equal(moved.raw["cls_logits"], out.raw["cls_logits"])
        assert not torch.equal(moved.raw["bbox_regression"], out.raw["bbox_regression"])
    # The previous memory is kept for the policy's deltas.
    assert torch.equal(large.state[C_PREV], state[C]) and torch.equal(large.state[H_PREV], state[H])


@torch.no_grad()
def test_mixed_batch_equals_each_stream_alone(model):
    state = _warm_state(model, batch=3)
    frames = torch.rand(3, 3, *TINY_SIZE)
    actions = torch.tensor([F1, F0, F1])
    mixed = model(frames, actions, state)
    for b in range(3):
        alone = model(frames[b : b + 1], actions[b : b + 1], state.select(torch.tensor([b])))
        for key in ("cls_logits", "bbox_regression"):
            torch.testing.assert_close(mixed.raw[key][b : b + 1], alone.raw[key], rtol=1e-5, atol=1e-5)
        for key in (C, H, C_PREV, H_PREV, ETA):
            torch.testing.assert_close(mixed.state[key][b : b + 1], alone.state[key], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(mixed.predictions[b]["boxes"], alone.predictions[0]["boxes"], rtol=1e-4, atol=1e-3)


@torch.no_grad()
def test_only_the_chosen_extractor_runs_on_each_stream(model):
    calls = {"f0": [], "f1": []}
    hooks = [
        getattr(model, name).register_forward_hook(lambda m, args, out, name=name: calls[name].append(args[0].shape[0]))
        for name in calls
    ]
    try:
        state = model.init_state(4)
        frames = torch.rand(4, 3, *TINY_SIZE)
        model(frames, torch.tensor([F1, F0, F1, F1]), state)
        assert calls == {"f0": [1], "f1": [3]}
        model(frames, torch.full((4,), F1), state)
        model(frames, None, state)
        assert calls == {"f0": [1, 4], "f1": [3, 4]}
    finally:
        for hook in hooks:
            hook.remove()


@torch.no_grad()
def test_action_history_shifts_in_the_f1_flag(model):
    state = model.init_state(2)
    frames = torch.rand(2, 3, *TINY_SIZE)
    for actions in ([F1, F0], [F0, F1], [F1, F1]):
        state = model(frames, torch.tensor(actions), state).state
    assert state[ETA].shape == (2, HISTORY_LENGTH)
    # Entry k - 1 is 1 if f1 ran k steps ago; the last step is entry 0.
    assert state[ETA][:, :4].tolist() == [[1, 0, 1, 0], [1, 1, 0, 0]]
    assert state[ETA][:, 4:].sum() == 0


@torch.no_grad()
def test_observation_and_reset_of_one_stream(model):
    state = _warm_state(model)
    out = model(torch.rand(2, 3, *TINY_SIZE), torch.tensor([F0, F1]), state)
    obs = model.observe(out)
    assert set(obs) == {"c", "h", "c_delta", "h_delta", "eta"}
    assert obs["c"].shape == (2, 32, 4, 4) and obs["eta"].shape == (2, HISTORY_LENGTH)
    assert torch.equal(obs["c_delta"][1], torch.zeros_like(obs["c_delta"][1]))  # f1: memory unchanged
    assert obs["c_delta"][0].abs().sum() > 0 and obs["h_delta"][0].abs().sum() > 0
    torch.testing.assert_close(obs["h"][0] - obs["h_delta"][0], state[H][0])
    reset = out.state.reset(torch.tensor([False, True]))
    fresh = model.init_state(2)
    for key in fresh:
        assert torch.equal(reset[key][1], fresh[key][1])
        assert torch.equal(reset[key][0], out.state[key][0])


@torch.no_grad()
def test_predictions_decode_full_frame_boxes_and_labels(model):
    out = model(torch.rand(2, 3, *TINY_SIZE), torch.tensor([F0, F1]), model.init_state(2))
    anchors = model.anchors(TINY_SIZE, torch.device("cpu"))
    # 4 x 4 memory, then 2 x 2 and three 1 x 1 maps; 4 anchors per location.
    assert anchors.shape == (4 * (16 + 4 + 1 + 1 + 1), 4)
    assert out.raw["cls_logits"].shape == (2, anchors.shape[0], 4)
    assert len(out.predictions) == 2
    for prediction in out.predictions:
        assert prediction["boxes"].shape[1] == 4
        assert prediction["boxes"].min() >= 0 and prediction["boxes"].max() <= TINY_SIZE[0]
        assert prediction["labels"].min() >= 0 and prediction["labels"].max() < model.num_classes
    empty = model.empty_prediction(TINY_SIZE, "cpu")
    assert empty["boxes"].shape == (0, 4) and empty["labels"].dtype == torch.long
    assert model.describe().family == "LFS" and model.action_space.n == 2 and model.action_space.first == 0


def _targets():
    return [
        {"boxes": torch.tensor([[10.0, 20.0, 70.0, 90.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.tensor([[40.0, 40.0, 120.0, 100.0], [0.0, 0.0, 30.0, 30.0]]), "labels": torch.tensor([0, 1])},
    ]


@torch.no_grad()
def test_per_stream_loss_is_each_stream_alone(model):
    state = model.init_state(2)
    frames = torch.rand(2, 3, *TINY_SIZE)
    out = model(frames, torch.tensor([F0, F1]), state)
    per_stream = model.loss_per_stream(out, _targets())
    assert per_stream.shape == (2,)
    for b, target in enumerate(_targets()):
        alone = model(frames[b : b + 1], torch.tensor([[F0, F1][b]]), state.select(torch.tensor([b])))
        terms = model.loss(alone, [target])
        torch.testing.assert_close(per_stream[b], terms["bbox_regression"] + terms["classification"], rtol=1e-4, atol=1e-5)
    # No boxes: only the (empty) hard-negative term, zero.
    empty = model.loss_per_stream(out, [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2)
    assert torch.equal(empty, torch.zeros(2))


def test_loss_decreases_when_overfitting_one_tiny_batch():
    model = tiny_lfs(seed=3).train()
    torch.manual_seed(0)
    frames = torch.rand(2, 3, *TINY_SIZE)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        state = model.init_state(2)
        total = 0.0
        # Two unrolled steps: f0, then one f1 step on each stream (memory from the f0 step).
        for actions in (torch.tensor([F0, F0]), torch.tensor([F1, F1])):
            out = model(frames, actions, state)
            state = out.state
            terms = model.loss(out, _targets())
            total = total + terms["bbox_regression"] + terms["classification"]
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(total.item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_builder_refuses_sizes_with_mismatched_maps_and_gives_10x10_at_320():
    with pytest.raises(ValueError, match="different sizes"):
        looking_fast_slow_detector(3, (321, 321), width_f0=0.35, state_channels=32, extra_channels=(32,) * 4)
    model = tiny_lfs()
    assert model.map_size((320, 320)) == (10, 10)
    assert model.map_size((160, 160)) == (5, 5)
    with pytest.raises(ValueError, match="different sizes"):
        model.init_state(1, (330, 321))
    with pytest.raises(ValueError, match="actions"):
        model(torch.rand(1, 3, *TINY_SIZE), torch.tensor([2]), model.init_state(1))
