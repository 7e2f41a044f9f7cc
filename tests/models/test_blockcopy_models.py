"""BlockCopy on whole task networks: torchvision's LR-ASPP and the project's single-frame detector and segmenter."""

import pytest
import torch
import torchvision
from model_fixtures import randomize_batchnorm

from patchwork.models import BlockCopyNetwork, patchwork_detector, patchwork_segmenter
from patchwork.models.blockcopy import Handling
from patchwork.nn import BlockGrid

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = (128, 192)
GRID = BlockGrid(64)
MASK = torch.tensor([[[True, False, True], [False, False, True]], [[False, True, False], [False, False, False]]])


def _check_exact(net: BlockCopyNetwork, dense, keys) -> None:
    """forward_full, any mask on the same frame, and every block on a new frame equal the dense outputs."""
    x0, x1 = torch.randn(2, 3, *SIZE), torch.randn(2, 3, *SIZE)
    y0, y1 = dense(x0), dense(x1)
    state = net.init_state(2, SIZE)
    out, state = net.forward_full(x0, state)
    for key in keys:
        torch.testing.assert_close(out[key], y0[key], rtol=0, atol=1e-5)
    out, state = net(x0, MASK, state)
    for key in keys:
        torch.testing.assert_close(out[key], y0[key], rtol=1e-4, atol=1e-4)
    out, state = net(x1, GRID.full_mask(2, SIZE), state)
    for key in keys:
        torch.testing.assert_close(out[key], y1[key], rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_lraspp_mobilenet_v3_large():
    torch.manual_seed(0)
    dense = randomize_batchnorm(
        torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None)
    ).eval()
    net = BlockCopyNetwork.from_module(dense, GRID).eval()
    # Squeeze-excitation pools, the head's pooling and both interpolations see the dense map.
    assert sum("AdaptiveAvgPool2d" in op for op in net.nodes_with(Handling.DENSE)) == 9
    assert net.nodes_with(Handling.DENSE).count("function interpolate") == 2
    _check_exact(net, dense, ["out"])


@torch.no_grad()
def test_detector_forward_dense_is_the_single_frame_output_and_converts_exactly():
    torch.manual_seed(0)
    detector = randomize_batchnorm(patchwork_detector((1, 1), width_mult=0.5, num_classes=4)).eval()
    frames = torch.rand(2, 3, *SIZE)
    reference = detector(frames, torch.zeros(2, dtype=torch.long), detector.init_state(2, SIZE)).raw
    dense = detector.forward_dense(detector.normalize(frames))
    for key in ("cls_logits", "bbox_regression"):
        torch.testing.assert_close(dense[key], reference[key], rtol=0, atol=1e-6)
    net = BlockCopyNetwork.from_module(detector, GRID, method="forward_dense").eval()
    # At 64-pixel blocks the pyramid's layers below stride 64 reduce the dense map.
    assert "module 'pyramid.layers.1.0.0' (Conv2d)" in net.nodes_with(Handling.DENSE)
    assert "module 'pyramid.layers.0.0.0' (PatchworkCell)" in net.nodes_with(Handling.CELL)
    _check_exact(net, detector.forward_dense, ["cls_logits", "bbox_regression"])


@torch.no_grad()
def test_segmenter_forward_dense_is_the_single_frame_output_and_converts_exactly():
    torch.manual_seed(0)
    segmenter = randomize_batchnorm(patchwork_segmenter((1, 1), width_mult=0.5)).eval()
    frames = torch.rand(2, 3, *SIZE)
    reference = segmenter(frames, torch.zeros(2, dtype=torch.long), segmenter.init_state(2, SIZE)).raw
    dense = segmenter.forward_dense(segmenter.normalize(frames))
    torch.testing.assert_close(dense["logits"], reference["logits"], rtol=0, atol=1e-6)
    net = BlockCopyNetwork.from_module(segmenter, GRID, method="forward_dense").eval()
    assert net.nodes_with(Handling.DENSE) == ["method .mean()", "function interpolate"]
    _check_exact(net, segmenter.forward_dense, ["logits"])
