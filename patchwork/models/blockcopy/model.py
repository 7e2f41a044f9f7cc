"""BlockCopy as a streaming model (Verelst and Tuytelaars, ICCV 2021): a single-frame task network run
block-sparse with feature transfer, and the policy network that chooses the executed blocks.

The roles of the shared harness (DESIGN section 9):

* action space ``MultiBinary(block_size, first=True)``: one execute/transfer decision per block,
  every block on a video's first frame (Sec. 3.2);
* observation: the frame state ``H_t`` (per block, the frame it last executed on), the output
  ``O_t`` (per-class probability maps) and the execution grid ``A_t``; the policy network also
  reads the incoming frame ``I_{t+1}`` (:meth:`BlockCopyModel.policy_input`), Eq. 2 / Fig. 4;
* policy network: :class:`~patchwork.models.blockcopy.policy_net.PolicyNet`, one logit per block;
* predictions: the task model's own decoding of the full-frame outputs, so evaluation scores a
  BlockCopy model exactly as it scores the task model.

The target cost ``tau`` is an attribute of the model (``target_cost``): the policy network is part
of the model and is trained for one ``tau``, so a checkpoint names the ``tau`` its policy learnt
(its label, "BlockCopy tau=0.5") and the reward of a run reads the same value from the model's
config (``reward.target: ${model.target_cost}``) rather than keeping a second copy.

Weights: the model's ``state_dict`` is the task model's (same keys) plus ``policy_net.*``, so a
stage-1 checkpoint of the task model loads into it as it is and only the policy is new.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from patchwork.models.blockcopy.network import BlockCopyNetwork
from patchwork.models.blockcopy.policy_net import PolicyNet
from patchwork.models.blockcopy.profiling import POLICY, part
from patchwork.models.streaming import (
    Description,
    StepOutput,
    StreamingModel,
)
from patchwork.nn import BlockGrid, StreamState
from patchwork.nn.spaces import MultiBinary

#: State key of the previous execution grid ``A_t`` ``(B, H // bs, W // bs)`` bool.
EXECUTED = "executed"
#: The task network's weights live in the converted network's traced module (same paths as the task model).
_NETWORK = "network.module."
_POLICY = "policy_net."
#: Detections painted into the previous-output maps must score at least this (a few dozen boxes).
OUTPUT_MIN_SCORE = 0.1


def paint_detections(
    boxes: Tensor, scores: Tensor, labels: Tensor, num_classes: int, image_size: tuple[int, int],
    size: tuple[int, int],
) -> Tensor:
    """One stream's detections as per-class score maps ``(K, h, w)`` at ``size = (h, w)`` (Fig. 4's ``O_t``).

    A cell of the ``h x w`` grid over the ``image_size = (H, W)`` frame lies in box ``(x1, y1, x2, y2)``
    (pixels) when its centre does; it takes the highest score of the boxes of each class over it.
    """
    height, width = size
    maps = torch.zeros(num_classes, height * width, dtype=torch.float32, device=scores.device)
    if boxes.shape[0]:
        ys = (torch.arange(height, device=boxes.device) + 0.5) * (image_size[0] / height)  # (h,) centres in pixels
        xs = (torch.arange(width, device=boxes.device) + 0.5) * (image_size[1] / width)
        x1, y1, x2, y2 = boxes.float().unbind(1)
        inside_y = (ys[None] >= y1[:, None]) & (ys[None] < y2[:, None])  # (N, h)
        inside_x = (xs[None] >= x1[:, None]) & (xs[None] < x2[:, None])  # (N, w)
        values = (inside_y[:, :, None] & inside_x[:, None, :]).flatten(1).float() * scores.float()[:, None]
        index = labels.long()[:, None].expand(-1, height * width)
        maps.scatter_reduce_(0, index, values, "amax", include_self=True)
    return maps.view(num_classes, height, width)


class BlockCopyModel(StreamingModel):
    """A single-frame task model run by BlockCopy under a learnt block-execution policy.

    Args:
        task_model: the project's single-frame detector or segmenter (anything with
            ``forward_dense`` on normalised frames, ``predict``, ``loss``, ``empty_prediction`` and
            ``task``), e.g. a stage-1 checkpoint's model. It is converted (copied) by
            :class:`BlockCopyNetwork`; the copy is what runs and what holds the weights.
        block_size: ``bs`` in pixels, a multiple of the task network's stride (32).
        target_cost: ``tau``, the executed fraction the policy was trained for (see the module docstring).
        policy_width, policy_head_layers: :class:`PolicyNet`'s ``width`` and ``head_layers``.

    I/O contract (``B`` streams, frames ``(B, 3, H, W)`` in ``[0, 1]``, sides multiples of ``bs``)::

        state = model.init_state(B, (H, W))
        out = model(frames, actions, state)   # actions: bool (B, H // bs, W // bs), True = execute
        out.raw                                # the task model's raw outputs for the full frame
        out.predictions                        # eval: the task model's predictions
        logits = model.policy_network(model.policy_input(model.observe(out), next_frames))
    """

    def __init__(
        self,
        task_model: StreamingModel,
        block_size: int = 64,
        target_cost: float = 0.5,
        policy_width: float = 1.0,
        policy_head_layers: int = 3,
        width_mult: float | None = None,
    ) -> None:
        super().__init__()
        if not hasattr(task_model, "forward_dense"):
            raise TypeError(f"{type(task_model).__name__} has no forward_dense (the stateless network to convert)")
        if not 0.0 <= target_cost <= 1.0:
            raise ValueError(f"target cost tau must lie in [0, 1], got {target_cost}")
        self.task = task_model.task
        self.grid = BlockGrid(block_size)
        self.action_space = MultiBinary(block_size, first=True)
        self.target_cost = float(target_cost)
        self.width_mult = float(width_mult if width_mult is not None else getattr(task_model, "width_mult", 1.0))
        self.network = BlockCopyNetwork.from_module(task_model, self.grid, method="forward_dense")
        # The task model decodes and scores the network's outputs (anchors, box coding, NMS, losses);
        # it is not a submodule: its own weights never run and are not the model's.
        self.__dict__["decoder"] = task_model
        if self.task == "detection":
            self.num_classes = int(task_model.num_classes)
        self.output_channels = self.num_classes if self.task == "detection" else 1
        self.policy_net = PolicyNet(block_size, self.output_channels, width=policy_width,
                                    head_layers=policy_head_layers)
        self.register_imagenet_normalization()
        self._register_state_dict_hook(_task_keys)
        self._register_load_state_dict_pre_hook(_network_keys)

    # ----------------------------------------------------------------- state

    def check_image_size(self, image_size: tuple[int, int]) -> None:
        self.grid.check_image_size(image_size)

    def init_state(
        self, batch_size: int, image_size: tuple[int, int], device: torch.device | str | None = None
    ) -> StreamState:
        """The network's memories (one per padded op, densified values, frame state) and the execution grid."""
        device = self.pixel_mean.device if device is None else device
        state = self.network.init_state(batch_size, image_size, device)
        state[EXECUTED] = self.grid.full_mask(batch_size, image_size, device)
        return state

    # ------------------------------------------------------------------ step
    def forward_raw(self, frames: Tensor, actions: Tensor | None, state: StreamState) -> StepOutput:
        """Execute the blocks of ``actions`` (``None``: all, the dense pass) on frames in ``[0, 1]``."""
        image_size = (frames.shape[-2], frames.shape[-1])
        normalized = self.normalize(frames)
        if actions is None:
            actions = self.grid.full_mask(frames.shape[0], image_size, frames.device)
        actions = actions.to(device=frames.device, dtype=torch.bool)
        if bool(actions.all()):  # every block: the dense pass is the same and cheaper to run
            out, state = self.network.forward_full(normalized, state)
        else:
            out, state = self.network(normalized, actions, state)
        state[EXECUTED] = actions
        raw = dict(out)
        raw["image_size"] = image_size
        return StepOutput(raw, state)

    def predict(self, out: StepOutput, min_score: float | None = None) -> list[dict[str, Tensor]]:
        """The task model's predictions of the full-frame outputs."""
        return self.decoder.predict(out, min_score)

    def loss(self, out: StepOutput, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """The task model's losses (training the task network through the converted one)."""
        return self.decoder.loss(out, targets)

    def empty_prediction(self, image_size: tuple[int, int], device: torch.device | str) -> dict[str, Tensor]:
        return self.decoder.empty_prediction(image_size, device)

    # --------------------------------------------------------------- policy
    def observe(self, out: StepOutput) -> dict[str, Tensor]:
        """``{"frame_state" (B, 3, H, W), "output" (B, K, h, w), "executed" (B, H // bs, W // bs)}``.

        ``output`` is the per-class probability maps at the policy's input resolution: detections
        painted by score (:func:`paint_detections`), or the segmenter's foreground probability.
        Built only for the policy network, so its time counts as the policy's (Tab. 3).
        """
        with part(POLICY):
            return self._observe(out)

    def _observe(self, out: StepOutput) -> dict[str, Tensor]:
        image_size = tuple(out.raw["image_size"])
        executed = out.state[EXECUTED]
        size = self.policy_net.input_size(image_size)
        if self.task == "detection":
            predictions = out.predictions if out.predictions is not None else self.predict(out, OUTPUT_MIN_SCORE)
            output = torch.stack([
                paint_detections(p["boxes"][keep], p["scores"][keep], p["labels"][keep], self.num_classes,
                                 image_size, size)
                for p in predictions for keep in [p["scores"] >= OUTPUT_MIN_SCORE]
            ])
        else:
            output = torch.sigmoid(out.raw["logits"].detach())
        return {"frame_state": self.network.frame_state(out.state), "output": output, "executed": executed}

    def policy_input(self, observation: dict[str, Tensor], frames: Tensor) -> dict[str, Tensor]:
        """The observation and the frame about to run, normalised as the frame state is."""
        with part(POLICY):
            return {**observation, "frames": self.normalize(frames)}

    @property
    def policy_network(self) -> nn.Module:
        """``policy_input`` dict -> execution logits ``(B, H // bs, W // bs)``."""
        return _PolicyOnObservation(self.policy_net)

    def policy_parameters(self) -> list[nn.Parameter]:
        return list(self.policy_net.parameters())

    # ------------------------------------------------------------ reporting
    def describe(self) -> Description:
        """``"BlockCopy tau=0.5"`` with the block size and target cost as fields."""
        return Description("BlockCopy", (f"tau={self.target_cost:g}",),
                           {"tau": self.target_cost, "block_size": self.grid.block_size, "depth": self.width_mult})

    def action_statistics(self, actions: Tensor) -> dict[str, float]:
        """``{"actions/executed_fraction": share of the blocks executed}`` over ``actions (..., h, w)``
        (the paper's cost ``C_t`` averaged over frames, Eq. 10)."""
        return {"actions/executed_fraction": float(actions.float().mean())} if actions.numel() else {}

    def action_overlay(self, actions: Tensor, image_size: tuple[int, int],
                       state: StreamState | None = None) -> dict[str, Any]:
        """The executed blocks ``(H // bs, W // bs)`` bool of one stream."""
        return {"blocks": actions.bool()}

    def memory_image(self, state: StreamState) -> tuple[str, Tensor] | None:
        """The frame state: per block, the frame it last executed on."""
        return "frame_state", self.network.frame_state(state)


class _PolicyOnObservation(nn.Module):
    """The policy network called on the observation dict (what the stream runner passes)."""

    def __init__(self, policy_net: PolicyNet) -> None:
        super().__init__()
        self.policy_net = policy_net

    def forward(self, observation: dict[str, Tensor]) -> Tensor:
        with part(POLICY):
            return self.policy_net(observation["frames"], observation["frame_state"], observation["output"],
                                   observation["executed"])


def _task_keys(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """``state_dict`` hook: the converted network's weights under the task model's own keys."""
    for key in [k for k in state_dict if k.startswith(prefix + _NETWORK)]:
        state_dict[prefix + key[len(prefix + _NETWORK):]] = state_dict.pop(key)


def _network_keys(state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """``load_state_dict`` pre-hook: task-model keys (a stage-1 checkpoint's too) into the converted network."""
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(prefix + _POLICY)
                and not k.startswith(prefix + "network.")]:
        state_dict[prefix + _NETWORK + key[len(prefix):]] = state_dict.pop(key)
