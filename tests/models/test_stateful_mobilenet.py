import pytest
import torch
import torchvision
from model_fixtures import randomize_batchnorm

from patchwork.models import StatefulMobileNetV2
from patchwork.nn import StreamState, WindowGrid


def _mobilenet(width: float = 1.0, seed: int = 0) -> torch.nn.Module:
    """A torchvision MobileNetV2 in eval mode with non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    return randomize_batchnorm(torchvision.models.mobilenet_v2(width_mult=width)).eval()


def _repeat_state(state: StreamState, batch: int) -> StreamState:
    return StreamState(
        {k: v.expand(batch, *v.shape[1:]).contiguous(memory_format=torch.channels_last) for k, v in state.items()}
    )


@torch.no_grad()
def test_single_frame_grid_equals_torchvision_features():
    tv = _mobilenet()
    net = StatefulMobileNetV2.from_torchvision(tv, WindowGrid(1, 1)).eval()
    frames = torch.randn(2, 3, 128, 128)
    state = net.init_state(2, (128, 128))
    out, state = net(frames, torch.zeros(2, dtype=torch.long), state)
    torch.testing.assert_close(out, tv.features(frames), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(net.memory(state, "output"), out)


def test_state_dict_keys_are_torchvision_keys():
    tv = _mobilenet(0.5)
    net = StatefulMobileNetV2.from_torchvision(tv, WindowGrid(4, 2))
    assert set(net.state_dict()) == {f"features.{k}" for k in tv.features.state_dict()}
    net.load_state_dict({f"features.{k}": v for k, v in tv.features.state_dict().items()})


@pytest.mark.parametrize("width", [1.0, 0.5])
@pytest.mark.parametrize("size", [256, 384])
@torch.no_grad()
def test_window_pass_after_full_frame_pass_is_exactly_the_crop(width, size):
    tv = _mobilenet(width)
    frame = torch.randn(1, 3, size, size)
    reference = tv.features(frame)
    for slices, span in [(2, 1), (4, 2), (4, 1)]:
        grid = WindowGrid(slices, span)
        net = StatefulMobileNetV2.from_torchvision(tv, grid).eval()
        full, state = net.forward_full(frame, net.init_state(1, (size, size)))
        torch.testing.assert_close(full, reference, rtol=1e-4, atol=1e-4)
        # Every window at once: stream k looks at window k of the same remembered frame.
        windows = torch.arange(grid.num_windows)
        frames = frame.expand(grid.num_windows, -1, -1, -1)
        out, _ = net(grid.crop(frames, windows), windows, _repeat_state(state, grid.num_windows))
        expected = grid.crop(reference.expand(grid.num_windows, -1, -1, -1), windows, stride=32)
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4, msg=f"{grid} at {size}, width {width}")


@torch.no_grad()
def test_without_cells_the_window_loses_context():
    tv = _mobilenet()
    grid = WindowGrid(4, 2)
    frame = torch.randn(1, 3, 256, 256)
    reference = tv.features(frame)
    net = StatefulMobileNetV2.from_torchvision(tv, grid, cells="none").eval()
    _, state = net.forward_full(frame, net.init_state(1, (256, 256)))
    windows = torch.tensor([4])
    out, _ = net(grid.crop(frame, windows), windows, state)
    error = (out - grid.crop(reference, windows, stride=32)).abs().max()
    assert error > 1e-2 * reference.abs().max()
    # ...and is exactly the network run on the crop as a separate image.
    torch.testing.assert_close(out, tv.features(grid.crop(frame, windows)), rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_single_input_cell_recovers_context_exactly_with_full_context():
    tv = _mobilenet()
    grid = WindowGrid(4, 2)
    frame = torch.randn(1, 3, 256, 256)
    reference = tv.features(frame)
    for context in (None, 256):
        net = StatefulMobileNetV2.from_torchvision(tv, grid, cells="input", input_context=context).eval()
        _, state = net.forward_full(frame, net.init_state(1, (256, 256)))
        windows = torch.tensor([5])
        out, _ = net(grid.crop(frame, windows), windows, state)
        torch.testing.assert_close(out, grid.crop(reference, windows, stride=32), rtol=1e-4, atol=1e-4)
    partial = StatefulMobileNetV2.from_torchvision(tv, grid, cells="input", input_context=32).eval()
    _, state = partial.forward_full(frame, partial.init_state(1, (256, 256)))
    out, _ = partial(grid.crop(frame, windows), windows, state)
    assert out.shape == (1, 1280, 4, 4)


@torch.no_grad()
def test_streams_in_a_batch_equal_separate_runs():
    tv = _mobilenet(0.5)
    grid = WindowGrid(4, 1)
    net = StatefulMobileNetV2.from_torchvision(tv, grid).eval()
    torch.manual_seed(1)
    video = torch.randn(3, 2, 3, 128, 128)  # (T, B, 3, H, W)
    actions = torch.tensor([[0, 15], [5, 5], [10, 3]])
    state = net.init_state(2, (128, 128))
    batched = []
    for t in range(3):
        out, state = net(grid.crop(video[t], actions[t]), actions[t], state)
        batched.append(out)
    for b in range(2):
        single = net.init_state(1, (128, 128))
        for t in range(3):
            out, single = net(grid.crop(video[t, b : b + 1], actions[t, b : b + 1]), actions[t, b : b + 1], single)
            torch.testing.assert_close(out[0], batched[t][b], rtol=1e-5, atol=1e-5)
        for name in single:
            torch.testing.assert_close(single[name][0], state[name][b], rtol=1e-5, atol=1e-5)


def test_gradients_reach_weights_and_earlier_frames_through_the_cells():
    tv = _mobilenet(0.5)
    grid = WindowGrid(2, 1)
    net = StatefulMobileNetV2.from_torchvision(tv, grid).train()
    first = torch.randn(2, 3, 64, 64, requires_grad=True)
    second = torch.randn(2, 3, 64, 64)
    state = net.init_state(2, (64, 64))
    w0, w1 = torch.tensor([0, 1]), torch.tensor([1, 0])
    _, state = net(grid.crop(first, w0), w0, state)
    out, state = net(grid.crop(second, w1), w1, state)
    out.sum().backward()
    # The second window's context came from the first frame's features in the memories.
    assert first.grad is not None and first.grad.abs().sum() > 0
    depthwise = net.features[2].conv[1][0]
    assert depthwise.weight.grad is not None and depthwise.weight.grad.abs().sum() > 0


@torch.no_grad()
def test_reset_one_stream_starts_a_new_video():
    tv = _mobilenet(0.5)
    grid = WindowGrid(2, 1)
    net = StatefulMobileNetV2.from_torchvision(tv, grid).eval()
    frames = torch.randn(2, 3, 64, 64)
    _, state = net.forward_full(frames, net.init_state(2, (64, 64)))
    state = state.reset(torch.tensor([True, False]))
    fresh = net.init_state(1, (64, 64))
    for name in state:
        assert torch.equal(state[name][0], fresh[name][0])
        assert state[name][1].abs().sum() > 0


def test_bad_sizes_are_rejected_with_the_sizes_named():
    net = StatefulMobileNetV2.from_torchvision(_mobilenet(0.5), WindowGrid(4, 2))
    with pytest.raises(ValueError, match="200x256"):
        net.init_state(1, (200, 256))
    state = net.init_state(1, (128, 128))
    with pytest.raises(ValueError, match="64x64 windows"):
        net(torch.zeros(1, 3, 32, 32), torch.tensor([0]), state)
    with pytest.raises(ValueError, match="cells"):
        StatefulMobileNetV2.from_torchvision(_mobilenet(0.5), WindowGrid(4, 2), cells="some")


@torch.no_grad()
def test_restored_memories_are_readable_by_name():
    tv = _mobilenet(0.5)
    net = StatefulMobileNetV2.from_torchvision(tv, WindowGrid(4, 2)).eval()
    frames = torch.randn(1, 3, 128, 128)
    feats, state = net.forward_full(frames, net.init_state(1, (128, 128)))
    names = [name for name, _ in net.named_memories()]
    assert names[0] == "features.0.0" and names[-1] == "output" and len(names) == 1 + 17 + 1
    torch.testing.assert_close(net.memory(state, "output"), feats)
    assert net.memory(state, "features.0.0").shape == (1, 3, 128, 128)
    torch.testing.assert_close(net.memory(state, "features.0.0"), frames)
    with pytest.raises(KeyError, match="available"):
        net.memory(state, "features.99")
    out, taps, _ = net.forward_with_taps(frames[..., :64, :64], torch.tensor([0]), state, taps=["features.14.conv.0"])
    assert taps["features.14.conv.0"].shape == (1, 288, 4, 4)


@torch.no_grad()
def test_folding_batchnorm_changes_no_output():
    from patchwork.models.inference import fold_batchnorm

    tv = _mobilenet(0.5)
    grid = WindowGrid(2, 1)
    net = StatefulMobileNetV2.from_torchvision(tv, grid).eval()
    folded = fold_batchnorm(StatefulMobileNetV2.from_torchvision(tv, grid).eval())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    frames = torch.randn(2, 3, 128, 128)
    windows = torch.tensor([1, 2])
    a, _ = net(grid.crop(frames, windows), windows, net.init_state(2, (128, 128)))
    b, _ = folded(grid.crop(frames, windows), windows, folded.init_state(2, (128, 128)))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="eval"):
        fold_batchnorm(net.train())


@torch.no_grad()
def test_inference_form_changes_no_output_and_leaves_no_small_1x1_conv_on_the_slow_path():
    from torch.profiler import ProfilerActivity, profile

    from patchwork.models.inference import inference_form, pointwise_as_matmul
    from patchwork.nn.pointwise import PointwiseConv2d

    tv = _mobilenet(0.5)
    grid = WindowGrid(2, 1)
    net = StatefulMobileNetV2.from_torchvision(tv, grid).eval()
    fast = inference_form(StatefulMobileNetV2.from_torchvision(tv, grid).eval())
    assert pointwise_as_matmul(StatefulMobileNetV2.from_torchvision(tv, grid)).state_dict().keys() == net.state_dict().keys()
    assert all(isinstance(m, PointwiseConv2d) for m in fast.modules() if type(m) is torch.nn.Conv2d and m.kernel_size == (1, 1))
    # 256 px: the first (3x3, 3-channel) conv's input is large enough that PyTorch picks oneDNN
    # for it itself; on tinier crops it picks the native kernel, which is faster there.
    frames = torch.randn(1, 3, 256, 256)
    windows = torch.tensor([3])
    a, _ = net(grid.crop(frames, windows), windows, net.init_state(1, (256, 256)))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        b, _ = fast(grid.crop(frames, windows), windows, fast.init_state(1, (256, 256)))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert b.is_contiguous(memory_format=torch.channels_last)
    assert not [e.name for e in prof.events() if e.name == "aten::_slow_conv2d_forward"]
