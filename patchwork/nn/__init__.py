"""The core as pure tensor operations: window and block grids, action history, cells (one window or many
blocks), state, action spaces, FLOP counting, LFS's grouped LSTM."""

from patchwork.nn.action_history import ActionHistory
from patchwork.nn.block_grid import BlockGrid
from patchwork.nn.grouped_lstm import GroupedBottleneckLSTM, GroupedSeparableConv
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
    "GroupedBottleneckLSTM",
    "GroupedSeparableConv",
    "PatchworkCell",
    "PoolingCell",
    "StreamState",
    "WindowGrid",
    "WindowPlacement",
    "conv_context",
    "gather_windows",
    "scatter_windows",
]
