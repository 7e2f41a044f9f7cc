"""BlockCopy (Verelst and Tuytelaars, ICCV 2021): block-sparse execution with feature transfer, policy network."""

from patchwork.models.blockcopy.model import BlockCopyModel, paint_detections
from patchwork.models.blockcopy.network import FRAME_STATE, BlockCopyNetwork
from patchwork.models.blockcopy.ops import Handling
from patchwork.models.blockcopy.plan import ConversionError
from patchwork.models.blockcopy.policy_net import PolicyNet

__all__ = ["FRAME_STATE", "BlockCopyModel", "BlockCopyNetwork", "ConversionError", "Handling", "PolicyNet", "paint_detections"]
