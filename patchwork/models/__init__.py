"""Networks: the stateful MobileNetV2 backbone and the models built on it."""

from patchwork.models.stateful_mobilenet import StatefulMobileNetV2

__all__ = ["StatefulMobileNetV2"]
