"""int8 LFS (Sec. 3.5 "+ Quantization"): int8 parts, float LSTM, outputs close to the float model."""

import pytest
import torch
from lfs_fixtures import TINY_SIZE, tiny_lfs

from patchwork.models.lfs import F0, F1
from patchwork.models.lfs.detector import C, H
from patchwork.models.lfs.quantization import quantize_lfs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _scaled_model():
    """A tiny model whose BatchNorm statistics are estimated on random frames, so that every
    layer's activations have the unit scale of a trained network (freshly initialised
    MobileNetV2 shrinks them ~10x per stage, below any 8-bit resolution)."""
    model = tiny_lfs(seed=2, adaptive_policy=False)  # the interleaving policy is not quantized
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        for _ in range(2):
            state = model.init_state(4)
            for actions in ([F0, F0, F1, F1], [F1, F0, F0, F1]):
                state = model(torch.rand(4, 3, *TINY_SIZE), torch.tensor(actions), state).state
    return model.eval()


@torch.no_grad()
def test_int8_parts_match_their_float_parts_and_the_state_semantics_hold():
    model = _scaled_model()
    torch.manual_seed(1)
    quantized = quantize_lfs(model, torch.rand(4, 3, *TINY_SIZE))
    int8 = [m for m in quantized.modules() if isinstance(m, torch.ao.nn.quantized.Conv2d)]
    assert len(int8) > 50
    assert not any(isinstance(m, torch.ao.nn.quantized.Conv2d) for m in quantized.lstm.modules())
    assert not any(isinstance(m, torch.ao.nn.quantized.Conv2d) for m in model.modules())  # a copy
    # Shallow int8 parts (extra maps: 3 convolutions, box predictors: 2) within 15% of float on their inputs.
    # (A randomly initialised 17-block MobileNetV2 amplifies any perturbation with depth, so
    # end-to-end int8 accuracy can only be judged with trained weights, by mAP.)
    frames = torch.rand(2, 3, *TINY_SIZE)
    state = model(frames, None, model.init_state(2)).state
    memory_output, _ = model.remember(model.normalize(frames), torch.tensor([F0, F1]), state)
    x = memory_output
    for float_layer, int8_layer in zip(model.extras.layers, quantized.extras.layers):
        expected = float_layer(x)
        assert ((int8_layer(x) - expected).norm() / expected.norm()) < 0.15
        x = expected
    maps = [memory_output, *model.extras(memory_output)]
    for head in ("classification_head", "regression_head"):
        float_blocks = getattr(model.head, head).module_list
        int8_blocks = getattr(quantized.head, head).module_list
        for feature, float_block, int8_block in zip(maps, float_blocks, int8_blocks):
            expected = float_block(feature)
            assert ((int8_block(feature) - expected).norm() / expected.norm()) < 0.15
    # The interleaving semantics are untouched: f1 keeps the memory, outputs are decoded.
    out = quantized(frames, torch.tensor([F0, F1]), state)
    assert torch.equal(out.state[C][1], state[C][1]) and torch.equal(out.state[H][1], state[H][1])
    assert not torch.equal(out.state[C][0], state[C][0])
    assert len(out.predictions) == 2
