import pytest
import torch

from patchwork.data import make_target, train_transform, transform_clip
from patchwork.data.transforms import apply_frame_transform, check_image_size

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def coloured(height: int, width: int, box: tuple[int, int, int, int]) -> torch.Tensor:
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    x1, y1, x2, y2 = box
    image[1, y1:y2, x1:x2] = 255
    return image


def test_clip_resize_and_flip_move_boxes_and_masks_with_pixels():
    frames = torch.stack([coloured(40, 80, (10, 10, 30, 20)), coloured(40, 80, (50, 20, 70, 40))])
    targets = []
    for box in ((10, 10, 30, 20), (50, 20, 70, 40)):
        t = make_target([box], [3], [7])
        t["mask"] = frames[len(targets), 1] > 0
        targets.append(t)
    out, out_targets = transform_clip(frames, targets, (20, 40))
    assert out.shape == (2, 3, 20, 40) and out.dtype == torch.uint8
    assert torch.equal(out_targets[0]["boxes"], torch.tensor([[5.0, 5, 15, 10]]))
    assert torch.equal(out_targets[0]["mask"], out[0, 1] > 127)
    assert out_targets[1]["labels"].tolist() == [3] and out_targets[1]["track_ids"].tolist() == [7]

    flipped, flipped_targets = transform_clip(frames, targets, (20, 40), hflip=True)
    # x -> 40 - x on the 40-pixel-wide output, the same flip for every frame.
    assert torch.equal(flipped_targets[0]["boxes"], torch.tensor([[25.0, 5, 35, 10]]))
    assert torch.equal(flipped_targets[1]["boxes"], torch.tensor([[5.0, 10, 15, 20]]))
    assert torch.equal(flipped, out.flip(-1))
    assert torch.equal(flipped_targets[1]["mask"], out_targets[1]["mask"].flip(-1))


def test_train_transform_keeps_boxes_on_pixels_and_drops_degenerate_ones():
    image = coloured(64, 64, (8, 16, 40, 48))
    target = make_target([(8, 16, 40, 48), (63.8, 0, 64, 1)], [1, 2], [0, 1])  # second: sub-pixel sliver
    transform = train_transform((32, 32), hflip_p=0.5, photometric_p=0.0)
    flips = set()
    for seed in range(6):
        torch.manual_seed(seed)
        out, out_target = apply_frame_transform(transform, image, target)
        assert out.shape == (3, 32, 32) and out_target["labels"].tolist() == [1]
        assert out_target["track_ids"].tolist() == [0]
        box = out_target["boxes"][0]
        flips.add(float(box[0]))
        x1, y1, x2, y2 = box.round().int().tolist()
        assert (out[1, y1 + 1:y2 - 1, x1 + 1:x2 - 1] == 255).all() and out[1].float().sum() > 0
        assert out[1, :, : max(x1 - 1, 0)].sum() == 0 and out[1, :, x2 + 1:].sum() == 0
    assert flips == {4.0, 12.0}  # 64 -> 32 halves (8, 40) to (4, 20); the flip gives (12, 28)


def test_image_size_is_validated():
    assert check_image_size([96, 128]) == (96, 128)
    with pytest.raises(ValueError):
        check_image_size((0, 128))
    with pytest.raises(ValueError):
        check_image_size((128,))
