from patchwork.data.classes import (COCO_TO_VID, NUM_VID_CLASSES, VID_CLASSES, VID_NAMES, VOC_TO_VID,
                                    coco_to_vid_label, vid_label, voc_to_vid_label)


def test_vid_classes_are_the_30_synsets_in_devkit_order():
    assert NUM_VID_CLASSES == 30 and len(set(c.wnid for c in VID_CLASSES)) == 30
    assert VID_CLASSES[0] == ("n02691156", "airplane")
    assert VID_CLASSES[8] == ("n02084071", "dog")
    assert VID_CLASSES[29] == ("n02391049", "zebra")
    assert vid_label("n02084071") == vid_label("dog") == 8


def test_still_image_maps_cover_16_coco_and_13_voc_classes():
    assert len(COCO_TO_VID) == 16 and len(VOC_TO_VID) == 13
    assert set(COCO_TO_VID.values()) <= set(VID_NAMES) and set(VOC_TO_VID.values()) <= set(VID_NAMES)
    assert coco_to_vid_label("boat") == VID_NAMES.index("watercraft")
    assert coco_to_vid_label("cat") == VID_NAMES.index("domestic_cat")
    assert voc_to_vid_label("aeroplane") == 0
    assert voc_to_vid_label("motorbike") == VID_NAMES.index("motorcycle")
    assert coco_to_vid_label("person") is None and voc_to_vid_label("chair") is None
