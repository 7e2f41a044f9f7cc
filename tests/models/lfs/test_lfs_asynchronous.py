"""LFS asynchronous inference (Sec. 3.5): simulated delay and the worker thread."""

import pytest
import torch
from lfs_fixtures import TINY_SIZE, tiny_lfs

from patchwork.evaluation.cost import theoretical_cost
from patchwork.evaluation.latency import measure_latency
from patchwork.evaluation.streaming import evaluate_streams
from patchwork.models.lfs import F0, F1
from patchwork.models.lfs.asynchronous import (
    PENDING_C,
    PENDING_FRAMES,
    SimulatedAsynchronousInference,
    ThreadedAsynchronousInference,
)
from patchwork.models.lfs.detector import C, H
from patchwork.nn import StreamState
from patchwork.nn.flops import count_flops
from patchwork.policies import FixedInterleavingPolicy
from tests.evaluation.test_eval_streaming import write_videos

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TAU = 2
OFFSETS = torch.tensor([0, 2])  # two streams, each on its own clock


@pytest.fixture(scope="module")
def model():
    return tiny_lfs().eval()


@pytest.fixture(scope="module")
def video():
    torch.manual_seed(5)
    return torch.rand(7, 2, 3, *TINY_SIZE)


def _sync_run(model, video):
    """Synchronous interleaved inference under the fixed schedule: outputs and memory before each frame."""
    policy = FixedInterleavingPolicy(TAU)
    state = model.init_state(2)
    outputs, memories = [], []
    for t, frames in enumerate(video):
        memories.append(state)
        out = model(frames, policy.select(None, OFFSETS + t), state)
        outputs.append(out)
        state = out.state
    return outputs, memories


@torch.no_grad()
def test_zero_delay_is_synchronous_interleaved_inference(model, video):
    expected, _ = _sync_run(model, video)
    runner = SimulatedAsynchronousInference(model, TAU, delay=0)
    state = runner.init_state(2)
    for t, frames in enumerate(video):
        out = runner.step(frames, OFFSETS + t, state)
        state = out.state
        assert torch.equal(out.raw["cls_logits"], expected[t].raw["cls_logits"])
        assert torch.equal(out.raw["bbox_regression"], expected[t].raw["bbox_regression"])
        assert torch.equal(state[C], expected[t].state[C]) and torch.equal(state[H], expected[t].state[H])
        assert torch.equal(out.predictions[1]["boxes"], expected[t].predictions[1]["boxes"])


def _model_state(model, state):
    """The model's own keys of a runner's state."""
    return StreamState({key: state[key] for key in model.init_state(1)})


@pytest.mark.parametrize("delay", [1, 2, 3])
@torch.no_grad()
def test_f0_update_lands_delay_frames_late_and_f1_detects_every_frame(model, video, delay):
    runner = SimulatedAsynchronousInference(model, TAU, delay=delay)
    state = runner.init_state(2)
    launched = {}  # stream -> (launch frame, memory at launch, f0's update)
    for t, frames in enumerate(video):
        out = runner.step(frames, OFFSETS + t, state)
        state = out.state
        in_effect = _model_state(model, state)  # f1 does not change the memory
        # Every frame's detections are f1's, from the memory in effect at that frame.
        f1 = model(frames, torch.full((2,), F1), in_effect)
        torch.testing.assert_close(out.raw["cls_logits"], f1.raw["cls_logits"], rtol=1e-5, atol=1e-5)
        for b in range(2):
            if b in launched:  # stream 1 first launches f0 at t = 1
                start, old, update = launched[b]
                # In flight on frames start .. start + delay - 1, in effect from start + delay on.
                expected = update if t >= start + delay else old
                torch.testing.assert_close(state[C][b], expected, rtol=1e-5, atol=1e-5)
            if (OFFSETS[b] + t) % (TAU + 1) == 0:
                alone = model(frames[b : b + 1], torch.tensor([F0]), in_effect.select(torch.tensor([b])))
                launched[b] = (t, state[C][b].clone(), alone.state[C][0])
    assert 0 < state[PENDING_FRAMES].max() <= delay


@torch.no_grad()
def test_one_frame_delay_differs_from_synchronous_only_on_keyframes(model, video):
    expected, memories = _sync_run(model, video)
    runner = SimulatedAsynchronousInference(model, TAU, delay=1)
    state = runner.init_state(2)
    for t, frames in enumerate(video):
        out = runner.step(frames, OFFSETS + t, state)
        state = out.state
        for b in range(2):
            keyframe = (OFFSETS[b] + t) % (TAU + 1) == 0
            # The memory trails synchronous inference's by the keyframe only.
            memory = (memories[t] if keyframe else expected[t].state)[C][b]
            torch.testing.assert_close(state[C][b], memory, rtol=1e-5, atol=1e-5)
            if keyframe:
                # Keyframe: f1 on the memory synchronous inference had before this frame.
                f1 = model(frames[b : b + 1], torch.tensor([F1]), memories[t].select(torch.tensor([b])))
                reference = f1.raw["cls_logits"][0]
            else:
                reference = expected[t].raw["cls_logits"][b]
            torch.testing.assert_close(out.raw["cls_logits"][b], reference, rtol=1e-5, atol=1e-5)


def test_delay_is_checked_and_reset_streams_have_nothing_in_flight(model, video):
    with pytest.raises(ValueError):
        SimulatedAsynchronousInference(model, tau=2, delay=4)
    runner = SimulatedAsynchronousInference(model, TAU, delay=2)
    with torch.no_grad():
        state = runner.step(video[0], OFFSETS, runner.init_state(2)).state
    assert state[PENDING_FRAMES].tolist() == [2, 0]
    assert state.reset(torch.tensor([True, False]))[PENDING_FRAMES].tolist() == [0, 0]


@torch.no_grad()
def test_threaded_mode_with_a_flush_each_frame_is_the_one_frame_delay(model, video):
    simulated = SimulatedAsynchronousInference(model, TAU, delay=1)
    expected_state = simulated.init_state(2)
    with ThreadedAsynchronousInference(model, TAU) as threaded:
        state = threaded.init_state(2)
        for t, frames in enumerate(video):
            expected = simulated.step(frames, OFFSETS + t, expected_state)
            expected_state = expected.state
            out = threaded.step(frames, OFFSETS + t, state)
            torch.testing.assert_close(out.raw["cls_logits"], expected.raw["cls_logits"], rtol=1e-5, atol=1e-5)
            assert len(out.predictions) == 2
            state = threaded.flush(out.state)  # f0 has finished before the next frame


@torch.no_grad()
def test_threaded_mode_merges_f0_updates_when_they_finish(model, video):
    with ThreadedAsynchronousInference(model, tau=3) as threaded:
        state = threaded.init_state(2)
        start = state[C].clone()
        for t, frames in enumerate(video):
            state = threaded.step(frames, OFFSETS + t, state).state
        state = threaded.flush(state)
    assert not torch.equal(state[C], start)


# ------------------------------------------------------------- as a streaming model on the harness
@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return write_videos(tmp_path_factory.mktemp("lfs_async_videos"), [5, 7], (96, 160), TINY_SIZE)


def test_zero_delay_streams_exactly_as_synchronous_interleaving(model, videos):
    policy = FixedInterleavingPolicy(TAU)
    sync = evaluate_streams(model, videos, policy, streams=2)
    asynchronous = evaluate_streams(SimulatedAsynchronousInference(model, TAU, delay=0), videos, policy, streams=2)
    for a, b in zip(sync.videos, asynchronous.videos):
        assert torch.equal(a.actions, b.actions)
        for p, q in zip(a.predictions, b.predictions):
            assert all(torch.equal(p[key], q[key]) for key in ("boxes", "scores", "labels"))
    # With a delay the keyframes' detections are f1's: the results differ.
    late = evaluate_streams(SimulatedAsynchronousInference(model, TAU, delay=1), videos, policy, streams=2)
    assert not torch.equal(late.videos[0].predictions[0]["scores"], sync.videos[0].predictions[0]["scores"])


@torch.no_grad()
def test_async_cost_per_frame_is_the_f1_path_and_f0_counts_in_the_average(model):
    frames, state = torch.rand(1, 3, *TINY_SIZE), model.init_state(1)
    f1 = count_flops(lambda: model(frames, torch.tensor([F1]), state))
    update = count_flops(lambda: model.remember(model.normalize(frames), torch.tensor([F0]), state))
    cost = theoretical_cost(SimulatedAsynchronousInference(model, TAU, delay=1), TINY_SIZE,
                            FixedInterleavingPolicy(TAU), num_frames=2 * (TAU + 1))
    assert cost.mflops_max * 1e6 == f1
    assert cost.mflops_avg * 1e6 == pytest.approx(f1 + update / (TAU + 1), rel=1e-12)


def test_threaded_mode_is_timed_as_a_streaming_model(model):
    threaded = ThreadedAsynchronousInference(model, TAU)
    assert threaded.describe().label == "LFS async" and threaded.describe().fields["tau"] == TAU
    clips = [torch.rand(4, 3, *TINY_SIZE)]
    latency = measure_latency(threaded, clips, FixedInterleavingPolicy(TAU), frames_per_video=4)
    assert latency["count"] == 4  # timed on a copy, which starts its own worker
    threaded.close()


@torch.no_grad()
def test_a_launch_while_an_update_is_in_flight_lands_that_update_first(model, video):
    runner = SimulatedAsynchronousInference(model, TAU, delay=3)
    f0 = torch.full((2,), F0)
    start = runner.init_state(2)
    first = runner(video[0], f0, start).state
    assert torch.equal(first[C], start[C])  # in flight
    second = runner(video[1], f0, first).state
    # Frame 1 launches again: frame 0's update is merged first, and frame 1's f0 starts from it.
    update = model(video[0], f0, _model_state(model, start)).state
    torch.testing.assert_close(second[C], update[C], rtol=1e-5, atol=1e-5)
    assert second[PENDING_FRAMES].tolist() == [3, 3]
    torch.testing.assert_close(second[PENDING_C], model(video[1], f0, update).state[C], rtol=1e-5, atol=1e-5)
