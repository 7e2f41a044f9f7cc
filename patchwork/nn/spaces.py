"""Action spaces as data (in the manner of gymnasium's spaces): what one stream's action is.

A streaming model declares its action space; policies, replay, the stream runner,
evaluation storage, cost and reports read actions through it and never assume a shape:

* Patchwork: ``Discrete((M - N + 1) ** 2)``, the window a stream looks at (Chai 2019, Sec. 3.1).
* Looking Fast and Slow: ``Discrete(2)``, the extractor that runs (0 = large f0, 1 = small f1;
  Liu et al. 2019, Sec. 3.3).
* BlockCopy: ``MultiBinary(block_size)``, one execute/transfer decision per block, shape
  ``(H // block_size, W // block_size)`` (Verelst and Tuytelaars 2021, Sec. 3.2).

A single-frame model has no action space (``None``): there is nothing to choose.

**First action.** A stream's first frame has no observation for a policy to read. The space
says what happens then (``first``): ``"random"`` draws one action uniformly from a
generator seeded per video (Patchwork: a random first window), a number or ``True`` is a
fixed action (LFS: f0; BlockCopy: every block executes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def _rng_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


@dataclass(frozen=True)
class Discrete:
    """``n`` exclusive choices per stream; an action is a LongTensor ``(B,)`` in ``[0, n)``.

    Args:
        n: number of actions.
        first: the first frame's action: ``"random"`` or a fixed index.
        layout: ``(rows, cols)`` when the actions are places arranged row-major on the frame
            (Patchwork's windows), for policies that move between neighbours (scanning).
    """

    n: int
    first: str | int = "random"
    layout: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"Discrete needs n >= 1, got {self.n}")
        if self.first != "random" and not 0 <= int(self.first) < self.n:
            raise ValueError(f"Discrete(n={self.n}) first action must be 'random' or in [0, {self.n}), got {self.first!r}")
        if self.layout is not None and self.layout[0] * self.layout[1] != self.n:
            raise ValueError(f"layout {self.layout} does not hold {self.n} actions")

    dtype = torch.long

    def shape(self, image_size: tuple[int, int]) -> tuple[int, ...]:
        """One stream's action shape: ``()``."""
        return ()

    def sample(
        self, batch_size: int, image_size: tuple[int, int], generator: torch.Generator | None = None
    ) -> Tensor:
        """Uniform actions, LongTensor ``(B,)`` on the generator's device."""
        return torch.randint(self.n, (batch_size,), generator=generator, device=_rng_device(generator))

    def fixed_first(self, batch_size: int, image_size: tuple[int, int]) -> Tensor:
        """``(B,)`` filled with ``first`` (only when ``first`` is not ``"random"``)."""
        return torch.full((batch_size,), int(self.first), dtype=torch.long)


@dataclass(frozen=True)
class MultiBinary:
    """One binary decision per ``block_size``-pixel block; an action is a BoolTensor ``(B, H // bs, W // bs)``.

    Args:
        block_size: the side of a block in pixels; the action's shape follows the image size.
        first: the first frame's action: ``True`` (every block), ``False`` or ``"random"``.
    """

    block_size: int
    first: str | bool = True

    dtype = torch.bool

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"MultiBinary needs block_size >= 1, got {self.block_size}")

    def shape(self, image_size: tuple[int, int]) -> tuple[int, ...]:
        """``(H // block_size, W // block_size)``; sides must be multiples of the block size."""
        height, width = int(image_size[0]), int(image_size[1])
        if height % self.block_size or width % self.block_size:
            raise ValueError(
                f"image size {height}x{width} is not a whole number of {self.block_size}-pixel blocks"
            )
        return height // self.block_size, width // self.block_size

    def sample(
        self, batch_size: int, image_size: tuple[int, int], generator: torch.Generator | None = None
    ) -> Tensor:
        """Independent fair coins, BoolTensor ``(B, *shape)`` on the generator's device."""
        shape = (batch_size, *self.shape(image_size))
        return torch.rand(shape, generator=generator, device=_rng_device(generator)) < 0.5

    def fixed_first(self, batch_size: int, image_size: tuple[int, int]) -> Tensor:
        """``(B, *shape)`` filled with ``first`` (only when ``first`` is not ``"random"``)."""
        return torch.full((batch_size, *self.shape(image_size)), bool(self.first), dtype=torch.bool)


ActionSpace = Discrete | MultiBinary


def first_actions(
    space: ActionSpace, videos: Tensor, image_size: tuple[int, int], seed: int
) -> Tensor:
    """The first frame's actions of streams playing ``videos`` (LongTensor ``(B,)`` of video indices).

    A ``"random"`` first action is drawn from a generator seeded by ``(seed, video)`` alone, so a
    video starts the same way whichever videos share its batch.
    """
    if space.first != "random":
        return space.fixed_first(videos.shape[0], image_size)
    seeds = (int(seed) * 1_000_003 + 7919 * (videos.long().cpu() + 1)).tolist()
    return torch.cat([space.sample(1, image_size, torch.Generator().manual_seed(s)) for s in seeds])
