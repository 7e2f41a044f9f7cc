"""int8 inference of the interleaved LFS model through PyTorch's quantization tooling (LFS Sec. 3.5).

The paper quantizes the whole model with TensorFlow's simulated quantization and fixes the
LSTM's ranges by hand. Here post-training static quantization (``torch.ao.quantization``,
FX graph mode, the ``x86`` backend's default per-channel qconfig; BatchNorm and ReLU6 are
fused into the convolutions by ``prepare_fx``) converts the convolutional parts to int8:

* f0's and f1's MobileNetV2 blocks,
* SSDLite's four extra maps and every box predictor.

Kept in float: the LSTM (its recurrent ``c`` and the sigmoid/ReLU6 gates would need the
paper's hand-fixed ranges; its cost is 2-3% of the f0 path), f1's input resize, the
flattening of the predictions and decoding. Each int8 part quantizes its float input and
dequantizes its output, so the model's interface and state stay float.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import Tensor, nn
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

from patchwork.models.lfs.detector import F0, F1, LookingFastSlowDetector


def _quantizable_parts(model: LookingFastSlowDetector) -> list[tuple[nn.Module, str]]:
    """``(parent, attribute)`` of every part converted to int8."""
    parts: list[tuple[nn.Module, str]] = [(model.f0, "features"), (model.f1, "features")]
    parts += [(model.extras.layers, str(i)) for i in range(len(model.extras.layers))]
    for head in (model.head.classification_head, model.head.regression_head):
        parts += [(head.module_list, str(i)) for i in range(len(head.module_list))]
    return parts


@torch.no_grad()
def quantize_lfs(model: LookingFastSlowDetector, calibration_frames: Tensor, backend: str = "x86") -> LookingFastSlowDetector:
    """An int8 copy of ``model`` (the original is not modified), calibrated on one stream.

    Args:
        model: the float interleaved detector.
        calibration_frames: ``(T, 3, H, W)`` consecutive frames in ``[0, 1]``; f0 and f1 run
            alternately on them so that both extractors and the head see data.
        backend: the quantized engine's qconfig (``"x86"``, or ``"qnnpack"`` on ARM).
    Returns:
        The quantized model in eval mode, with the same interface and state.
    """
    quantized = copy.deepcopy(model).eval()
    parts = _quantizable_parts(quantized)
    inputs: dict[int, list[Tensor]] = {i: [] for i in range(len(parts))}
    hooks = [
        getattr(parent, name).register_forward_pre_hook(lambda m, args, i=i: inputs[i].append(args[0].detach()))
        for i, (parent, name) in enumerate(parts)
    ]
    try:
        state = quantized.init_state(1, calibration_frames.shape[-2:], calibration_frames.device)
        for t, frame in enumerate(calibration_frames):
            action = torch.tensor([F0 if t % 2 == 0 else F1], device=frame.device)
            state = quantized(frame.unsqueeze(0), action, state).state
    finally:
        for hook in hooks:
            hook.remove()
    qconfig = get_default_qconfig_mapping(backend)
    with warnings.catch_warnings():
        # torch.ao.quantization's own deprecation notices (they point to torchao, not installed here).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", module=r"torch\.ao\.")
        for i, (parent, name) in enumerate(parts):
            prepared = prepare_fx(getattr(parent, name), qconfig, (inputs[i][0],))
            for example in inputs[i]:
                prepared(example)
            setattr(parent, name, convert_fx(prepared))
    return quantized
