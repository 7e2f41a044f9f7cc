"""The rows of the paper's Tables 4 and 5 (supplementary Sec. C) as data.

Each row names the method the way the paper does, gives the paper's figures, and says
how to build it: the base configuration (grid, width) and the baseline wrapper options.
``scripts/flops.py`` builds every row and measures its MFLOPs with the project's own
accounting; evaluation fills in the accuracy columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PaperRow:
    """One row of Tab. 4 (detection, ImageNet VID) or Tab. 5 (segmentation, DAVIS 2016).

    Attributes:
        task: ``"detection"`` or ``"segmentation"``.
        method: the paper's label, e.g. ``"SF interval=4, delay=3"``.
        grid: ``(M, N)``; ``(1, 1)`` for single-frame rows.
        width: the width multiplier (``depth``).
        interval, delay: keyframe options (1 and 0: every frame, no delay).
        area: the ``resolution`` option, image area relative to the input.
        flip: also run the mirrored frame and average.
        paper: the paper's figures: ``mflops_max``, ``mflops_avg`` and the accuracy
            (``mAP`` for detection; ``J`` and ``F`` for segmentation), in percent.
    """

    task: str
    method: str
    grid: tuple[int, int] = (1, 1)
    width: float = 1.0
    interval: int = 1
    delay: int = 0
    area: float = 1.0
    flip: bool = False
    paper: dict[str, float] = field(default_factory=dict)


def _det(method: str, mflops: tuple[float, float], map50: float, **options: object) -> PaperRow:
    return PaperRow("detection", method, paper={"mflops_max": mflops[0], "mflops_avg": mflops[1], "mAP": map50}, **options)


def _seg(method: str, mflops: tuple[float, float], j: float, f: float, **options: object) -> PaperRow:
    paper = {"mflops_max": mflops[0], "mflops_avg": mflops[1], "J": j, "F": f}
    return PaperRow("segmentation", method, paper=paper, **options)


#: Supplementary Tab. 4 (ImageNet VID, 384x384).
TABLE4 = [
    _det("Single-frame (SF)", (2047, 2047), 54.7),
    _det("SF interval=4", (2047, 512), 53.4, interval=4),
    _det("SF interval=16", (2047, 128), 45.7, interval=16),
    _det("Patchwork M=4, N=2, depth=1.4, flip", (1945, 1945), 58.7, grid=(4, 2), width=1.4, flip=True),
    _det("Patchwork M=4, N=2, depth=1.4", (973, 973), 57.4, grid=(4, 2), width=1.4),
    _det("SF depth=0.5", (602, 602), 47.2, width=0.5),
    _det("SF resolution=0.25", (512, 512), 46.8, area=0.25),
    _det("SF interval=4, delay=3", (512, 128), 49.3, interval=4, delay=3),
    _det("Patchwork M=4, N=2", (543, 543), 54.3, grid=(4, 2)),
    _det("SF interval=16, delay=15", (128, 8), 34.3, interval=16, delay=15),
    _det("Patchwork M=4, N=1", (162, 162), 41.6, grid=(4, 1)),
]

#: Supplementary Tab. 5 (DAVIS 2016, 384x384).
TABLE5 = [
    _seg("Single-frame (SF)", (3307, 3307), 63.6, 59.5),
    _seg("SF interval=4", (3307, 827), 55.8, 47.9, interval=4),
    _seg("SF interval=16", (3307, 207), 40.5, 31.7, interval=16),
    _seg("SF depth=0.5", (1240, 1240), 58.4, 55.2, width=0.5),
    _seg("SF resolution=0.25", (827, 827), 56.6, 50.8, area=0.25),
    _seg("SF interval=4, delay=3", (827, 207), 44.6, 34.1, interval=4, delay=3),
    _seg("Patchwork M=4, N=2", (841, 841), 62.1, 58.8, grid=(4, 2)),
    _seg("SF interval=16, delay=15", (207, 52), 27.5, 20.8, interval=16, delay=15),
    _seg("Patchwork M=4, N=1", (221, 221), 42.2, 36.9, grid=(4, 1)),
]


@dataclass(frozen=True)
class LfsPaperRow:
    """One Looking Fast and Slow row of its Tab. 2 (ImageNet VID, 320 x 320).

    Attributes:
        method: our label, e.g. ``"LFS interleaved tau=9"``.
        tau: f0 once every ``tau + 1`` frames; 0 is f0 only, ``None`` f1 only.
        asynchronous: f0 runs beside f1 (Sec. 3.5); the frame waits for the f1 path only.
        paper: ``mflops_max``, ``mflops_avg`` (2 x the paper's MACs) and ``mAP`` in percent.
            Tab. 2 lists one MAC figure per row: the amortised one (190 M interleaved), and for
            async "84 (190)", per frame (f1 path) and amortised. The interleaved row's max is
            the f0 frame, i.e. the f0-only figure.
    """

    method: str
    tau: int | None
    asynchronous: bool = False
    paper: dict[str, float] = field(default_factory=dict)


def _lfs(method: str, macs: tuple[float, float], map50: float, **options: object) -> LfsPaperRow:
    paper = {"mflops_max": 2 * macs[0], "mflops_avg": 2 * macs[1], "mAP": map50}
    return LfsPaperRow(method, paper=paper, **options)


#: LFS Tab. 2 rows (the COCO-trained models; MACs: f0 1153 M, f1 84 M, interleaved 190 M).
LFS_TABLE2 = [
    _lfs("LFS f0 only", (1153, 1153), 63.9, tau=0),
    _lfs("LFS f1 only", (84, 84), 30.6, tau=None),
    _lfs("LFS interleaved tau=9", (1153, 190), 61.4, tau=9),
    _lfs("LFS interleaved async tau=9", (84, 190), 60.4, tau=9, asynchronous=True),
]


def comparison_row(task: str, method: str, mflops_max: float, mflops_avg: float, paper: dict) -> dict[str, object]:
    """One row of a cost table beside the paper's: ``task, method, mflops_max, mflops_avg,
    paper_mflops_max, paper_mflops_avg``."""
    return {"task": task, "method": method, "mflops_max": mflops_max, "mflops_avg": mflops_avg,
            "paper_mflops_max": paper["mflops_max"], "paper_mflops_avg": paper["mflops_avg"]}
