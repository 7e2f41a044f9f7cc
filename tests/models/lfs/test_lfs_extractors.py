"""LFS's two MobileNetV2 extractors: map sizes, channels, the removed stride, torchvision weights."""

import pytest
import torch
import torchvision

from patchwork.models import looking_fast_slow_detector
from patchwork.models.lfs import check_matching_maps, large_extractor, small_extractor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@torch.no_grad()
def test_paper_extractors_give_448_and_112_channels_on_10x10_at_320():
    f0 = large_extractor(torchvision.models.mobilenet_v2(width_mult=1.4)).eval()
    f1 = small_extractor(torchvision.models.mobilenet_v2(width_mult=0.35)).eval()
    frames = torch.rand(1, 3, 320, 320)
    assert f0(frames).shape == (1, 448, 10, 10)
    assert f1(frames).shape == (1, 112, 10, 10)
    assert (f0.out_channels, f1.out_channels) == (448, 112)
    assert check_matching_maps([f0, f1], (320, 320)) == (10, 10)
    assert f1.input_size((320, 320)) == (160, 160)


@pytest.mark.parametrize("size, expected", [((128, 128), (4, 4)), ((160, 160), (5, 5)), ((192, 256), (6, 8))])
@torch.no_grad()
def test_quick_sizes_match_and_the_predicted_map_size_is_the_real_one(size, expected):
    f0 = large_extractor(torchvision.models.mobilenet_v2(width_mult=0.5)).eval()
    f1 = small_extractor(torchvision.models.mobilenet_v2(width_mult=0.35)).eval()
    frames = torch.rand(1, 3, *size)
    assert f0(frames).shape[-2:] == f1(frames).shape[-2:] == expected
    assert check_matching_maps([f0, f1], size) == expected


def test_sizes_without_matching_maps_are_refused():
    f0 = large_extractor(torchvision.models.mobilenet_v2(width_mult=0.5))
    f1 = small_extractor(torchvision.models.mobilenet_v2(width_mult=0.35))
    # 321: f0 gives 11 x 11, f1 on the 160 x 160 resize 10 x 10.
    assert (f0.map_size((321, 321)), f1.map_size((321, 321))) == ((11, 11), (10, 10))
    with pytest.raises(ValueError, match="different sizes"):
        check_matching_maps([f0, f1], (321, 321))


def _strided_blocks(features) -> list[int]:
    """Indices of the blocks whose depthwise convolution has stride 2."""
    return [
        index for index, block in enumerate(features) if index > 0
        if next(m for m in block.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1).stride == (2, 2)
    ]


def test_only_the_first_160_channel_block_loses_its_stride():
    tv = torchvision.models.mobilenet_v2(width_mult=0.35)
    assert _strided_blocks(tv.features[:18]) == [2, 4, 7, 14]
    f1 = small_extractor(tv)
    assert _strided_blocks(f1.features) == [2, 4, 7]
    assert f1.features[14].conv[2].out_channels == 56  # 160 x 0.35, rounded to a multiple of 8
    assert len(f1.features) == 18  # the final 1x1 layer is dropped
    assert f1.features[14] is tv.features[14]  # torchvision's modules are reused, not copied


def test_builder_loads_local_torchvision_weights(tmp_path):
    torch.manual_seed(0)
    small = torchvision.models.mobilenet_v2(width_mult=0.35)
    large = torchvision.models.mobilenet_v2(width_mult=0.5)
    torch.save(small.state_dict(), tmp_path / "small.pth")
    torch.save(large.state_dict(), tmp_path / "large.pth")
    model = looking_fast_slow_detector(
        3, (128, 128), width_f0=0.5, weights_f0=tmp_path / "large.pth", weights_f1=tmp_path / "small.pth",
        state_channels=32, extra_channels=(32,) * 4,
    )
    for extractor, reference in ((model.f0, large), (model.f1, small)):
        for name, value in extractor.features.state_dict().items():
            assert torch.equal(value, reference.state_dict()[f"features.{name}"]), name
    with pytest.raises(FileNotFoundError):
        looking_fast_slow_detector(3, (128, 128), weights_f1=tmp_path / "missing.pth")


@torch.no_grad()
def test_quick_profile_removes_one_more_stride_from_each_for_8x8_maps_at_128():
    f0 = large_extractor(torchvision.models.mobilenet_v2(width_mult=0.5), removed_strides=1).eval()
    f1 = small_extractor(torchvision.models.mobilenet_v2(width_mult=0.35), removed_strides=2).eval()
    assert _strided_blocks(f0.features) == [2, 4, 7]
    assert _strided_blocks(f1.features) == [2, 4]
    frames = torch.rand(1, 3, 128, 128)
    assert f0(frames).shape[-2:] == f1(frames).shape[-2:] == (8, 8)
    assert check_matching_maps([f0, f1], (128, 128)) == (8, 8)


def test_removing_more_strides_than_there_are_is_refused():
    # The stem's stride stays; MobileNetV2 has four stride-2 blocks after it.
    with pytest.raises(ValueError, match=r"removed_strides must be in \[0, 4\]"):
        large_extractor(torchvision.models.mobilenet_v2(width_mult=0.35), removed_strides=5)
