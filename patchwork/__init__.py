"""patchwork: efficient video object detection and segmentation with hard attention (Chai, ICCV 2019)."""

__version__ = "0.1.0"
