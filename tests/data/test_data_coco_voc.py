import logging

import pytest
import torch

from data_fixtures import make_coco, make_voc, voc_instances
from patchwork.data import CocoStills, CorruptDataError, DatasetLayoutError, VocStills

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_coco_boxes_labels_and_dropped_classes(tmp_path, caplog):
    annotation_file, image_dir = make_coco(tmp_path)
    with caplog.at_level(logging.WARNING, logger="patchwork.data"):
        coco = CocoStills(annotation_file, image_dir)
    # Image 2 has only a person (no VID box): dropped. Image 3's file is missing: skipped and logged.
    assert [s.name for s in coco] == ["1"]
    assert coco.bad_data.count == 1 and "000000000003.jpg" in caplog.text
    target = coco[0].target
    # [x, y, w, h] = [10, 12, 20, 8] -> (10, 12, 30, 20); the person and the crowd are not boxes.
    assert torch.equal(target["boxes"], torch.tensor([[10.0, 12, 30, 20]]))
    assert target["labels"].tolist() == [8] and target["track_ids"].tolist() == [11]
    image, loaded = coco[0].load()
    assert image.shape == (3, 64, 64) and "mask" not in loaded


def test_coco_foreground_mask_is_the_union_of_instances(tmp_path):
    annotation_file, image_dir = make_coco(tmp_path)
    coco = CocoStills(annotation_file, image_dir, with_masks=True, require_objects=True)
    assert [s.name for s in coco] == ["1", "2"]  # image 2 has foreground (a person)
    _, target = coco[0].load()
    expected = torch.zeros(64, 64, dtype=torch.bool)
    expected[0:5, 0:5] = True  # crowd of cars (uncompressed RLE)
    expected[40:50, 30:34] = True  # person (compressed RLE)
    # The dog polygon (10, 12)-(30, 20) rasterises to exactly the pixels of its box (10, 12, 30, 20)
    # in patchwork's convention (pixel i covers [i, i + 1)): rows 12..19, columns 10..29.
    expected[12:20, 10:30] = True
    assert torch.equal(target["mask"], expected)

    vid_only = CocoStills(annotation_file, image_dir, with_masks=True, foreground_all_classes=False)
    assert [s.name for s in vid_only] == ["1"]
    _, target = vid_only[0].load()
    assert not target["mask"][40:50, 30:34].any() and target["mask"][15, 15]


def test_coco_missing_and_corrupt_json(tmp_path):
    with pytest.raises(DatasetLayoutError, match="instances"):
        CocoStills(tmp_path / "instances_train2017.json", tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CorruptDataError):
        CocoStills(bad, tmp_path)


@pytest.mark.parametrize("root_level", ["parent", "devkit", "year"])
def test_voc_boxes_labels_and_root_variants(tmp_path, root_level):
    year = make_voc(tmp_path)
    root = {"parent": tmp_path, "devkit": year.parent, "year": year}[root_level]
    voc = VocStills(root, "2012", "trainval")
    # 2008_000003 holds only a chair: no VID box, dropped.
    assert [s.name for s in voc] == ["2008_000001", "2008_000002"]
    target = voc[0].target
    # 1-based inclusive (11, 21, 30, 40) -> (10, 20, 30, 40); the person has no VID class.
    assert torch.equal(target["boxes"], torch.tensor([[10.0, 20, 30, 40]]))
    assert target["labels"].tolist() == [0] and target["track_ids"].tolist() == [1]
    assert voc[1].target["labels"].tolist() == [18]  # motorbike -> motorcycle
    assert len(VocStills(root, "2012", "trainval", skip_difficult=True)) == 1


def test_voc_segmentation_object_mask_excludes_void(tmp_path):
    make_voc(tmp_path)
    voc = VocStills(tmp_path, "2012", "trainval", with_masks=True)
    assert len(voc) == 3  # with masks, every listed image has foreground
    _, target = voc[0].load()
    indices = torch.from_numpy(voc_instances("2008_000001"))
    assert torch.equal(target["mask"], (indices > 0) & (indices < 255))
    assert target["mask"][20:40, 10:30].all() and not target["mask"][19, 9]  # 255 ring is background


def test_voc_missing_list_and_corrupt_xml(tmp_path, caplog):
    with pytest.raises(DatasetLayoutError, match="VOC2012"):
        VocStills(tmp_path, "2012")
    year = make_voc(tmp_path)
    (year / "Annotations" / "2008_000001.xml").write_text("<annotation><object>")
    with caplog.at_level(logging.WARNING, logger="patchwork.data"):
        voc = VocStills(tmp_path, "2012", "trainval")
    assert [s.name for s in voc] == ["2008_000002"] and voc.bad_data.count == 1
    assert "2008_000001.xml" in caplog.text
    with pytest.raises(CorruptDataError):
        VocStills(tmp_path, "2012", "trainval", strict=True)
    with pytest.raises(DatasetLayoutError, match="Segmentation"):
        (year / "ImageSets" / "Segmentation" / "trainval.txt").unlink()
        VocStills(tmp_path, "2012", "trainval", with_masks=True)
