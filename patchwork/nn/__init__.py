"""The Patchwork core as pure tensor operations: window and block grids, action history, cells, state."""

from patchwork.nn.action_history import ActionHistory
from patchwork.nn.block_grid import BlockGrid
from patchwork.nn.patchwork_cell import ContextCell, FrameMemory, PatchworkCell, PoolingCell, conv_context
from patchwork.nn.stream_state import StreamState
from patchwork.nn.window_grid import NETWORK_STRIDE, WindowGrid
from patchwork.nn.window_ops import WindowPlacement, gather_windows, scatter_windows

__all__ = [
    "NETWORK_STRIDE",
    "ActionHistory",
    "BlockGrid",
    "ContextCell",
    "FrameMemory",
    "PatchworkCell",
    "PoolingCell",
    "StreamState",
    "WindowGrid",
    "WindowPlacement",
    "conv_context",
    "gather_windows",
    "scatter_windows",
]
