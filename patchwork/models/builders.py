"""One builder per paper configuration family (what the Hydra model configs instantiate)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models._utils import _make_divisible
from torchvision.ops.misc import Conv2dNormActivation

from patchwork.models.attention import AttentionQNetwork
from patchwork.models.detector import PatchworkDetector
from patchwork.models.lfs import (
    AdaptiveInterleavingQNetwork,
    LookingFastSlowDetector,
    MobileNetV2Extractor,
    large_extractor,
    small_extractor,
)
from patchwork.models.patchwork_model import PatchworkModel
from patchwork.models.segmenter import DeepLabLightHead, PatchworkSegmenter, os16_features
from patchwork.models.stateful_mobilenet import CellVariant, StatefulMobileNetV2
from patchwork.nn import GroupedBottleneckLSTM, WindowGrid

log = logging.getLogger(__name__)

#: torchvision's ImageNet checkpoint for mobilenet_v2 (width 1.0), as the hub caches it.
IMAGENET_WEIGHTS = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
#: The keys of mobilenet_v2's final 1x1 layer (to 1280 channels at width 1.0), after blocks 0..17.
MOBILENET_V2_FINAL_LAYER = "features.18."


def mobilenet_v2(width_mult: float = 1.0, weights: str | os.PathLike[str] | None = None) -> nn.Module:
    """torchvision's MobileNetV2, with ImageNet weights from a local file when asked. Never downloads.

    Args:
        width_mult: the width (``depth``) multiplier; the paper uses 1.0 and 1.4.
        weights: ``None`` (random init), ``"imagenet"`` (torchvision's checkpoint from the
            torch hub cache, ``$TORCH_HOME/hub/checkpoints``; if it is absent, a warning
            says so and the model trains from scratch), or the path of a ``state_dict``
            of ``mobilenet_v2`` (keys ``features.*``; a classifier is ignored).

    Below width 1.0 the last 1x1 layer is narrowed too (``1280 * width_mult`` channels), as
    in TensorFlow's MobileNetV2 that the paper used (slim's default
    ``finegrain_classification_mode=False``); torchvision keeps it at 1280, which would
    leave the detector's heads at full cost (Tab. 4, "SF depth=0.5": 602 MFLOPs).

    Raises:
        FileNotFoundError: ``weights`` is a path that does not exist.
    """
    model = torchvision.models.mobilenet_v2(width_mult=width_mult)
    if width_mult < 1.0:
        last = model.features[-1]
        narrowed = _make_divisible(last[0].out_channels * width_mult, 8)
        model.features[-1] = Conv2dNormActivation(
            last[0].in_channels, narrowed, kernel_size=1, norm_layer=nn.BatchNorm2d, activation_layer=nn.ReLU6
        )
        model.classifier[-1] = nn.Linear(narrowed, model.classifier[-1].out_features)
    features = mobilenet_v2_features_state(width_mult, weights)
    if features is not None:
        model.load_state_dict(features, strict=False)
    return model


def mobilenet_v2_features_state(
    width_mult: float, weights: str | os.PathLike[str] | None
) -> dict[str, torch.Tensor] | None:
    """The ``features.*`` entries of a local mobilenet_v2 ``state_dict`` (see :func:`mobilenet_v2`
    for ``weights``), or ``None`` when there is nothing to load. Never downloads."""
    if weights is None:
        return None
    if weights == "imagenet":
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(IMAGENET_WEIGHTS.url).name
        if width_mult != 1.0:
            log.warning("no ImageNet checkpoint exists for mobilenet_v2 width %s; training from scratch", width_mult)
            return None
        if not path.is_file():
            log.warning(
                "ImageNet weights for mobilenet_v2 not found at %s (nothing is downloaded); training from scratch. "
                "Put torchvision's %s there, or pass weights=PATH.",
                path,
                path.name,
            )
            return None
    else:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"mobilenet_v2 weights not found: {path} (expected a state_dict saved with torch.save)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    features = {k: v for k, v in state.items() if k.startswith("features.")}
    if not features:
        raise ValueError(f"{path} holds no 'features.*' keys of a torchvision mobilenet_v2 state_dict")
    log.info("loaded mobilenet_v2 weights from %s", path)
    return features


def mobilenet_v2_backbone_state(model: PatchworkModel) -> dict[str, torch.Tensor]:
    """A Patchwork detector's or segmenter's MobileNetV2 backbone as a torchvision ``mobilenet_v2``
    ``state_dict`` (keys ``features.*``): the inverse of building the backbone from torchvision's module.

    What :func:`mobilenet_v2` (``weights=PATH``) and the LFS extractors (``weights_f0``) load, so a
    trained single-frame model can initialise another network as ImageNet weights would. The
    stateful backbone keeps torchvision's module names (a :class:`~patchwork.nn.PatchworkCell` takes
    its conv's ``weight``), so every grid and cell variant maps one to one; a segmenter's backbone
    has the same tensors, only its last blocks ran dilated (output stride 16). Tensors are detached
    CPU copies.

    Raises:
        TypeError: ``model`` has no :class:`StatefulMobileNetV2` backbone.
        ValueError: the backbone's tensors are not those of ``mobilenet_v2(model.width_mult)`` (e.g.
            BatchNorm folded into the convs for inference); only the final 1x1 layer may be absent
            (a segmenter with ``final_layer=False``).
    """
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, StatefulMobileNetV2):
        raise TypeError(f"{type(model).__name__} has no StatefulMobileNetV2 backbone to export")
    state = {k: v.detach().cpu().clone() for k, v in backbone.state_dict().items() if k.startswith("features.")}
    reference = {k: v for k, v in mobilenet_v2(model.width_mult).state_dict().items() if k.startswith("features.")}
    missing = [k for k in reference if k not in state and not k.startswith(MOBILENET_V2_FINAL_LAYER)]
    unexpected = [k for k in state if k not in reference]
    misshapen = [k for k in state if k in reference and state[k].shape != reference[k].shape]
    if missing or unexpected or misshapen:
        raise ValueError(
            f"the backbone of {type(model).__name__} (width {model.width_mult:g}) does not map one to one onto "
            f"torchvision's mobilenet_v2 features (BatchNorm folded?): missing {missing[:4]}, "
            f"unexpected {unexpected[:4]}, other shapes {misshapen[:4]}"
        )
    return state


def _grid(grid: WindowGrid | tuple[int, int]) -> WindowGrid:
    return grid if isinstance(grid, WindowGrid) else WindowGrid(*grid)


def patchwork_detector(
    grid: WindowGrid | tuple[int, int] = (4, 2),
    width_mult: float = 1.0,
    num_classes: int = 30,
    cells: CellVariant = "all",
    weights: str | None = None,
    attention_hidden: int = 16,
    history_alpha: float = 0.5,
    **detector_options: object,
) -> PatchworkDetector:
    """The detector of Sec. 4.1 / Fig. 10 for one paper configuration.

    ``grid=(1, 1)`` is the single-frame SSDLite baseline (no cells, no attention);
    ``width_mult`` is the ``depth`` of Tab. 4; ``cells`` selects the Table 2 ablation.
    Remaining keyword arguments go to :class:`PatchworkDetector`.
    """
    grid = _grid(grid)
    backbone = StatefulMobileNetV2.from_torchvision(mobilenet_v2(width_mult, weights), grid, cells=cells)
    attention = None
    if grid.num_windows > 1:
        attention = AttentionQNetwork(backbone.out_channels, grid.num_windows, grid.slices, attention_hidden)
    return PatchworkDetector(
        backbone, num_classes, attention=attention, history_alpha=history_alpha, width_mult=width_mult,
        **detector_options,
    )


def patchwork_segmenter(
    grid: WindowGrid | tuple[int, int] = (4, 2),
    width_mult: float = 1.0,
    cells: CellVariant = "all",
    weights: str | None = None,
    head_channels: int = 256,
    attention_hidden: int = 16,
    history_alpha: float = 0.5,
    final_layer: bool = True,
) -> PatchworkSegmenter:
    """The segmenter of Sec. 4.2: MobileNetV2 at output stride 16 + DeepLabv3 light head, binary foreground.

    ``grid=(1, 1)`` is the single-frame baseline (no cells, no attention). ``final_layer``
    keeps MobileNetV2's final 1x1 conv (1280 channels at width 1.0, narrowed below it as
    :func:`mobilenet_v2` does), which the head then reads: the paper's backbone (Tab. 3)
    and what Tab. 5's MFLOPs count; ``False`` is TensorFlow DeepLab's ``MobileNetV2*``
    (the head reads the 320-channel last bottleneck).
    """
    grid = _grid(grid)
    features = os16_features(mobilenet_v2(width_mult, weights), final_layer)
    backbone = StatefulMobileNetV2(features, grid, cells=cells)
    attention = None
    if grid.num_windows > 1:
        attention = AttentionQNetwork(backbone.out_channels, grid.num_windows, grid.slices, attention_hidden)
    head = DeepLabLightHead(backbone.out_channels, head_channels)
    return PatchworkSegmenter(backbone, head, attention=attention, history_alpha=history_alpha, width_mult=width_mult)


def _lfs_extractor(
    width_mult: float, weights: str | os.PathLike[str] | None, small: bool, removed_strides: int
) -> MobileNetV2Extractor:
    extractor = (small_extractor if small else large_extractor)(
        torchvision.models.mobilenet_v2(width_mult=width_mult), removed_strides
    )
    features = mobilenet_v2_features_state(width_mult, weights)
    if features is not None:
        # The extractor keeps torchvision's blocks 0..17 (the final 1x1 layer is dropped).
        keys = extractor.features.state_dict().keys()
        blocks = {k.removeprefix("features."): v for k, v in features.items()}
        extractor.features.load_state_dict({k: v for k, v in blocks.items() if k in keys})
    return extractor


def looking_fast_slow_detector(
    num_classes: int = 30,
    image_size: tuple[int, int] = (320, 320),
    width_f0: float = 1.4,
    width_f1: float = 0.35,
    weights_f0: str | os.PathLike[str] | None = None,
    weights_f1: str | os.PathLike[str] | None = None,
    state_channels: int = 320,
    groups: int = 4,
    store_relu6_state: bool = False,
    pre_bottleneck_state: str = "group",
    extra_channels: tuple[int, ...] = (256, 256, 256, 256),
    adaptive_policy: bool = True,
    removed_strides_f0: int = 0,
    removed_strides_f1: int = 1,
    **detector_options: object,
) -> LookingFastSlowDetector:
    """Looking Fast and Slow's interleaved detector (Liu et al. 2019, Sec. 3.1-3.2; Tab. 2's models).

    f0: MobileNetV2 ``width_f0`` at ``image_size``; f1: MobileNetV2 ``width_f1`` on the frame
    resized to half, last stride removed; the grouped bottleneck LSTM (``state_channels``,
    ``groups``, ``store_relu6_state``, ``pre_bottleneck_state``: see
    :class:`~patchwork.nn.GroupedBottleneckLSTM`); SSDLite with ``extra_channels`` extra maps. ``weights_f0`` / ``weights_f1``:
    local torchvision ``mobilenet_v2`` ``state_dict`` files of the same widths (or
    ``"imagenet"`` at width 1.0), as :func:`mobilenet_v2`; nothing is downloaded. Remaining
    keyword arguments go to :class:`~patchwork.models.lfs.LookingFastSlowDetector`.
    ``adaptive_policy``: attach the adaptive interleaving Q-network (Sec. 3.4) as the model's
    policy network (trained by a policy stage; fixed interleaving does not read it).
    ``removed_strides_f0`` / ``removed_strides_f1``: how many of each extractor's last stride-2
    blocks run at stride 1 (the paper: 0 and 1; the quick profile 1 and 2, for 8 x 8 maps at 128 px).

    Raises:
        ValueError: ``image_size`` gives f0 and f1 maps of different sizes.
    """
    f0 = _lfs_extractor(width_f0, weights_f0, small=False, removed_strides=removed_strides_f0)
    f1 = _lfs_extractor(width_f1, weights_f1, small=True, removed_strides=removed_strides_f1)
    lstm = GroupedBottleneckLSTM(
        [f0.out_channels, f1.out_channels], state_channels, groups, store_relu6_state=store_relu6_state,
        pre_bottleneck_state=pre_bottleneck_state,
    )
    policy = AdaptiveInterleavingQNetwork(state_channels) if adaptive_policy else None
    return LookingFastSlowDetector(
        f0, f1, lstm, num_classes, image_size=image_size, extra_channels=extra_channels, policy=policy,
        **detector_options,
    )
