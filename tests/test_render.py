"""patchwork.render: drawn pixels where expected, everything else untouched, shapes and dtypes."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch

import patchwork.render as render
from patchwork.render import (BLOCK_COLOR, GRID_COLOR, LATENCY_COLOR, MFLOPS_COLOR, PREDICTION_COLOR,
                              STRIP_BACKGROUND, WINDOW_COLOR, append_cost_strip, block_edges, cost_strip,
                              detection_captions, draw_block_mask, draw_boxes, draw_detections, draw_mask,
                              draw_text, draw_window, hstack, render_attention_frame, render_memory,
                              render_stream_frame, to_uint8_image)

RED, GREEN, YELLOW, BLACK = [255, 0, 0], [0, 255, 0], [255, 255, 0], [0, 0, 0]


def pixel(image, y, x):
    return image[:, y, x].tolist()


def black(height: int = 16, width: int = 16) -> torch.Tensor:
    return torch.zeros(3, height, width, dtype=torch.uint8)


def test_render_is_a_leaf_module():
    tree = ast.parse(Path(render.__file__).read_text())
    roots = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    roots |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert roots <= {"__future__", "math", "collections", "numpy", "torch", "torchvision", "PIL"}, roots


def test_to_uint8_image_rounds_and_clamps_floats():
    image = torch.tensor([-1.0, 0.5, 2.0]).view(3, 1, 1)
    assert to_uint8_image(image).flatten().tolist() == [0, 128, 255]
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        to_uint8_image(torch.zeros(1, 4, 4))


def test_box_edges_have_the_box_colour_and_nothing_else_changes():
    frame = black()
    image = draw_boxes(frame, torch.tensor([[4.0, 6.0, 12.0, 10.0]]), color=(10, 20, 30), width=1)
    assert image.dtype == torch.uint8 and image.shape == (3, 16, 16)
    # Pixels x in [4, 12), y in [6, 10): the outline lies on columns 4 and 11, rows 6 and 9.
    edge = torch.zeros(16, 16, dtype=torch.bool)
    edge[6, 4:12] = edge[9, 4:12] = edge[6:10, 4] = edge[6:10, 11] = True
    assert all(pixel(image, y, x) == [10, 20, 30] for y, x in edge.nonzero().tolist())
    assert image[:, ~edge].eq(0).all()  # inside (no fill) and outside untouched
    assert frame.eq(0).all()  # the input is not drawn on
    assert torch.equal(draw_boxes(frame, torch.zeros(0, 4)), frame)


def test_detections_are_thresholded_and_captioned_with_class_and_score():
    prediction = {"boxes": torch.tensor([[2.0, 2.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]]),
                  "scores": torch.tensor([0.91, 0.2]), "labels": torch.tensor([1, 0])}
    assert detection_captions(prediction["labels"], prediction["scores"], ["cat", "dog"]) == ["dog 0.91", "cat 0.20"]
    assert detection_captions(prediction["labels"]) == ["1", "0"]
    image = draw_detections(black(32, 32), prediction, ["cat", "dog"], score_threshold=0.5)
    assert pixel(image, 2, 5) == GREEN  # the 0.91 box's top edge
    assert image[:, 20:, 20:].eq(0).all()  # the 0.2 box is not drawn
    assert image[:, 2:10, 2:10].ne(0).any()


def test_mask_blends_its_colour_over_masked_pixels_only():
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[4:8, 4:8] = True
    image = draw_mask(black(), mask, alpha=0.4)
    assert pixel(image, 5, 5) == [0, round(0.4 * 255), 0]  # 40 % green over black
    assert image[:, ~mask].eq(0).all()
    with pytest.raises(ValueError, match="does not match"):
        draw_mask(black(), torch.zeros(8, 8, dtype=torch.bool))


def test_attention_window_is_one_pixel_thicker_than_boxes():
    image = draw_window(black(32, 32), (8, 8, 24, 24))
    # 32 px frame: boxes are 1 px wide, the window 2 px, inside [8, 24).
    assert pixel(image, 8, 16) == RED and pixel(image, 9, 16) == RED and pixel(image, 10, 16) == BLACK
    assert pixel(image, 7, 16) == BLACK and pixel(image, 16, 23) == RED and pixel(image, 16, 24) == BLACK


def test_block_mask_tints_executed_blocks_and_draws_the_grid():
    block_mask = torch.tensor([[True, False], [False, False]])
    image = draw_block_mask(black(), block_mask, alpha=0.35)
    assert image.shape == (3, 16, 16) and image.dtype == torch.uint8
    tinted = torch.tensor([c * 0.35 for c in BLOCK_COLOR])
    assert (image[:, 3, 3].float() - tinted).abs().max() <= 1  # executed block: 35 % tint
    assert pixel(image, 12, 12) == BLACK and pixel(image, 3, 12) == BLACK  # copied blocks untouched
    assert pixel(image, 8, 3) == list(GRID_COLOR) and pixel(image, 3, 8) == list(GRID_COLOR)
    assert pixel(image, 7, 3) != list(GRID_COLOR)
    plain = draw_block_mask(black(), block_mask, grid_color=None)
    assert pixel(plain, 8, 12) == BLACK
    assert block_edges(3, 10) == [0, 3, 7, 10]  # uneven blocks: rounded edges
    with pytest.raises(ValueError, match="Hb, Wb"):
        draw_block_mask(black(), torch.ones(2, 2, 2, dtype=torch.bool))


def test_text_is_written_at_its_position_on_a_background():
    frame = torch.full((3, 32, 64), 100, dtype=torch.uint8)
    image = draw_text(frame, "f1, LSTM age 3", position=(2, 2))
    corner = image[:, :16, :]
    assert corner.eq(255).all(dim=0).any()  # white glyph pixels
    assert corner.eq(0).all(dim=0).any()  # the black background box
    assert image[:, 20:, :].eq(100).all()  # below the text: untouched
    assert frame.eq(100).all()


def test_cost_strip_bars_are_latencies_scaled_to_the_largest_shown():
    nan = math.nan
    strip = cost_strip(30, [10.0, 5.0, 20.0], [nan, nan, nan], height=40, bar_width=3, text_height=12)
    assert strip.shape == (3, 40, 30) and strip.dtype == torch.uint8
    # The plot area is 28 rows; bars of 14, 7 and 28 rows end on the bottom row.
    for frame, rows in enumerate((14, 7, 28)):
        for x in (3 * frame, 3 * frame + 1):
            assert all(pixel(strip, y, x) == list(LATENCY_COLOR) for y in range(40 - rows, 40))
            assert pixel(strip, 39 - rows, x) != list(LATENCY_COLOR)
        assert all(pixel(strip, y, 3 * frame + 2) == list(STRIP_BACKGROUND) for y in range(12, 40))  # the gap
    assert strip[:, 12:, 9:].eq(torch.tensor(STRIP_BACKGROUND, dtype=torch.uint8)[:, None, None]).all()
    assert strip[:, :12].eq(255).all(dim=0).any()  # the figures of the last frame, in white


def test_cost_strip_shows_only_the_latest_frames_and_the_mflops_curve():
    nan = math.nan
    # 12 frames, room for 10: the two huge first latencies are not shown and do not set the scale.
    strip = cost_strip(30, [1000.0, 1000.0] + [2.0] * 9 + [4.0], [nan] * 12, height=40, bar_width=3)
    # Bars of 2 ms are half the 28-row plot area (rows 26..39) next to the 4 ms maximum.
    assert pixel(strip, 26, 0) == list(LATENCY_COLOR) and pixel(strip, 25, 0) != list(LATENCY_COLOR)
    assert pixel(strip, 12, 27) == list(LATENCY_COLOR)  # the last (largest shown) bar: full height
    curve = cost_strip(30, [nan] * 3, [0.0, 50.0, 100.0], height=40, bar_width=3)
    # Points at bar centres, rows 39 - round(c / 100 * 27): 39, 25, 12.
    assert pixel(curve, 39, 0) == list(MFLOPS_COLOR)
    assert pixel(curve, 25, 3) == list(MFLOPS_COLOR)
    assert pixel(curve, 12, 6) == list(MFLOPS_COLOR)
    assert not curve[:, 12:].eq(torch.tensor(LATENCY_COLOR, dtype=torch.uint8)[:, None, None]).all(dim=0).any()
    empty = cost_strip(30, [], [])
    assert empty.eq(torch.tensor(STRIP_BACKGROUND, dtype=torch.uint8)[:, None, None]).all()
    with pytest.raises(ValueError, match="latencies"):
        cost_strip(30, [1.0], [])


def test_append_cost_strip_keeps_the_frame_above_it():
    frame = torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = append_cost_strip(frame, [3.0, 4.0], [10.0, 12.0], height=40)
    assert out.shape == (3, 60, 30) and out.dtype == torch.uint8
    assert torch.equal(out[:, :20], frame)
    assert torch.equal(out[:, 20:], cost_strip(30, [3.0, 4.0], [10.0, 12.0], height=40))


def test_render_stream_frame_layers_and_shapes():
    frame = torch.zeros(3, 32, 48)  # float input is accepted
    prediction = {"boxes": torch.tensor([[30.0, 20.0, 40.0, 30.0]]), "scores": torch.tensor([0.9]),
                  "labels": torch.tensor([0])}
    plain = render_stream_frame(frame, prediction, window_box=(0, 0, 24, 16), class_names=["cat"])
    assert plain.shape == (3, 32, 48) and plain.dtype == torch.uint8
    assert pixel(plain, 0, 0) == RED and pixel(plain, 20, 35) == GREEN
    full = render_stream_frame(frame, prediction, (0, 0, 24, 16), ["cat"],
                               block_mask=torch.ones(2, 2, dtype=torch.bool), text="f0", latencies_ms=[1.0, 2.0], mflops=[5.0, 6.0], strip_height=30)
    assert full.shape == (3, 62, 48)
    assert pixel(full, 0, 0) == RED  # the window is drawn over the block tint
    assert torch.equal(full[:, 32:], cost_strip(48, [1.0, 2.0], [5.0, 6.0], height=30))
    mask = torch.zeros(32, 48, dtype=torch.bool)
    mask[10:20, 10:20] = True
    segmented = render_stream_frame(frame, {"mask": mask, "scores": torch.zeros(32, 48)})
    assert pixel(segmented, 15, 15) == [0, round(0.4 * 255), 0] and pixel(segmented, 25, 25) == BLACK
    only_ms = render_stream_frame(frame, latencies_ms=[1.0])
    assert only_ms.shape == (3, 72, 48)


def test_hstack_puts_frames_side_by_side_with_a_gap():
    a, b = torch.zeros(3, 8, 5, dtype=torch.uint8), torch.full((3, 8, 7), 9, dtype=torch.uint8)
    out = hstack([a, b], gap=2)
    assert out.shape == (3, 8, 14)
    assert torch.equal(out[:, :, :5], a) and out[:, :, 5:7].eq(255).all() and torch.equal(out[:, :, 7:], b)
    with pytest.raises(ValueError, match="heights"):
        hstack([a, torch.zeros(3, 4, 5, dtype=torch.uint8)])


def test_attention_frame_draws_the_window_red_and_predictions_green():
    frame = torch.zeros(3, 32, 32)
    image = render_attention_frame(frame, (8, 8, 24, 24), boxes=torch.tensor([[2.0, 26.0, 6.0, 30.0]]))
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)
    # Window pixels x, y in [8, 24): its border lies on rows/columns 8 and 23.
    assert all(pixel(image, 8, x) == RED for x in range(8, 24))
    assert all(pixel(image, y, 23) == RED for y in range(8, 24))
    assert pixel(image, 7, 16) == BLACK and pixel(image, 24, 16) == BLACK and pixel(image, 16, 16) == BLACK
    assert pixel(image, 26, 4) == GREEN and pixel(image, 28, 4) == BLACK
    # A full-frame window (M = N = 1) keeps its whole border inside the image.
    full = render_attention_frame(torch.ones(3, 32, 32), torch.tensor([0, 0, 32, 32]))
    assert pixel(full, 0, 0) == RED and pixel(full, 31, 31) == RED and pixel(full, 16, 16) == [255, 255, 255]


def test_attention_frame_ground_truth_and_mask():
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[4:8, 4:8] = True
    image = render_attention_frame(
        torch.zeros(3, 16, 16), (0, 0, 8, 8), ground_truth=torch.tensor([[10.0, 10.0, 14.0, 14.0]]), mask=mask
    )
    assert pixel(image, 10, 12) == YELLOW
    assert pixel(image, 5, 5) == [0, round(0.4 * 255), 0]  # 40 % green over black
    assert pixel(image, 12, 4) == BLACK


def test_render_memory_channel_mean_normalised_and_upsampled_nearest():
    means = torch.tensor([[0.0, 1.0], [2.0, 4.0]])
    memory = means + torch.tensor([-1.0, 1.0, -2.0, 2.0]).view(4, 1, 1)  # channel mean == means
    image = render_memory(memory, size=(4, 4))
    expected = torch.tensor([[0, 64], [128, 255]], dtype=torch.uint8).repeat_interleave(2, 0).repeat_interleave(2, 1)
    assert torch.equal(image, expected.expand(3, 4, 4))
    assert render_memory(memory).shape == (3, 256, 256)  # default: integer factor, longer side >= 256
    assert render_memory(torch.full((8, 3, 5), 7.0)).eq(0).all()  # constant memory: black, no NaN


def test_render_memory_rgb_undoes_per_channel_normalisation():
    pattern = (torch.rand(6, 10) > 0.5).float()
    pattern[0, 0], pattern[0, 1] = 0.0, 1.0
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    memory = (pattern - mean.view(3, 1, 1)) / std.view(3, 1, 1)  # the input cell holds normalised pixels
    image = render_memory(memory, size=(6, 10), window_box=(0, 0, 4, 4))
    assert torch.equal(image[:, 4:, 4:], (pattern[4:, 4:] * 255).to(torch.uint8).expand(3, -1, -1))
    assert pixel(image, 0, 2) == RED  # window border on top


