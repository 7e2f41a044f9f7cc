import pytest
import torch
from torch import nn

from patchwork.models.blockcopy import PolicyNet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(("block_size", "image_size"), [(64, (384, 384)), (128, (512, 1024))])
def test_one_logit_per_block_at_scale_quarter_times_128_over_bs(block_size, image_size):
    net = PolicyNet(block_size, num_classes=2)
    frames, state = torch.randn(2, 3, *image_size), torch.randn(2, 3, *image_size)
    prev_output = torch.rand(2, 2, image_size[0] // 4, image_size[1] // 4)
    rows, cols = image_size[0] // block_size, image_size[1] // block_size
    prev_mask = torch.rand(2, rows, cols) > 0.5
    features = net.features(frames, state, prev_output, prev_mask)
    scale = 0.25 * 128 / block_size
    assert features.shape == (2, 3 + 3 + 2 + 1, int(image_size[0] * scale), int(image_size[1] * scale))
    logits = net(frames, state, prev_output, prev_mask)
    assert logits.shape == (2, rows, cols)


def test_state_parts_are_nearest_samples_and_shifted_maps():
    net = PolicyNet(64, num_classes=1)  # scale 1/2: nearest sampling keeps every other pixel
    frames, state = torch.randn(1, 3, 128, 192), torch.randn(1, 3, 128, 192)
    prev_output = torch.rand(1, 1, 128, 192)
    prev_mask = torch.tensor([[[True, False, False], [False, False, True]]])
    features = net.features(frames, state, prev_output, prev_mask)
    assert torch.equal(features[:, 0:3], frames[..., ::2, ::2])
    assert torch.equal(features[:, 3:6], state[..., ::2, ::2])
    assert torch.equal(features[:, 6], prev_output[:, 0, ::2, ::2] - 0.5)
    expected_mask = prev_mask.float().repeat_interleave(32, 1).repeat_interleave(32, 2) - 0.5
    assert torch.equal(features[:, 7], expected_mask)


def test_architecture_is_resnet8_and_three_strided_convs():
    net = PolicyNet(128, num_classes=1)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    # Stem, 2 convs per basic block (32, 64, 128), then 128, 128, 1.
    assert [c.out_channels for c in convs] == [32, 32, 32, 64, 64, 128, 128, 128, 128, 1]
    assert [c.stride[0] for c in convs] == [1, 1, 1, 2, 1, 2, 1, 2, 2, 2]
    assert convs[-1].bias is not None and all(c.bias is None for c in convs[:-1])


def test_gradients_reach_the_weights_but_not_the_inputs():
    net = PolicyNet(64, num_classes=1)
    frames = torch.randn(1, 3, 128, 128, requires_grad=True)
    logits = net(frames, frames, torch.rand(1, 1, 32, 32), torch.ones(1, 2, 2, dtype=torch.bool))
    logits.sum().backward()
    assert net.head[-1].weight.grad is not None and frames.grad is None


def test_wrong_sizes_are_refused():
    net = PolicyNet(64, num_classes=2)
    with pytest.raises(ValueError, match="64-pixel blocks"):
        net(torch.randn(1, 3, 100, 128), torch.randn(1, 3, 100, 128), torch.rand(1, 2, 8, 8), torch.ones(1, 1, 2))
    with pytest.raises(ValueError, match="expects 2"):
        net(torch.randn(1, 3, 128, 128), torch.randn(1, 3, 128, 128), torch.rand(1, 3, 8, 8), torch.ones(1, 2, 2))
