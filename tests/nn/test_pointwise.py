import torch
from torch import nn

from patchwork.nn.pointwise import PointwiseConv2d, is_pointwise


def test_pointwise_conv_equals_the_conv_and_stays_channels_last():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, 1)
    pointwise = PointwiseConv2d.from_conv(conv)
    assert pointwise.weight is conv.weight and pointwise.bias is conv.bias
    assert pointwise.state_dict().keys() == conv.state_dict().keys()
    for x in (torch.randn(2, 6, 3, 5), torch.randn(2, 6, 3, 5).contiguous(memory_format=torch.channels_last)):
        out = pointwise(x)
        torch.testing.assert_close(out, conv(x), rtol=1e-5, atol=1e-5)
        assert out.is_contiguous(memory_format=torch.channels_last)


def test_only_plain_1x1_convs_are_pointwise():
    assert is_pointwise(nn.Conv2d(4, 4, 1)) and is_pointwise(nn.Conv2d(4, 4, 1, bias=False))
    assert not is_pointwise(nn.Conv2d(4, 4, 3, padding=1))
    assert not is_pointwise(nn.Conv2d(4, 4, 1, stride=2))
    assert not is_pointwise(nn.Conv2d(4, 4, 1, groups=2))
    assert not is_pointwise(nn.Conv2d(4, 4, 1, padding=1))
