import numpy as np
import pytest
import torch

from patchwork.data import FakeVideoSynthesizer, empty_target, gt_overlap, make_target
from patchwork.data.fake_video import view_path

pytestmark = pytest.mark.usefixtures("one_torch_thread")

H0, W0 = 160, 240
RED_BOX = (100, 50, 160, 90)  # xyxy, pixel rows 50..89, columns 100..159
BLUE_BOX = (20, 20, 40, 36)
OUT = (48, 64)


def source() -> tuple[torch.Tensor, dict]:
    """A grey image with a solid red and a solid blue rectangle; both are boxes, red is the mask."""
    image = torch.full((3, H0, W0), 90, dtype=torch.uint8)
    x1, y1, x2, y2 = RED_BOX
    image[:, y1:y2, x1:x2] = torch.tensor([255, 0, 0], dtype=torch.uint8)[:, None, None]
    x1, y1, x2, y2 = BLUE_BOX
    image[:, y1:y2, x1:x2] = torch.tensor([0, 0, 255], dtype=torch.uint8)[:, None, None]
    target = make_target([RED_BOX, BLUE_BOX], [8, 29], [5, 6])
    mask = torch.zeros(H0, W0, dtype=torch.bool)
    mask[RED_BOX[1]:RED_BOX[3], RED_BOX[0]:RED_BOX[2]] = True
    target["mask"] = mask
    return image, target


def pixel_centres() -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = torch.meshgrid(torch.arange(OUT[0]) + 0.5, torch.arange(OUT[1]) + 0.5, indexing="ij")
    return xs, ys


def inside(box: torch.Tensor, margin: float) -> torch.Tensor:
    xs, ys = pixel_centres()
    return (xs > box[0] + margin) & (xs < box[2] - margin) & (ys > box[1] + margin) & (ys < box[3] - margin)


@pytest.mark.parametrize("seed", range(8))
def test_boxes_and_masks_stay_on_their_pixels(seed):
    image, target = source()
    synth = FakeVideoSynthesizer(view_scale=(0.3, 1.0), speed_mean=0.2, speed_std=0.1)
    clip = synth(image, target, 6, OUT, np.random.default_rng(seed))
    assert clip.frames.shape == (6, 3, *OUT) and clip.frames.dtype == torch.uint8
    sources = {8: (RED_BOX, (255, 0, 0)), 29: (BLUE_BOX, (0, 0, 255))}
    limits = torch.tensor([OUT[1], OUT[0]] * 2, dtype=torch.float32)
    for t in range(6):
        view = clip.views[t]
        scale = OUT[1] / (view[2] - view[0])
        assert torch.isclose(scale, OUT[0] / (view[3] - view[1]), rtol=1e-4)  # aspect kept
        # Bilinear sampling blends within half a source pixel of an edge; stay clear of that.
        margin = 1.0 + 0.5 * float(scale)
        frame, frame_target = clip.frames[t].int(), clip.targets[t]
        covered = torch.zeros(OUT, dtype=torch.bool)
        for label, (source_box, colour) in sources.items():
            # The source box through the view's affine map, clipped to the frame ...
            expected = (torch.tensor(source_box, dtype=torch.float32) - view[:2].repeat(2)) * scale
            expected = torch.minimum(expected.clamp(min=0), limits)
            covered |= inside(expected, -margin)
            present = frame_target["labels"] == label
            if min(expected[2] - expected[0], expected[3] - expected[1]) < synth.min_box_size:
                assert not present.any()  # ... dropped when thinner than min_box_size ...
                continue
            (box,) = frame_target["boxes"][present]  # ... else kept with its track id ...
            assert torch.allclose(box, expected, atol=1e-3)
            assert frame_target["track_ids"][present].item() == {8: 5, 29: 6}[label]
            deep = inside(box, margin)  # ... and its pixels have the box's colour.
            assert torch.equal(frame[:, deep], torch.tensor(colour)[:, None].expand(-1, int(deep.sum())))
            if label == 8 and box[0] > 0 and box[1] > 0 and box[2] < OUT[1] and box[3] < OUT[0]:
                # Sub-pixel check: the centroid of redness is the box centre (a half source
                # pixel misalignment moves it by ~0.25 output pixels here).
                xs, ys = pixel_centres()
                redness = ((frame[0] - 90) / 165).clamp(0, 1) * (frame[1] < 80)
                centroid = torch.stack([(redness * xs).sum(), (redness * ys).sum()]) / redness.sum()
                assert torch.allclose(centroid, (box[:2] + box[2:]) / 2, atol=0.1)
        # Away from every box the frame is the grey background.
        assert (frame[:, ~covered] == 90).all(), f"frame {t}"
        # The mask is the red box's pixels, up to the blended edge.
        red = (frame[0] > 200) & (frame[1] < 50)
        mask = frame_target["mask"]
        edge = torch.zeros(OUT, dtype=torch.bool)
        for box, label in zip(frame_target["boxes"], frame_target["labels"].tolist()):
            if label == 8:
                edge = inside(box, -margin) & ~inside(box, margin)
        assert torch.equal(mask & ~edge, red & ~edge), f"frame {t}"


def test_same_seed_same_clip_and_different_seed_different_clip():
    image, target = source()
    synth = FakeVideoSynthesizer()
    a = synth(image, target, 5, OUT, np.random.default_rng(7))
    b = synth(image, target, 5, OUT, np.random.default_rng(7))
    c = synth(image, target, 5, OUT, np.random.default_rng(8))
    assert torch.equal(a.frames, b.frames) and torch.equal(a.views, b.views)
    assert all(torch.equal(x["boxes"], y["boxes"]) and torch.equal(x["mask"], y["mask"])
               for x, y in zip(a.targets, b.targets))
    assert not torch.equal(a.views, c.views)


def test_gt_overlap_by_hand():
    view = np.array([[0, 0, 10, 10]], dtype=float)
    assert gt_overlap(view, make_target([[5, 5, 15, 15]], [0])) == pytest.approx([0.25])
    assert gt_overlap(view, make_target([[2, 2, 4, 4], [50, 50, 60, 60]], [0, 1])) == pytest.approx([1.0])
    assert gt_overlap(np.array([[0, 0, 2, 2]]), make_target([[0, 0, 100, 100]], [0])) == pytest.approx([1.0])
    target = empty_target()
    target["mask"] = torch.zeros(20, 20, dtype=torch.bool)
    target["mask"][0:2, 0:10] = True  # 20 foreground pixels
    # The view holds 10 of them; min(|fg| = 20, |view| = 25) = 20.
    assert gt_overlap(np.array([[0, 0, 5, 5]]), target) == pytest.approx([0.5])
    assert gt_overlap(view, empty_target()) == pytest.approx([0.0])


def test_every_clip_shows_a_view_overlapping_ground_truth_even_for_a_tiny_object():
    synth = FakeVideoSynthesizer(view_scale=(0.2, 0.5), min_gt_overlap=0.7)
    image = torch.zeros(3, H0, W0, dtype=torch.uint8)
    tiny = make_target([[200, 10, 203, 13]], [4])
    ends = set()
    for seed in range(30):
        clip = synth(image, tiny, 4, (24, 32), np.random.default_rng(seed))
        overlaps = gt_overlap(clip.views.numpy(), tiny)
        # The qualifying view opens or closes the clip.
        assert max(overlaps[0], overlaps[-1]) >= 0.7
        ends.add(int(overlaps[-1] >= 0.7))
        views = clip.views.numpy()
        assert (views[:, :2] >= 0).all() and (views[:, 2] <= W0 + 1e-3).all() and (views[:, 3] <= H0 + 1e-3).all()
        assert np.allclose((views[:, 2] - views[:, 0]) / (views[:, 3] - views[:, 1]), 4 / 3, rtol=1e-4)
    assert ends == {0, 1}


def test_view_path_ping_pongs_at_the_drawn_speed():
    anchor, other = np.array([0.0, 0, 10, 10]), np.array([20.0, 0, 30, 10])
    # Distance 20 px = 2 view widths; 0.5 widths per frame -> a quarter of the way per frame.
    path = view_path(anchor, other, 0.5, 7)
    assert np.allclose(path[:, 0], [0, 5, 10, 15, 20, 15, 10])
    assert np.allclose(path[:, 2] - path[:, 0], 10)
    assert np.allclose(view_path(anchor, other, 0.5, 3, anchor_last=True)[:, 0], [10, 5, 0])
    synth = FakeVideoSynthesizer(speed_mean=0.3, speed_std=0.0)
    assert synth.sample_views((H0, W0), empty_target(), 1.0, np.random.default_rng(0))[2] == pytest.approx(0.3)


def test_image_without_ground_truth_gives_empty_targets():
    image = torch.full((3, 50, 70), 30, dtype=torch.uint8)
    clip = FakeVideoSynthesizer()(image, empty_target(), 3, (32, 32), np.random.default_rng(0))
    assert clip.frames.shape == (3, 3, 32, 32) and (clip.frames == 30).all()
    assert all(t["boxes"].shape == (0, 4) and t["labels"].shape == (0,) for t in clip.targets)
