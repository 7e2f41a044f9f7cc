import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from model_fixtures import randomize_batchnorm

from patchwork.nn.flops import count_flops
from patchwork.models.attention import AttentionQNetwork
from patchwork.models.segmenter import (
    MASK_LOGITS,
    DeepLabLightHead,
    PatchworkSegmenter,
    mobilenet_v2_os16_features,
    os16_features,
)
from patchwork.models.stateful_mobilenet import StatefulMobileNetV2
from patchwork.models.inference import inference_form
from patchwork.models.streaming import IMAGENET_MEAN, IMAGENET_STD, StepOutput
from patchwork.nn import StreamState, WindowGrid
from patchwork.nn.pointwise import PointwiseConv2d

# Supplementary Tab. 5, MFLOPs at 384x384, width 1.0.
PAPER_MFLOPS = {(1, 1): 3307, (4, 2): 841, (4, 1): 221}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _parts(width: float = 0.5, seed: int = 0, channels: int = 64) -> tuple[torch.nn.Sequential, DeepLabLightHead]:
    torch.manual_seed(seed)
    features = mobilenet_v2_os16_features(width)
    head = DeepLabLightHead(features[-1].out_channels, channels=channels)
    randomize_batchnorm(features)
    randomize_batchnorm(head)
    return features, head


def _segmenter(
    features: torch.nn.Sequential, head: DeepLabLightHead, grid: WindowGrid, attention: bool = False
) -> PatchworkSegmenter:
    """A segmenter with copies of ``features`` and ``head`` (same weights, own modules)."""
    backbone = StatefulMobileNetV2(copy.deepcopy(features), grid)
    q_net = AttentionQNetwork(backbone.out_channels, grid.num_windows, grid.slices) if attention else None
    return PatchworkSegmenter(backbone, copy.deepcopy(head), q_net).eval()


def _repeat_state(state: StreamState, batch: int) -> StreamState:
    """Stream 0's state copied to ``batch`` streams (memories stay channels-last)."""
    repeated = StreamState()
    for name, value in state.items():
        value = value[:1].expand(batch, *value.shape[1:])
        fmt = torch.channels_last if value.dim() == 4 else torch.contiguous_format
        repeated[name] = value.contiguous(memory_format=fmt)
    return repeated


def _normalize(frames: torch.Tensor) -> torch.Tensor:
    return (frames - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


# --------------------------------------------------------------------------- backbone
def test_os16_features_keeps_torchvision_weights_and_dilates_the_last_blocks():
    torch.manual_seed(0)
    tv = torchvision.models.mobilenet_v2(width_mult=0.5).eval()
    features = os16_features(tv, final_layer=False).eval()
    # Parameters carry over under torchvision's names, minus the dropped 1x1 conv to 1280.
    expected = {k: v for k, v in tv.features.state_dict().items() if not k.startswith("18.")}
    kept = os16_features(tv)
    assert kept.state_dict().keys() == tv.features.state_dict().keys()  # the default keeps it (Tab. 3)
    assert features.state_dict().keys() == expected.keys()
    assert all(torch.equal(features.state_dict()[k], v) for k, v in expected.items())
    depthwise = [features[i].conv[1][0] for i in range(13, 18)]
    assert [(c.stride, c.dilation, c.padding) for c in depthwise] == [((1, 1), (1, 1), (1, 1))] * 2 + [
        ((1, 1), (2, 2), (2, 2))
    ] * 3
    assert tv.features[14].conv[1][0].stride == (2, 2)  # the caller's model is untouched
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out = features(x)
        assert out.shape == (1, 160, 4, 6)  # 320 * 0.5 channels at stride 16
        # Everything before the converted block is torchvision's network unchanged.
        torch.testing.assert_close(features[:14](x), tv.features[:14](x))
    backbone = StatefulMobileNetV2(features, WindowGrid(4, 2))
    assert backbone.out_stride == 16 and backbone.out_channels == 160


# ------------------------------------------------------------------------------- head
@torch.no_grad()
def test_head_pools_the_frame_it_is_given():
    _, head = _parts()
    head.eval()
    frame = torch.randn(1, head.in_channels, 8, 8)
    window = frame[..., 2:6, 4:8]
    full = head(frame)
    torch.testing.assert_close(head(window, frame), full[..., 2:6, 4:8])
    # Pooling only the window would be a different (context-blind) answer.
    assert (head(window) - full[..., 2:6, 4:8]).abs().max() > 1e-3


@torch.no_grad()
def test_head_projects_the_pooled_half_once_as_the_concatenated_projection_would():
    _, head = _parts(channels=16)
    torch.manual_seed(1)
    randomize_batchnorm(head)
    torch.nn.init.normal_(head.project[0].weight)
    head.eval()
    x = torch.randn(2, head.in_channels, 6, 5)
    local = head.branch(x)
    pooled = head.image_pool(x.mean(dim=(-2, -1), keepdim=True)).expand_as(local)
    reference = head.classifier(head.project(torch.cat((local, pooled), dim=1)))  # TF DeepLab's concat_projection
    torch.testing.assert_close(head(x), reference, rtol=1e-4, atol=1e-5)
    deployed = inference_form(copy.deepcopy(head))  # BatchNorm folded, the 1x1 convs as matmuls
    assert isinstance(deployed.project[0], PointwiseConv2d)
    torch.testing.assert_close(deployed(x), reference, rtol=1e-4, atol=1e-5)
    # The parameters are the concatenated layer's; half its multiply-adds per pixel, the other half once per image.
    assert tuple(head.project[0].weight.shape) == (16, 32, 1, 1)
    assert count_flops(lambda: head(x)) == count_flops(lambda: head.branch(x)) + 2 * 2 * (
        head.in_channels * 16 + 16 * 16 * (6 * 5 + 1) + 16 * 1 * 6 * 5)


# -------------------------------------------------------------------------- segmenter
@pytest.mark.parametrize("slices, span, side", [(2, 1, 128), (4, 2, 256), (4, 1, 128)])
@torch.no_grad()
def test_window_step_after_full_pass_equals_full_frame_model(slices, span, side):
    features, head = _parts()
    size = (side, side)
    frame = torch.rand(1, 3, *size)
    single = _segmenter(features, head, WindowGrid(1, 1))
    reference = single(frame, torch.zeros(1, dtype=torch.long), single.init_state(1, size)).raw
    grid = WindowGrid(slices, span)
    model = _segmenter(features, head, grid, attention=True)
    full = model(frame, None, model.init_state(1, size))  # a full-frame pass fills every memory
    torch.testing.assert_close(full.raw["logits"], reference["logits"], rtol=1e-4, atol=1e-4)
    # Every window at once: stream k looks at window k of the remembered frame.
    n = grid.num_windows
    windows = torch.arange(n)
    out = model(frame.expand(n, -1, -1, -1), windows, _repeat_state(full.state, n))
    expected_window = grid.crop(reference["window_logits"].expand(n, -1, -1, -1), windows, stride=16)
    assert out.raw["window_logits"].shape == (n, 1, side // 16 * span // slices, side // 16 * span // slices)
    torch.testing.assert_close(out.raw["window_logits"], expected_window, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.raw["logits"], reference["logits"].expand(n, -1, -1, -1), rtol=1e-4, atol=1e-4)
    assert model.policy_network(model.observe(out)).shape == (n, n)
    assert out.predictions[0]["mask"].shape == size and out.predictions[0]["mask"].dtype == torch.bool
    empty = model.empty_prediction(size, "cpu")
    assert empty["mask"].shape == size and not empty["mask"].any() and empty["scores"].sum() == 0


@torch.no_grad()
def test_single_frame_model_equals_stateless_twin():
    features, head = _parts()
    model = _segmenter(features, head, WindowGrid(1, 1))
    features.eval(), head.eval()
    torch.manual_seed(1)
    video = torch.rand(2, 2, 3, 64, 96)  # (T, B, 3, H, W)
    state = model.init_state(2, (64, 96))
    for frames in video:
        out = model(frames, torch.zeros(2, dtype=torch.long), state)
        state = out.state
        stride16 = head(features(_normalize(frames)))
        expected = F.interpolate(stride16, size=(64, 96), mode="bilinear", align_corners=False)
        torch.testing.assert_close(out.raw["window_logits"], stride16, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(out.raw["logits"], expected, rtol=1e-4, atol=1e-4)
        scores = torch.sigmoid(expected[:, 0])
        for b, prediction in enumerate(out.predictions):
            torch.testing.assert_close(prediction["scores"], scores[b], rtol=1e-4, atol=1e-4)
            confident = (scores[b] - 0.5).abs() > 1e-3
            assert torch.equal(prediction["mask"][confident], (scores[b] > 0.5)[confident])
    assert model.observe(out) is None and model.action_space is None


def test_single_frame_model_overfits_a_tiny_batch():
    torch.manual_seed(0)
    model = _segmenter(*_parts(width=0.35), WindowGrid(1, 1)).train()
    frames = torch.rand(2, 3, 64, 64)
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, 16:48, 16:48] = True  # on the stride-16 cells, so bilinear logits can fit them
    masks[1, 0:32, 32:64] = True
    targets = [{"mask": m} for m in masks]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        out = model(frames, torch.zeros(2, dtype=torch.long), model.init_state(2, (64, 64)))
        loss = model.loss(out, targets)["loss_mask"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, losses[::10]


@torch.no_grad()
def test_streams_in_a_batch_equal_separate_runs():
    grid = WindowGrid(4, 1)
    model = _segmenter(*_parts(), grid, attention=True)
    torch.manual_seed(1)
    video = torch.rand(3, 2, 3, 128, 128)  # (T, B, 3, H, W)
    actions = torch.tensor([[0, 15], [5, 5], [10, 3]])
    state = model.init_state(2, (128, 128))
    batched, q_values = [], []
    for t in range(3):
        batched.append(model(video[t], actions[t], state))
        q_values.append(model.policy_network(model.observe(batched[-1])))  # before the next step updates the state
        state = batched[-1].state
    for b in range(2):
        single = model.init_state(1, (128, 128))
        for t in range(3):
            out = model(video[t, b : b + 1], actions[t, b : b + 1], single)
            single = out.state
            for key in ("logits", "window_logits"):
                torch.testing.assert_close(out.raw[key][0], batched[t].raw[key][b], rtol=1e-5, atol=1e-5)
            q = model.policy_network(model.observe(out))
            torch.testing.assert_close(q[0], q_values[t][b], rtol=1e-5, atol=1e-5)
        for name in single:
            torch.testing.assert_close(single[name][0], state[name][b], rtol=1e-5, atol=1e-5)
    # The mask memory keeps each window's logits where that window lies (stride 16: 2x2 cells).
    logits_memory = state[MASK_LOGITS]
    torch.testing.assert_close(logits_memory[1, :, 0:2, 6:8], batched[2].raw["window_logits"][1])  # window 3 at t=2
    torch.testing.assert_close(logits_memory[1, :, 2:4, 2:4], batched[1].raw["window_logits"][1])  # window 5 at t=1
    torch.testing.assert_close(logits_memory[0, :, 4:6, 4:6], batched[2].raw["window_logits"][0])  # window 10 at t=2
    assert logits_memory[0, :, 6:8, 6:8].abs().sum() == 0  # never looked at: still empty


def test_memory_writes_are_in_place_without_autograd_and_functional_with_it():
    grid = WindowGrid(2, 1)
    model = _segmenter(*_parts(), grid)
    frames = torch.rand(2, 3, 64, 64)
    actions = torch.tensor([0, 3])
    state = model.init_state(2, (64, 64))
    before = state[MASK_LOGITS].clone()
    with torch.enable_grad():
        out = model(frames, actions, state)
    assert torch.equal(state[MASK_LOGITS], before)  # the old state is untouched under autograd
    assert out.raw["window_logits"].requires_grad and out.state[MASK_LOGITS].requires_grad
    with torch.no_grad():
        pointer = state[MASK_LOGITS].data_ptr()
        out = model(frames, actions, state)
    assert out.state[MASK_LOGITS].data_ptr() == pointer
    assert out.raw["logits"].data_ptr() != pointer  # predictions never alias the memory


@torch.no_grad()
def test_step_stages_yield_between_blocks_and_head_layers():
    grid = WindowGrid(4, 2)
    model = _segmenter(*_parts(), grid)
    frames = torch.rand(1, 3, 128, 128)
    actions = torch.tensor([4])
    stages = model.step_stages(frames, actions, model.init_state(1, (128, 128)))
    yields = 0
    while True:
        try:
            next(stages)
            yields += 1
        except StopIteration as finished:
            staged = finished.value
            break
    # One yield per layer of every backbone block (InvertedResidual children), 3 head layers.
    layers = sum(len(block.conv) if hasattr(block, "conv") else 1 for block in model.backbone.features)
    assert yields == layers + 3
    direct = model.forward_raw(frames, actions, model.init_state(1, (128, 128)))
    torch.testing.assert_close(staged.raw["logits"], direct.raw["logits"])
    full_pass = model.step_stages(frames, None, model.init_state(1, (128, 128)))
    assert sum(1 for _ in full_pass) == layers + 3


@torch.no_grad()
def test_mirror_raw_is_an_involution_and_maps_windows_to_mirrored_windows():
    features, head = _parts()
    grid = WindowGrid(4, 2)
    model = _segmenter(features, head, grid)
    frame = torch.rand(1, 3, 128, 128)
    mirrored = frame.flip(-1)
    full = model(mirrored, None, model.init_state(1, (128, 128)))
    windows = torch.arange(9)
    out = model(mirrored.expand(9, -1, -1, -1), windows, _repeat_state(full.state, 9))
    back = model.mirror_raw(out.raw)
    for key in ("logits", "window_logits"):
        assert torch.equal(model.mirror_raw(back)[key], out.raw[key])
    # Window (i, j) of the mirrored frame is window (i, 2 - j) of the original.
    original_windows = torch.tensor([2, 1, 0, 5, 4, 3, 8, 7, 6])
    stride16 = model.mirror_raw(full.raw)["window_logits"].expand(9, -1, -1, -1)
    torch.testing.assert_close(back["window_logits"], grid.crop(stride16, original_windows, stride=16))
    # Flipping commutes with the bilinear upsampling: mapped-back logits are the
    # upsampled mapped-back stride-16 logits, so predictions agree with the memory.
    upsampled = F.interpolate(stride16[:1], size=(128, 128), mode="bilinear", align_corners=False)
    torch.testing.assert_close(back["logits"], upsampled.expand(9, -1, -1, -1), rtol=1e-5, atol=1e-5)
    scores = model.predict(StepOutput(back, out.state))[0]["scores"]
    assert torch.equal(scores, torch.sigmoid(out.raw["logits"][0, 0]).flip(-1))


@torch.no_grad()
def test_single_frame_mirrored_pass_mapped_back_is_the_twin_on_the_mirrored_frame():
    # MobileNetV2 is not mirror-equivariant (asymmetric kernels, PyTorch's stride-2
    # padding), which is why the flip baseline helps; what must hold is that the mapped
    # back raw is the stateless network's output on the mirrored frame, flipped.
    features, head = _parts()
    model = _segmenter(features, head, WindowGrid(1, 1))
    features.eval(), head.eval()
    frame = torch.rand(1, 3, 64, 64)
    out = model(frame.flip(-1), torch.zeros(1, dtype=torch.long), model.init_state(1, (64, 64)))
    back = model.mirror_raw(out.raw)
    twin = head(features(_normalize(frame.flip(-1)))).flip(-1)
    torch.testing.assert_close(back["window_logits"], twin, rtol=1e-4, atol=1e-4)
    expected = F.interpolate(twin, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(back["logits"], expected, rtol=1e-4, atol=1e-4)


def test_loss_is_per_pixel_binary_cross_entropy_over_the_full_frame():
    model = _segmenter(*_parts(), WindowGrid(2, 1))
    logits = torch.tensor([[[[0.0, 2.0], [-1.0, 3.0]]]])
    masks = torch.tensor([[True, False], [False, True]])
    loss = model.loss(StepOutput({"logits": logits, "window_logits": logits}, StreamState()), [{"mask": masks}])
    # -log(sigmoid(0)), -log(1 - sigmoid(2)), -log(1 - sigmoid(-1)), -log(sigmoid(3)), averaged
    p = torch.sigmoid(torch.tensor([0.0, 2.0, -1.0, 3.0]))
    expected = -(p[0].log() + (1 - p[1]).log() + (1 - p[2]).log() + p[3].log()) / 4
    torch.testing.assert_close(loss["loss_mask"], expected)
    with pytest.raises(ValueError, match="do not match"):
        model.loss(StepOutput({"logits": logits}, StreamState()), [{"mask": masks[:1]}])


def test_mismatched_parts_are_rejected():
    features, head = _parts()
    backbone = StatefulMobileNetV2(copy.deepcopy(features), WindowGrid(2, 1))
    with pytest.raises(ValueError, match="channels"):
        PatchworkSegmenter(backbone, DeepLabLightHead(320))
    with pytest.raises(ValueError, match="binary"):
        PatchworkSegmenter(backbone, DeepLabLightHead(backbone.out_channels, num_classes=2))


# ------------------------------------------------------------------------------ cost
def segmenter_mflops(
    grid: WindowGrid, width: float = 1.0, image_size: tuple[int, int] = (384, 384), attention: bool = True
) -> float:
    """MFLOPs (2 x multiply-adds) of one step of the segmenter, attention included where it runs."""
    torch.manual_seed(0)
    features = mobilenet_v2_os16_features(width)
    model = _segmenter(features, DeepLabLightHead(features[-1].out_channels), grid, attention=attention)
    with torch.no_grad():
        state = model.init_state(1, image_size)
        frames = torch.zeros(1, 3, *image_size)
        return count_flops(lambda: model(frames, torch.tensor([0]), state)) / 1e6


def test_window_cost_is_the_window_area_fraction_plus_the_pooling_branch():
    # Every layer but the image pooling's 1x1 conv and the projection's pooled half (both on one pooled
    # vector) scales with area. The pooling reads the final 1x1 layer's 1280 channels (torchvision's
    # features, unlike the builders', keep 1280 below width 1); the pooled half maps 256 to 256 channels.
    pooling = 2 * 1280 * 256 / 1e6 + 2 * 256 * 256 / 1e6
    single = segmenter_mflops(WindowGrid(1, 1), width=0.5, image_size=(128, 128))
    for slices, span in [(4, 2), (4, 1)]:
        window = segmenter_mflops(WindowGrid(slices, span), width=0.5, image_size=(128, 128), attention=False)
        area = (span / slices) ** 2
        assert abs((window - pooling) - area * (single - pooling)) < 1e-9 * single


def test_cost_at_384_is_within_20_percent_of_the_paper(capsys):
    measured = {key: segmenter_mflops(WindowGrid(*key)) for key in PAPER_MFLOPS}
    with capsys.disabled():
        for (slices, span), paper in PAPER_MFLOPS.items():
            name = "single-frame" if slices == span else f"M={slices}, N={span}"
            print(f"\nsegmenter {name}: {measured[slices, span]:.0f} MFLOPs (paper {paper})", end="")
    for key, paper in PAPER_MFLOPS.items():
        assert abs(measured[key] - paper) < 0.2 * paper, (key, measured[key], paper)
