import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from patchwork.models.baselines import Flip, KeyframeDelay, KeyframeInterval, Resolution, average_raw, balanced_partition
from patchwork.models.builders import patchwork_segmenter
from patchwork.models.streaming import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ROW_BAND,
    Description,
    StepOutput,
    StreamingModel,
    layer_stages,
    normalize_frames,
    row_bands,
    run_stages,
)
from model_fixtures import randomize_batchnorm
from torchvision.ops.misc import Conv2dNormActivation
from patchwork.nn import StreamState, WindowGrid
from patchwork.nn.flops import count_flops, stream_cost
from patchwork.nn.spaces import Discrete

MEAN, STD = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

SIZE = (32, 32)
# FLOPs per pixel of the toy's four convolutions, 2 * Cin * Cout * k * k: deliberately
# unequal stages in the ratio 1 : 3 : 2 : 2.
STAGE_FLOPS_PER_PIXEL = [2 * 3 * 4 * 9, 2 * 4 * 9 * 9, 2 * 9 * 24, 2 * 24 * 1 * 9]


class WindowMeanQ(nn.Module):
    """Toy attention: Q-value of window w = mean of the memory inside window w (history ignored)."""

    def __init__(self, grid: WindowGrid) -> None:
        super().__init__()
        self.grid = grid

    def forward(self, observation: dict[str, torch.Tensor]) -> torch.Tensor:
        memory = observation["memory"]
        boxes = self.grid.boxes(tuple(memory.shape[-2:])).tolist()
        q = [memory[:, 0, y1:y2, x1:x2].mean(dim=(1, 2)) for x1, y1, x2, y2 in boxes]
        return torch.stack(q, dim=1)


class ToySegmenter(StreamingModel):
    """A per-pixel 'segmenter' of four convs on the window, writing a full-frame logits memory.

    ``echo=True`` replaces the convs' result by the channel mean of the normalised crop
    (output = input), which commutes exactly with mirroring. With one window it has no
    action space (``actions=None``, or window 0, is the frame).
    """

    task = "segmentation"

    def __init__(self, grid: WindowGrid = WindowGrid(1, 1, align=8), echo: bool = False, seed: int = 0) -> None:
        super().__init__()
        self.grid = grid
        self.attention = WindowMeanQ(grid) if grid.num_windows > 1 else None
        per_axis = grid.positions_per_axis
        self.action_space = None if grid.is_full_frame else Discrete(grid.num_windows, layout=(per_axis, per_axis))
        torch.manual_seed(seed)
        self.layers = nn.ModuleList(
            [
                nn.Conv2d(3, 4, 3, padding=1),
                nn.Conv2d(4, 9, 3, padding=1),
                nn.Conv2d(9, 24, 1),
                nn.Conv2d(24, 1, 3, padding=1),
            ]
        )
        self.echo = echo
        self.batch_sizes: list[int] = []  # one entry per call: the batch the model computed

    def check_image_size(self, image_size):
        self.grid.check_image_size(image_size)

    def init_state(self, batch_size, image_size, device=None):
        self.grid.check_image_size(image_size)
        return StreamState({"memory": torch.zeros(batch_size, 1, *image_size, device=device)})

    def step_stages(self, frames, actions, state):
        self.batch_sizes.append(frames.shape[0])
        if actions is None:
            actions = torch.zeros(frames.shape[0], dtype=torch.long)
        frames = normalize_frames(frames, MEAN, STD)
        crops = self.grid.crop(frames, actions)
        x = crops
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < 3:
                x = torch.relu(x)
                yield
        if self.echo:
            x = crops.mean(1, keepdim=True)
        memory = state["memory"].clone()
        h, w = x.shape[-2:]
        for b, (top, left) in enumerate(self.grid.offsets(actions, tuple(frames.shape[-2:])).tolist()):
            memory[b, :, top : top + h, left : left + w] = x[b]
        new = StreamState(state)
        new["memory"] = memory
        return StepOutput({"logits": memory, "name": "toy"}, new)

    def observe(self, out):
        return None if self.attention is None else {"memory": out.state["memory"]}

    @property
    def policy_network(self):
        return self.attention

    def predict(self, out, min_score=None):
        predictions = []
        for logits in out.raw["logits"][:, 0]:
            mask = logits > 0
            rows, cols = mask.any(1).nonzero().squeeze(1), mask.any(0).nonzero().squeeze(1)
            if rows.numel():
                boxes = torch.tensor([[cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]], dtype=torch.float32)
            else:
                boxes = torch.zeros(0, 4)
            labels = torch.ones(boxes.shape[0], dtype=torch.long)
            predictions.append({"mask": mask, "scores": torch.sigmoid(logits), "boxes": boxes, "labels": labels})
        return predictions

    def empty_prediction(self, image_size, device):
        return {
            "mask": torch.zeros(image_size, dtype=torch.bool, device=device),
            "scores": torch.zeros(image_size, device=device),
            "boxes": torch.zeros(0, 4, device=device),
            "labels": torch.zeros(0, dtype=torch.long, device=device),
        }

    def loss(self, out, targets):
        masks = torch.stack([t["mask"] for t in targets]).float().unsqueeze(1)
        return {"mask": F.binary_cross_entropy_with_logits(out.raw["logits"], masks)}

    def mirror_raw(self, raw):
        return {"logits": raw["logits"].flip(-1), "name": raw["name"]}

    def mirror_actions(self, actions):
        return self.grid.mirror(actions)

    def describe(self):
        return Description("SF" if self.grid.is_full_frame else "Toy", ("toy",))


def _frames(num_frames: int, batch: int, size=SIZE, seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, 3, *size, generator=generator) for _ in range(num_frames)]


def _zeros(batch: int) -> torch.Tensor:
    return torch.zeros(batch, dtype=torch.long)


def _assert_predictions_equal(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.keys() == e.keys()
        for key in a:
            assert a[key].dtype == e[key].dtype, key
            assert torch.equal(a[key], e[key]), key


def _assert_predictions_close(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.keys() == e.keys()
        for key in a:
            torch.testing.assert_close(a[key], e[key], rtol=1e-5, atol=1e-6)


def _single_frame_predictions(model, frame):
    """The unwrapped model on one frame from a fresh state."""
    state = model.init_state(frame.shape[0], tuple(frame.shape[-2:]))
    return model(frame, _zeros(frame.shape[0]), state).predictions


def _run(wrapper, frames, actions=None):
    wrapper.eval()
    batch = frames[0].shape[0]
    state = wrapper.init_state(batch, tuple(frames[0].shape[-2:]))
    outputs = []
    for frame in frames:
        out = wrapper(frame, _zeros(batch) if actions is None else actions, state)
        state = out.state
        outputs.append(out)
    return outputs


# ------------------------------------------------------------------------------- interval
@torch.no_grad()
def test_interval_computes_only_keyframes_and_copies_their_predictions():
    model = ToySegmenter().eval()
    frames = _frames(7, batch=2)
    outputs = _run(KeyframeInterval(model, 3), frames)
    assert model.batch_sizes == [2, 2, 2]  # frames 0, 3, 6 only
    for t, out in enumerate(outputs):
        keyframe = t - t % 3
        _assert_predictions_equal(out.predictions, _single_frame_predictions(model, frames[keyframe]))
        assert out.raw["keyframe"] is None if t % 3 else out.raw["keyframe"] is not None
    # The toy's predictions vary from frame to frame, so a copy is not a coincidence.
    assert not torch.equal(outputs[0].predictions[0]["scores"], outputs[3].predictions[0]["scores"])


@torch.no_grad()
def test_interval_recomputes_only_the_streams_that_are_due():
    model = ToySegmenter(echo=True).eval()  # black frames give no box, others one
    wrapper = KeyframeInterval(model, 3).eval()
    frames = _frames(5, batch=3)
    frames[0].zero_()
    frames[3][0].zero_()
    state = wrapper.init_state(3, SIZE)
    history = []
    for t, frame in enumerate(frames):
        if t == 2:  # stream 1 starts a new video
            state = state.reset(torch.tensor([False, True, False]))
        out = wrapper(frame, _zeros(3), state)
        state = out.state
        history.append(out)
    # Keyframes: streams 0, 2 at t = 0, 3; stream 1 at t = 0 and at its own t = 0 (frame 2).
    assert model.batch_sizes == [3, 1, 2]
    assert history[2].raw["keyframe_streams"].tolist() == [1]
    assert history[3].raw["keyframe_streams"].tolist() == [0, 2]
    assert state[KeyframeInterval.COUNTER].tolist() == [5, 3, 5]
    # Held boxes of varying number: the padded copies grow and shrink per stream.
    assert [[len(p["boxes"]) for p in out.predictions] for out in history] == [
        [0, 0, 0], [0, 0, 0], [0, 1, 0], [0, 1, 1], [0, 1, 1]
    ]
    keyframe_of = {0: [0, 0, 0, 3, 3], 1: [0, 0, 2, 2, 2], 2: [0, 0, 0, 3, 3]}
    for stream, keyframes in keyframe_of.items():
        for t, key in enumerate(keyframes):
            # Exact copies of the keyframe's predictions ...
            copied = history[t].predictions[stream : stream + 1]
            _assert_predictions_equal(copied, history[key].predictions[stream : stream + 1])
            # ... which are the model's on that stream's frame (computed in another batch).
            _assert_predictions_close(copied, _single_frame_predictions(model, frames[key][stream : stream + 1]))
    # The streams that were not due keep their model state untouched.
    assert torch.equal(history[2].state["memory"][0], history[1].state["memory"][0])


@torch.no_grad()
def test_interval_cost_max_is_keyframe_and_avg_is_keyframe_over_interval():
    model = ToySegmenter().eval()
    frames = _frames(1, batch=2)[0]
    keyframe = count_flops(lambda: model(frames, _zeros(2), model.init_state(2, SIZE)))
    assert keyframe == 2 * SIZE[0] * SIZE[1] * sum(STAGE_FLOPS_PER_PIXEL)
    wrapper = KeyframeInterval(model, 4).eval()
    state = wrapper.init_state(2, SIZE)

    def step(t):
        nonlocal state
        state = wrapper(frames, _zeros(2), state).state

    cost = stream_cost(step, 8)
    assert cost.mflops_max * 1e6 == keyframe
    assert cost.mflops_avg * 1e6 == pytest.approx(keyframe / 4)


def test_interval_loss_is_the_models_loss_on_keyframe_streams():
    model = ToySegmenter().train()
    wrapper = KeyframeInterval(model, 2).train()
    frames = _frames(2, batch=2)
    targets = [{"mask": torch.rand(SIZE) > 0.5} for _ in range(2)]
    state = wrapper.init_state(2, SIZE)
    out = wrapper(frames[0], _zeros(2), state)
    assert out.predictions is None
    expected = model.loss(model(frames[0], _zeros(2), model.init_state(2, SIZE)), targets)
    torch.testing.assert_close(wrapper.loss(out, targets)["mask"], expected["mask"])
    out = wrapper(frames[1], _zeros(2), out.state)
    assert wrapper.loss(out, targets) == {}


# ------------------------------------------------------------------------------- delay
@pytest.mark.parametrize("delay", [0, 1, 3])
@torch.no_grad()
def test_delay_gives_the_undelayed_predictions_delay_frames_late(delay):
    frames = _frames(11, batch=2)
    interval = _run(KeyframeInterval(ToySegmenter().eval(), 4), frames)
    model = ToySegmenter().eval()
    delayed = _run(KeyframeDelay(model, 4, delay), frames)
    empty = model.empty_prediction(SIZE, torch.device("cpu"))
    for t, out in enumerate(delayed):
        if t < delay:
            _assert_predictions_equal(out.predictions, [empty, empty])
        else:
            _assert_predictions_equal(out.predictions, interval[t - delay].predictions)
    # One measurement pass (batch 1) at init, then the keyframes 0, 4 and 8 (started in every case).
    # (one more measurement pass with the row-band requests, which the toy ignores, when delayed)
    assert model.batch_sizes == [1] * (1 + (delay > 0)) + [2, 2, 2]


@pytest.mark.parametrize("costs", [[1, 3, 2, 2], [10, 1, 1, 1, 1, 1], [0, 5, 0, 2]])
def test_balanced_partition_is_optimal_and_covers_every_stage_once(costs):
    for parts in range(1, 8):
        groups = balanced_partition(costs, parts)
        assert len(groups) == parts and len(groups[-1]) > 0
        assert [i for g in groups for i in g] == list(range(len(costs)))
        loads = [sum(costs[i] for i in g) for g in groups]
        # Brute force over every split into `parts` contiguous groups with a non-empty last one:
        # smallest largest group first, then the smallest sum of squares.
        best = min(
            (max(split), sum(x * x for x in split))
            for cuts in itertools.combinations_with_replacement(range(len(costs)), parts - 1)
            for split in [[sum(costs[a:b]) for a, b in zip((0, *cuts), (*cuts, len(costs)))]]
        )
        assert (max(loads), sum(x * x for x in loads)) == best
        if parts <= len(costs) and all(costs):
            assert all(len(g) for g in groups)  # nothing left idle when it can be avoided
    assert balanced_partition([1, 3, 2, 2], 2) == [range(0, 2), range(2, 4)]
    with pytest.raises(ValueError):
        balanced_partition([], 2)


@torch.no_grad()
def test_delay_per_frame_flops_follow_the_balanced_stage_groups():
    model = ToySegmenter().eval()
    frames = _frames(1, batch=2)[0]
    keyframe = count_flops(lambda: model(frames, _zeros(2), model.init_state(2, SIZE)))
    per_stage = [2 * SIZE[0] * SIZE[1] * f for f in STAGE_FLOPS_PER_PIXEL]  # batch 2
    for delay, groups in [(1, [[0, 1], [2, 3]]), (3, [[0], [1], [2], [3]])]:
        wrapper = KeyframeDelay(model, 4, delay).eval()
        state = wrapper.init_state(2, SIZE)
        assert [list(g) for g in wrapper.stage_groups(SIZE)] == groups
        assert [2 * f for f in wrapper.stage_flops(SIZE)] == per_stage
        flops = []

        def step(t):
            nonlocal state
            state = wrapper(frames, _zeros(2), state).state

        for t in range(8):
            flops.append(count_flops(lambda t=t: step(t)))
        expected = [sum(per_stage[i] for i in g) for g in groups] + [0] * (4 - len(groups))
        assert flops == expected * 2
        assert sum(flops[:4]) == keyframe  # each stage runs exactly once per keyframe
    # delay=1 splits the 1:3:2:2 stages exactly in half; delay=3 is bounded by the largest stage.
    wrapper = KeyframeDelay(model, 4, 1).eval()
    state = wrapper.init_state(2, SIZE)
    cost = stream_cost(step, 8)
    assert cost.mflops_max * 1e6 == keyframe / 2
    assert cost.mflops_avg * 1e6 == pytest.approx(keyframe / 4)


@torch.no_grad()
def test_delay_rejects_long_delays_and_streams_out_of_phase():
    model = ToySegmenter().eval()
    with pytest.raises(ValueError, match="interval"):
        KeyframeDelay(model, 4, 4)
    with pytest.raises(ValueError, match="pieces_per_frame"):
        KeyframeDelay(model, 4, 1, pieces_per_frame=0)
    wrapper = KeyframeDelay(model, 4, 1).eval()
    frames = _frames(2, batch=2)
    state = wrapper(frames[0], _zeros(2), wrapper.init_state(2, SIZE)).state
    with pytest.raises(ValueError, match="in phase"):
        wrapper(frames[1], _zeros(2), state.reset(torch.tensor([True, False])))
    # Resetting every stream restarts the schedule with a new keyframe.
    out = wrapper(frames[1], _zeros(2), state.reset(torch.tensor([True, True])))
    assert out.state[KeyframeDelay.COUNTER].tolist() == [1, 1]


# ------------------------------------------------------------------------------- flip
def test_mirror_windows_for_a_4x2_grid():
    grid = WindowGrid(4, 2)
    mirrored = grid.mirror(torch.arange(9))
    assert mirrored.tolist() == [2, 1, 0, 5, 4, 3, 8, 7, 6]
    # Geometrically: the mirrored window's box is the box mirrored about the vertical axis.
    width = 128
    boxes = grid.boxes((128, width))
    x1, y1, x2, y2 = boxes.unbind(-1)
    assert torch.equal(boxes[mirrored], torch.stack((width - x2, y1, width - x1, y2), dim=-1))
    assert WindowGrid(1, 1).mirror(torch.tensor([0])).tolist() == [0]


@torch.no_grad()
def test_flip_of_an_echo_model_is_the_model_itself():
    model = ToySegmenter(echo=True).eval()
    frame = _frames(1, batch=2)[0]
    out = _run(Flip(model), [frame])[0]
    plain = model(frame, _zeros(2), model.init_state(2, SIZE))
    # (x + mirror(mirror(x))) / 2 = x
    torch.testing.assert_close(out.raw["logits"], plain.raw["logits"], rtol=0, atol=1e-6)
    assert out.raw["name"] == "toy"


@torch.no_grad()
def test_flip_averages_the_mirrored_pass_of_an_asymmetric_model():
    model = ToySegmenter().eval()
    frames = _frames(2, batch=2)
    wrapper = Flip(model).eval()
    outputs = _run(wrapper, frames)
    for frame, out in zip(frames, outputs):
        plain = model(frame, _zeros(2), model.init_state(2, SIZE)).raw["logits"]
        mirrored = model(frame.flip(-1), _zeros(2), model.init_state(2, SIZE)).raw["logits"]
        assert not torch.allclose(plain, mirrored.flip(-1), atol=1e-3)  # the model is not symmetric
        torch.testing.assert_close(out.raw["logits"], (plain + mirrored.flip(-1)) / 2)
        _assert_predictions_equal(out.predictions, model.predict(StepOutput(out.raw, out.state)))
    # One state holds both streams.
    assert set(outputs[-1].state) == {"memory", "mirrored.memory"}


@torch.no_grad()
def test_flip_looks_at_the_mirrored_window_and_maps_q_values_back():
    grid = WindowGrid(4, 2, align=8)
    model = ToySegmenter(grid, echo=True).eval()
    frame = _frames(1, batch=3, size=(64, 64))[0]
    actions = torch.tensor([0, 5, 7])  # windows (0,0), (1,2), (2,1)
    wrapper = Flip(model).eval()
    out = wrapper(frame, actions, wrapper.init_state(3, (64, 64)))
    plain = model(frame, actions, model.init_state(3, (64, 64)))
    # Only window a of the memory is filled: the average equals the plain pass only if the
    # mirrored stream wrote window m(a) of the mirrored frame.
    torch.testing.assert_close(out.raw["logits"], plain.raw["logits"], rtol=0, atol=1e-6)
    assert torch.equal(out.state["mirrored.memory"].flip(-1), plain.state["memory"])
    plain_q = model.policy_network(model.observe(plain))
    assert not torch.allclose(plain_q, plain_q[:, grid.mirror(torch.arange(9))])
    torch.testing.assert_close(wrapper.policy_network(wrapper.observe(out)), plain_q, rtol=0, atol=1e-6)
    assert wrapper.action_space == model.action_space == Discrete(9, layout=(3, 3))


def test_average_raw_rules():
    a = {"x": torch.tensor([1.0, 3.0]), "idx": torch.tensor([1, 2]), "name": "a", "nested": [torch.tensor(2.0)]}
    b = {"x": torch.tensor([3.0, 5.0]), "idx": torch.tensor([7, 8]), "name": "b", "nested": [torch.tensor(4.0)]}
    avg = average_raw(a, b)
    assert avg["x"].tolist() == [2.0, 4.0]
    assert avg["idx"].tolist() == [1, 2] and avg["name"] == "a"
    assert avg["nested"][0].item() == 3.0


# ------------------------------------------------------------------------------- resolution
@torch.no_grad()
def test_resolution_runs_downscaled_and_maps_predictions_back():
    model = ToySegmenter().eval()
    frame = _frames(1, batch=2)[0]
    wrapper = Resolution(model, 0.25).eval()
    assert wrapper.scaled_size(SIZE) == (16, 16)
    out = wrapper(frame, _zeros(2), wrapper.init_state(2, SIZE))
    small = F.interpolate(frame, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    expected = _single_frame_predictions(model, small)
    assert out.state["memory"].shape == (2, 1, 16, 16)
    for got, low in zip(out.predictions, expected):
        assert torch.equal(got["boxes"], low["boxes"] * 2)
        assert torch.equal(got["labels"], low["labels"])
        # Nearest upsampling: every low-resolution pixel becomes a 2x2 block.
        assert torch.equal(got["mask"], low["mask"].repeat_interleave(2, 0).repeat_interleave(2, 1))
        assert got["scores"].shape == SIZE and got["scores"].dtype == torch.float32
        torch.testing.assert_close(got["scores"][1::2, 1::2][:-1, :-1], (
            0.75 * 0.75 * low["scores"][:-1, :-1] + 0.25 * 0.75 * (low["scores"][1:, :-1] + low["scores"][:-1, 1:])
            + 0.25 * 0.25 * low["scores"][1:, 1:]
        ))


def test_resolution_loss_uses_downscaled_targets():
    model = ToySegmenter().train()
    wrapper = Resolution(model, 0.25).train()
    frame = _frames(1, batch=1)[0]
    mask = torch.zeros(SIZE, dtype=torch.bool)
    mask[4:12, 8:24] = True
    out = wrapper(frame, _zeros(1), wrapper.init_state(1, SIZE))
    expected = model.loss(StepOutput(out.raw["scaled"], out.state), [{"mask": mask[::2, ::2]}])
    torch.testing.assert_close(wrapper.loss(out, [{"mask": mask}])["mask"], expected["mask"])


def test_resolution_rejects_sizes_off_the_grid():
    wrapper = Resolution(ToySegmenter(), 0.3)  # 32 * sqrt(0.3) = 17.5 -> 18, not a multiple of 8
    with pytest.raises(ValueError, match="32x32 frames to 18x18"):
        wrapper.init_state(1, SIZE)
    with pytest.raises(ValueError, match="48x48 frames to 24x24"):
        Resolution(ToySegmenter(WindowGrid(1, 1, align=16)), 0.25).init_state(1, (48, 48))


# ------------------------------------------------------------------------------- all
@pytest.mark.parametrize(
    "build",
    [
        lambda m: KeyframeInterval(m, 2),
        lambda m: KeyframeDelay(m, 3, 2),
        lambda m: Flip(m),
        lambda m: Resolution(m, 0.25),
    ],
    ids=["interval", "delay", "flip", "resolution"],
)
@torch.no_grad()
def test_streams_are_independent(build):
    frames = _frames(5, batch=2)
    together = _run(build(ToySegmenter().eval()), frames)
    for stream in range(2):
        alone = _run(build(ToySegmenter().eval()), [f[stream : stream + 1] for f in frames])
        for t in range(5):
            _assert_predictions_close(together[t].predictions[stream : stream + 1], alone[t].predictions)


@torch.no_grad()
def test_delay_refuses_a_state_whose_computation_is_not_in_flight():
    wrapper = KeyframeDelay(ToySegmenter().eval(), 4, 2).eval()
    frames = _frames(1, batch=1)[0]
    first = wrapper(frames, _zeros(1), wrapper.init_state(1, SIZE)).state
    wrapper(frames, _zeros(1), wrapper.init_state(1, SIZE))  # another batch takes the wrapper over
    with pytest.raises(RuntimeError, match="not in flight"):
        wrapper(frames, _zeros(1), first)


@torch.no_grad()
def test_flip_of_resolution_composes():
    model = ToySegmenter(echo=True).eval()
    frames = _frames(2, batch=2)
    flipped = _run(Flip(Resolution(model, 0.25)), frames)
    plain = _run(Resolution(model, 0.25), frames)
    for a, b in zip(flipped, plain):
        assert a.predictions[0]["mask"].shape == SIZE
        _assert_predictions_close(a.predictions, b.predictions)


# ------------------------------------------------------------------ delay: layers split by rows
@pytest.mark.parametrize("stride, dilation", [(1, 1), (2, 1), (1, 2)])
@torch.no_grad()
def test_layer_stages_in_row_bands_equal_the_layer_with_the_same_flops(stride, dilation):
    torch.manual_seed(0)
    layer = Conv2dNormActivation(3, 5, kernel_size=3, stride=stride, dilation=dilation).eval()
    x = torch.randn(2, 3, 11, 9, dtype=torch.float64)
    layer = layer.double()
    whole = layer(x)
    stages = layer_stages(layer, x)
    with row_bands(3):
        yielded = [next(stages)]
    yielded += list(itertools.takewhile(lambda v: v is not None, _drain(stages)))
    assert yielded == [ROW_BAND, ROW_BAND]
    torch.testing.assert_close(_drain.result, whole, rtol=0, atol=1e-12)

    def banded():
        with row_bands(3):
            return run_stages(layer_stages(layer, x))

    assert count_flops(banded) == count_flops(lambda: layer(x))


@pytest.mark.parametrize("training, pieces", [(False, 11 * 3), (True, 11)])
@torch.no_grad()
def test_layer_stages_split_output_channels_when_asked_for_more_bands_than_rows(training, pieces):
    # 11 output rows and 25 bands asked: each row in ceil(25 / 11) = 3 groups of the 5 output channels,
    # exact as BatchNorm in eval mode is per channel; in training mode its batch statistics are not, so rows only.
    torch.manual_seed(0)
    layer = Conv2dNormActivation(3, 5, kernel_size=1).double().train(training)
    randomize_batchnorm(layer)
    x = torch.randn(2, 3, 11, 9, dtype=torch.float64)
    whole = layer(x)
    stages = layer_stages(layer, x)
    with row_bands(25):
        yielded = [next(stages)]
    yielded += list(itertools.takewhile(lambda v: v is not None, _drain(stages)))
    assert yielded == [ROW_BAND] * (pieces - 1)
    if not training:
        torch.testing.assert_close(_drain.result, whole, rtol=0, atol=1e-12)

    def banded():
        with row_bands(25):
            return run_stages(layer_stages(layer, x))

    assert count_flops(banded) == count_flops(lambda: layer(x))


@pytest.mark.parametrize("bands", [1, 3, 25])  # 25: rows and groups of output channels
@torch.no_grad()
def test_layer_stages_with_a_weight_slice_and_shift_equal_the_layer_on_a_concatenation(bands):
    # The segmenter's projection: the layer on cat(x, y) with y the same at every pixel.
    torch.manual_seed(0)
    layer = Conv2dNormActivation(7, 5, kernel_size=3).eval().double()
    x, y = torch.randn(2, 4, 11, 9, dtype=torch.float64), torch.randn(2, 3, 1, 1, dtype=torch.float64)
    local_weight, constant_weight = layer[0].weight.split([4, 3], dim=1)
    # Away from the border the constant part's 3x3 taps all see y; at the border zero padding cuts some,
    # so the comparison pads y's part as a 1x1 projection would see it: interior rows and columns only.
    whole = layer(torch.cat((x, y.expand(-1, -1, 11, 9)), dim=1))[..., 1:-1, 1:-1]
    shift = F.conv2d(y, constant_weight.sum(dim=(-2, -1), keepdim=True))
    with row_bands(bands):
        staged = run_stages(layer_stages(layer, x, weight=local_weight, shift=shift))
    torch.testing.assert_close(staged[..., 1:-1, 1:-1], whole, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="convolution layer"):
        run_stages(layer_stages(nn.Sequential(nn.ReLU()), x, shift=shift))


def _drain(stages):
    """Yield what ``stages`` yields until it returns; the result lands in ``_drain.result``."""
    while True:
        try:
            yield next(stages)
        except StopIteration as finished:
            _drain.result = finished.value
            return


@torch.no_grad()
def test_delay_splits_a_layer_above_the_budget_and_keeps_the_keyframe_result():
    torch.manual_seed(0)
    model = patchwork_segmenter((1, 1), width_mult=0.5).eval()
    size = (64, 64)
    frames = torch.rand(1, 3, *size)
    expected = model.forward_raw(frames, None, model.init_state(1, size)).raw["logits"]
    keyframe = count_flops(lambda: model.forward_raw(frames, None, model.init_state(1, size)))
    wrapper = KeyframeDelay(model, 16, 15).eval()
    state = wrapper.init_state(1, size)
    whole, _ = wrapper._measure(size, None, None)
    assert max(whole) > keyframe / 16  # one layer alone exceeds the per-frame budget
    flops, finished = [], None
    for t in range(16):
        def step():
            nonlocal state, finished
            out = wrapper(frames, None, state)
            state, finished = out.state, out.raw["finished"] or finished

        flops.append(count_flops(step))
    torch.testing.assert_close(finished.raw["logits"], expected, rtol=1e-5, atol=1e-6)
    # Every FLOP of the keyframe is counted once (its decoding aside), and no frame pays much
    # more than its share.
    decode = count_flops(lambda: model.predict(finished))
    assert sum(flops) == keyframe + decode
    assert max(flops) < 1.2 * keyframe / 16  # 64 px: 4 rows at stride 16 limit the bands
