"""The shared frame normalisation of streaming models."""

import torch

from patchwork.models.streaming import IMAGENET_MEAN, IMAGENET_STD, normalize_frames

MEAN, STD = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def test_normalisation_by_hand():
    frames = MEAN.expand(1, 3, 2, 2).clone()
    frames[..., 0, 0] = 1.0
    out = normalize_frames(frames, MEAN, STD)
    assert torch.equal(out[..., 1:, :], torch.zeros(1, 3, 1, 2))
    assert torch.equal(out[0, :, 0, 0], (1.0 - MEAN.view(3)) / STD.view(3))


def test_channels_last_and_uint8_frames_give_the_same_bits_and_keep_their_layout():
    torch.manual_seed(0)
    pixels = torch.randint(0, 256, (2, 3, 9, 7), dtype=torch.uint8)
    reference = (pixels.float() / 255.0 - MEAN) / STD
    for frames in (pixels, pixels.float() / 255.0):
        channels_last = frames.contiguous(memory_format=torch.channels_last)
        out = normalize_frames(channels_last, MEAN, STD)
        assert torch.equal(out, reference)
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(normalize_frames(frames, MEAN, STD), reference)
