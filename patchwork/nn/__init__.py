"""The Patchwork core as pure tensor operations: window grid, action history, cells, state, LFS's grouped LSTM."""

from patchwork.nn.action_history import ActionHistory
from patchwork.nn.grouped_lstm import GroupedBottleneckLSTM, GroupedSeparableConv
from patchwork.nn.patchwork_cell import FrameMemory, PatchworkCell, conv_context
from patchwork.nn.stream_state import StreamState
from patchwork.nn.window_grid import NETWORK_STRIDE, WindowGrid
from patchwork.nn.window_ops import WindowPlacement, gather_windows, scatter_windows

__all__ = [
    "NETWORK_STRIDE",
    "ActionHistory",
    "FrameMemory",
    "GroupedBottleneckLSTM",
    "GroupedSeparableConv",
    "PatchworkCell",
    "StreamState",
    "WindowGrid",
    "WindowPlacement",
    "conv_context",
    "gather_windows",
    "scatter_windows",
]
