import pytest
import torch
from model_fixtures import randomize_batchnorm

from patchwork.models.builders import patchwork_detector
from patchwork.models.detector import STRIDE16_TAP, _flatten_level
from patchwork.nn import StreamState


def _pair(grid: tuple[int, int], width: float = 0.5, cells: str = "all"):
    """A Patchwork detector and the single-frame detector with the same weights."""
    torch.manual_seed(0)
    patchwork = randomize_batchnorm(patchwork_detector(grid, width_mult=width, num_classes=4, cells=cells)).eval()
    single = patchwork_detector((1, 1), width_mult=width, num_classes=4).eval()
    single.load_state_dict(patchwork.state_dict(), strict=False)
    return patchwork, single


@torch.no_grad()
def test_window_predictions_after_a_full_pass_equal_the_full_frame_model():
    patchwork, single = _pair((4, 2))
    frames = torch.rand(1, 3, 128, 128)
    reference = single(frames, torch.tensor([0]), single.init_state(1, (128, 128)))
    full = patchwork(frames, None, patchwork.init_state(1, (128, 128)))
    torch.testing.assert_close(full.raw["cls_logits"], reference.raw["cls_logits"], rtol=1e-4, atol=1e-4)
    grid = patchwork.grid
    state = StreamState({k: v.expand(grid.num_windows, *v.shape[1:]).clone() for k, v in full.state.items()})
    windows = torch.arange(grid.num_windows)
    out = patchwork(frames.expand(grid.num_windows, -1, -1, -1), windows, state)
    for key in ("cls_logits", "bbox_regression"):
        expected = reference.raw[key].expand(grid.num_windows, -1, -1)
        torch.testing.assert_close(out.raw[key], expected, rtol=1e-4, atol=1e-4)
    for detections in out.predictions:
        torch.testing.assert_close(detections["boxes"], reference.predictions[0]["boxes"], rtol=1e-4, atol=1e-3)
        assert torch.equal(detections["labels"], reference.predictions[0]["labels"])


@torch.no_grad()
def test_single_frame_detector_equals_its_stateless_twin():
    _, single = _pair((4, 2))
    frames = torch.rand(2, 3, 128, 128)
    out = single(frames, torch.zeros(2, dtype=torch.long), single.init_state(2, (128, 128)))
    # The same modules run directly, without any state.
    x = single.normalize(frames)
    features = single.backbone.features
    tap = features[:14](x)
    tap = features[14].conv[0](tap)
    last = features(x)
    high = single.high_res_head([tap, last])
    low = single.low_res_head(single.pyramid(last))
    torch.testing.assert_close(out.raw["cls_logits"], torch.cat([high["cls_logits"], low["cls_logits"]], 1))
    torch.testing.assert_close(
        out.raw["bbox_regression"], torch.cat([high["bbox_regression"], low["bbox_regression"]], 1)
    )
    assert single.observe(out) is None and single.policy_network is None and single.action_space is None


@torch.no_grad()
def test_box_predicted_in_a_window_comes_out_shifted_by_the_window_offset():
    # Without cells a window's high-res outputs depend on its crop only, so the same crop
    # at window 0 and at window 8 of WindowGrid(4, 2) gives boxes 64 pixels apart.
    detector, _ = _pair((4, 2), cells="none")
    crop = torch.rand(1, 3, 64, 64)
    at_origin, at_corner = torch.zeros(2, 1, 3, 128, 128)
    at_origin[..., :64, :64] = crop
    at_corner[..., 64:, 64:] = crop
    outputs = []
    for frames, window in ((at_origin, 0), (at_corner, 8)):
        outputs.append(detector(frames, torch.tensor([window]), detector.init_state(1, (128, 128))))
    anchors = detector.anchors((128, 128), torch.device("cpu"))
    level0 = _flatten_level(torch.zeros(1, 6, 8, 8), 1).shape[1]  # 8x8 stride-16 cells, 6 anchors each
    index = torch.arange(level0).view(8, 8, 6)
    origin, corner = index[:4, :4].reshape(-1), index[4:, 4:].reshape(-1)
    boxes = [
        detector.box_coder.decode_single(out.raw["bbox_regression"][0, idx], anchors[idx])
        for out, idx in zip(outputs, (origin, corner))
    ]
    torch.testing.assert_close(boxes[1], boxes[0] + 64.0, rtol=0, atol=1e-3)
    torch.testing.assert_close(outputs[1].raw["cls_logits"][0, corner], outputs[0].raw["cls_logits"][0, origin])


def test_detector_overfits_a_tiny_batch():
    torch.manual_seed(0)
    detector = patchwork_detector((1, 1), width_mult=0.35, num_classes=2).train()
    frames = torch.rand(2, 3, 64, 64)
    targets = [
        {"boxes": torch.tensor([[8.0, 8.0, 40.0, 36.0]]), "labels": torch.tensor([0])},
        {"boxes": torch.tensor([[20.0, 10.0, 60.0, 60.0], [2.0, 30.0, 20.0, 50.0]]), "labels": torch.tensor([1, 0])},
    ]
    optimizer = torch.optim.Adam(detector.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        out = detector(frames, torch.zeros(2, dtype=torch.long), detector.init_state(2, (64, 64)))
        loss = sum(detector.loss(out, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, losses[::10]


def test_frame_without_objects_is_valid_training_data():
    detector = patchwork_detector((2, 1), width_mult=0.35, num_classes=2).train()
    out = detector(torch.rand(2, 3, 64, 64), torch.tensor([1, 2]), detector.init_state(2, (64, 64)))
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    losses = detector.loss(out, [empty, empty])
    assert torch.isfinite(sum(losses.values()))


@torch.no_grad()
def test_streams_in_a_batch_are_independent():
    detector, _ = _pair((2, 1))
    video = torch.rand(3, 2, 3, 64, 64)
    actions = torch.tensor([[0, 3], [2, 2], [1, 0]])
    state = detector.init_state(2, (64, 64))
    batched, q_values = [], []
    for t in range(3):
        out = detector(video[t], actions[t], state)
        q_values.append(detector.policy_network(detector.observe(out)))  # before the next step updates the state
        state = out.state
        batched.append(out)
    for b in range(2):
        single = detector.init_state(1, (64, 64))
        for t in range(3):
            out = detector(video[t, b : b + 1], actions[t, b : b + 1], single)
            single = out.state
            torch.testing.assert_close(out.raw["cls_logits"][0], batched[t].raw["cls_logits"][b], rtol=1e-4, atol=1e-4)
            q = detector.policy_network(detector.observe(out))
            torch.testing.assert_close(q[0], q_values[t][b], rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_mirror_maps_default_boxes_onto_their_mirror_images():
    detector, _ = _pair((1, 1))
    anchors, mirror = detector._anchors_and_mirror((128, 96), torch.device("cpu"))
    mirrored = anchors[mirror]
    torch.testing.assert_close(mirrored[:, [0, 2]], 96.0 - anchors[:, [2, 0]], rtol=0, atol=1e-4)
    torch.testing.assert_close(mirrored[:, [1, 3]], anchors[:, [1, 3]])
    raw = {"cls_logits": torch.randn(1, len(anchors), 5), "bbox_regression": torch.randn(1, len(anchors), 4)}
    raw["image_size"] = (128, 96)
    twice = detector.mirror_raw(detector.mirror_raw(raw))
    assert torch.equal(twice["cls_logits"], raw["cls_logits"]) and torch.equal(twice["bbox_regression"], raw["bbox_regression"])


def test_stride16_tap_is_the_expansion_of_the_first_stride32_block():
    detector = patchwork_detector((4, 2), width_mult=1.0)
    assert detector.backbone.features.get_submodule(STRIDE16_TAP.removeprefix("features.")).out_channels == 576
    with pytest.raises(ValueError, match="100x128"):
        detector.init_state(1, (100, 128))


def test_decoding_across_classes_agrees_with_torchvision_ssd_when_few_candidates_clear_the_threshold():
    from types import SimpleNamespace

    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection.ssd import SSD

    from patchwork.models.ssd_parts import postprocess

    generator = torch.Generator().manual_seed(0)
    anchors_count, classes = 200, 5
    xy = torch.rand(anchors_count, 2, generator=generator) * 80
    anchors = torch.cat([xy, xy + 8 + torch.rand(anchors_count, 2, generator=generator) * 24], dim=1)
    logits = torch.randn(2, anchors_count, classes + 1, generator=generator) * 3
    logits[..., 0] += 6.0  # mostly background: a few dozen (box, class) pairs clear 0.3
    raw = {"cls_logits": logits, "bbox_regression": torch.randn(2, anchors_count, 4, generator=generator) * 0.5,
           "image_size": (96, 96)}
    coder = det_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    settings = dict(score_thresh=0.3, topk_candidates=100, nms_thresh=0.45, detections_per_img=40)
    ours = postprocess(raw, anchors, coder, **settings)
    candidates = (torch.softmax(logits, -1)[..., 1:] > settings["score_thresh"]).sum((1, 2))
    assert 0 < candidates.max() <= settings["topk_candidates"]  # the case where both must agree
    theirs = SSD.postprocess_detections(SimpleNamespace(box_coder=coder, **settings), raw, [anchors] * 2, [(96, 96)] * 2)
    for a, b in zip(ours, theirs):
        assert len(a["scores"]) > 3
        torch.testing.assert_close(a["boxes"], b["boxes"])
        torch.testing.assert_close(a["scores"], b["scores"])
        assert torch.equal(a["labels"], b["labels"] - 1)
    # Many candidates: at most topk_candidates pairs reach NMS, the best ones.
    few = postprocess(raw, anchors, coder, **{**settings, "score_thresh": 0.0, "topk_candidates": 7})
    assert all(len(d["scores"]) <= 7 for d in few)
    assert torch.equal(few[0]["scores"][0], torch.softmax(logits[0], -1)[:, 1:].max())
