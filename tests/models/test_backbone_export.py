"""Exporting a Patchwork model's MobileNetV2 backbone as torchvision weights (LFS's f0 from the single-frame model)."""

import pytest
import torch
from model_fixtures import randomize_batchnorm

from patchwork.models.builders import (
    looking_fast_slow_detector,
    mobilenet_v2,
    mobilenet_v2_backbone_state,
    patchwork_detector,
    patchwork_segmenter,
)
from patchwork.models.inference import fold_batchnorm

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def torchvision_weights(tmp_path):
    """A seeded, non-trivial torchvision-layout ``mobilenet_v2(0.5)`` state_dict and its file."""
    torch.manual_seed(0)
    model = randomize_batchnorm(mobilenet_v2(0.5))
    state = {k: v for k, v in model.state_dict().items() if k.startswith("features.")}
    path = tmp_path / "mobilenet_v2_0.5.pt"
    torch.save(model.state_dict(), path)
    return state, path


def _assert_equal(exported: dict, reference: dict) -> None:
    assert set(exported) == set(reference)
    for key, value in reference.items():
        assert torch.equal(exported[key], value), key


@pytest.mark.parametrize("grid, cells", [((1, 1), "all"), ((2, 1), "all"), ((2, 1), "input"), ((2, 1), "none")])
def test_export_gives_back_the_loaded_torchvision_tensors(torchvision_weights, grid, cells):
    state, path = torchvision_weights
    detector = patchwork_detector(grid=grid, width_mult=0.5, num_classes=3, cells=cells, weights=str(path))
    _assert_equal(mobilenet_v2_backbone_state(detector), state)


def test_lfs_f0_starts_from_the_exported_single_frame_backbone(torchvision_weights, tmp_path):
    _, path = torchvision_weights
    detector = patchwork_detector(grid=(1, 1), width_mult=0.5, num_classes=3, weights=str(path))
    exported = mobilenet_v2_backbone_state(detector)
    torch.save(exported, tmp_path / "f0.pt")
    lfs = looking_fast_slow_detector(3, (64, 64), width_f0=0.5, weights_f0=tmp_path / "f0.pt",
                                     state_channels=16, extra_channels=(16,) * 4)
    f0 = lfs.f0.features.state_dict()
    assert len(f0) == len([k for k in exported if not k.startswith("features.18.")])  # blocks 0..17
    for name, value in f0.items():
        assert torch.equal(value, detector.backbone.features.state_dict()[name]), name


def test_segmenter_backbone_without_final_layer_exports_blocks_0_to_17(torchvision_weights, tmp_path):
    state, path = torchvision_weights
    segmenter = patchwork_segmenter(grid=(1, 1), width_mult=0.5, weights=str(path), final_layer=False)
    exported = mobilenet_v2_backbone_state(segmenter)
    _assert_equal(exported, {k: v for k, v in state.items() if not k.startswith("features.18.")})


def test_export_refuses_folded_batchnorm_and_models_without_the_backbone():
    detector = patchwork_detector(grid=(1, 1), width_mult=0.5, num_classes=3).eval()
    with pytest.raises(ValueError, match="one to one"):
        mobilenet_v2_backbone_state(fold_batchnorm(detector))
    lfs = looking_fast_slow_detector(3, (64, 64), width_f0=0.5, state_channels=16, extra_channels=(16,) * 4)
    with pytest.raises(TypeError, match="no StatefulMobileNetV2"):
        mobilenet_v2_backbone_state(lfs)
