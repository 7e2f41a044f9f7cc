import logging

import numpy as np
import pytest
import torch
from PIL import Image

from data_fixtures import DAVIS_FRAMES, davis_mask, frame_value, make_davis
from patchwork.data import CorruptDataError, DatasetLayoutError, Davis2016, MixedFrameDataset
from patchwork.data.davis import DAVIS2016_TRAIN, DAVIS2016_VAL, parse_davis_image_set_line

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("list_style", ["2016", "2017"])
def test_reads_sequences_frames_and_binary_masks(tmp_path, list_style):
    root = make_davis(tmp_path, list_style)
    train, val = Davis2016(root, "train"), Davis2016(root, "val")
    assert [v.name for v in train] == ["bear", "boat"] and [v.name for v in val] == ["camel"]
    boat = train[1]
    assert len(boat) == DAVIS_FRAMES
    for t in range(DAVIS_FRAMES):
        image, target = boat.load_frame(t)
        assert image.shape == (3, 64, 64) and abs(image.float().mean().item() - frame_value(1, t)) < 3
        assert target["mask"].dtype == torch.bool and torch.equal(target["mask"], davis_mask(t))
        assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)


def test_2017_release_palette_masks_read_as_union_of_objects(tmp_path):
    root = make_davis(tmp_path)
    indices = np.zeros((64, 64), dtype=np.uint8)
    indices[0:4, 0:4] = 1
    indices[60:64, 60:64] = 2
    png = Image.fromarray(indices, mode="P")
    png.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
    png.save(root / "Annotations" / "480p" / "bear" / "00000.png")
    _, target = Davis2016(root, "train")[0].load_frame(0)
    assert torch.equal(target["mask"], torch.from_numpy(indices > 0))


def test_list_line_formats_and_official_split():
    assert parse_davis_image_set_line("/JPEGImages/480p/bmx-trees/00012.jpg /Annotations/480p/bmx-trees/00012.png") \
        == "bmx-trees"
    assert parse_davis_image_set_line("JPEGImages/1080p/dog/00000.jpg") == "dog"
    assert parse_davis_image_set_line("drift-chicane\n") == "drift-chicane"
    assert len(DAVIS2016_TRAIN) == 30 and len(DAVIS2016_VAL) == 20 and not set(DAVIS2016_TRAIN) & set(DAVIS2016_VAL)


def test_missing_root_and_missing_or_corrupt_png(tmp_path, caplog):
    with pytest.raises(DatasetLayoutError, match="JPEGImages/480p"):
        Davis2016(tmp_path / "DAVIS", "train")
    root = make_davis(tmp_path)
    (root / "Annotations" / "480p" / "bear" / "00001.png").unlink()
    with caplog.at_level(logging.WARNING, logger="patchwork.data"):
        train = Davis2016(root, "train")
    assert len(train[0]) == DAVIS_FRAMES - 1 and train.bad_data.count == 1 and "00001.png" in caplog.text
    with pytest.raises(CorruptDataError):
        Davis2016(root, "train", strict=True)

    corrupt = root / "Annotations" / "480p" / "camel" / "00000.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    val = Davis2016(root, "val")
    with pytest.raises(CorruptDataError):
        val[0].load_frame(0)
    frames = MixedFrameDataset(val, [], (32, 32), augment=False, sequential=True)
    with caplog.at_level(logging.WARNING, logger="patchwork.data"):
        sample = frames[0]  # replaced by the next frame
    assert abs(sample["image"].float().mean().item() - frame_value(2, 1)) < 3  # camel's frame 1
    assert sample["target"]["mask"].shape == (32, 32) and sample["target"]["mask"].sum() == 25
    assert frames.bad_data.count == 1 and str(corrupt) in caplog.text
