import math

import pytest
import torch

from patchwork.rl.information_gain import (
    block_information_gain,
    detection_information_gain,
    segmentation_information_gain,
)


def test_algorithm_1_on_an_8x8_image_hand_painted():
    # Current: A moved down by 2 pixels from A' (IoU 8 / 24 = 1/3), C new (no overlap with any
    # previous box), D new with fractional coordinates. Previous: A', and B' which vanished.
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [5.0, 0.0, 7.0, 2.0], [5.4, 3.6, 7.5, 5.0]])
    scores = torch.tensor([0.8, 0.6, 0.3])
    prev_boxes = torch.tensor([[0.0, 2.0, 4.0, 6.0], [6.0, 6.0, 8.0, 8.0]])
    prev_scores = torch.tensor([0.5, 0.9])
    ig = detection_information_gain(boxes, scores, prev_boxes, prev_scores, (8, 8))
    expected = torch.zeros(8, 8)
    expected[4:6, 0:4] = 0.5 * (2 / 3)  # A' (matched): (1 - IoU) * previous score
    expected[0:4, 0:4] = 0.8 * (2 / 3)  # A: (1 - IoU) * score, the maximum where A and A' overlap
    expected[0:2, 5:7] = 0.6  # C: no match, IoU 0
    # D: pixel centres j + 0.5 in [5.4, 7.5) -> columns 5, 6; i + 0.5 in [3.6, 5.0) -> row 4.
    expected[4, 5:7] = 0.3
    expected[6:8, 6:8] = 0.9  # B': matched by no current detection, paints its score
    torch.testing.assert_close(ig, expected)


def test_static_detections_gain_nothing_and_empty_frames_are_zero():
    boxes = torch.tensor([[1.0, 1.0, 5.0, 6.0]])
    static = detection_information_gain(boxes, torch.tensor([0.9]), boxes, torch.tensor([0.7]), (8, 8))
    assert torch.equal(static, torch.zeros(8, 8))
    empty = torch.zeros(0, 4)
    nothing = detection_information_gain(empty, torch.zeros(0), empty, torch.zeros(0), (4, 6))
    assert torch.equal(nothing, torch.zeros(4, 6))
    # A detection with no previous ones at all paints its score; boxes are clipped to the image.
    box = torch.tensor([[-3.0, 6.0, 2.0, 12.0]])
    ig = detection_information_gain(box, torch.tensor([0.4]), empty, torch.zeros(0), (8, 8))
    assert ig[6:, :2].eq(0.4).all() and ig.sum() == pytest.approx(0.4 * 4)


def test_segmentation_gain_is_the_kl_divergence_with_0_log_0_as_0():
    prev = torch.tensor([[1.0, 0.25, 0.0], [0.0, 0.75, 1.0]]).view(1, 2, 1, 3)
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 1.0]]).view(1, 2, 1, 3)
    ig = segmentation_information_gain(probs, prev)
    expected = torch.tensor([[[math.log(2), 0.25 * math.log(0.5) + 0.75 * math.log(1.5), 0.0]]])
    torch.testing.assert_close(ig, expected)
    # A class becoming impossible where it was certain: large but finite.
    assert torch.isfinite(segmentation_information_gain(prev.flip(1), prev)).all()


def test_block_gain_is_the_maximum_over_its_pixels():
    ig = torch.tensor([[0.1, 0.2, 0.0, 0.0], [0.3, 0.0, 0.0, 0.7], [0.0, 0.0, 0.5, 0.5], [0.0, 0.9, 0.5, 0.5]])
    assert torch.equal(block_information_gain(ig, 2), torch.tensor([[0.3, 0.7], [0.9, 0.5]]))
    assert block_information_gain(ig.expand(3, 4, 4), 2).shape == (3, 2, 2)
    with pytest.raises(ValueError, match="2-pixel blocks"):
        block_information_gain(torch.zeros(3, 4), 2)
