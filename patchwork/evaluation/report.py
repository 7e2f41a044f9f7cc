"""Paper-style tables (Markdown, CSV, JSON) and figures (PNG) from evaluation rows.

Input everywhere is the list of raw rows :func:`patchwork.evaluation.rows.evaluate_method`
returns (numbers in their units: MFLOPs, ms, metrics in percent). The builders turn them into
:class:`Table` s shaped like the paper's:

- :func:`paper_table`: supplementary Tab. 4 (detection) / Tab. 5 (segmentation): method,
  MFLOPs max and avg, ms max as "p95 / p99", ms avg as "mean ± std", mAP or J and F.
- :func:`policy_table`: Tab. 1, attention policies (M, N, policy, MFLOPs, metric).
- :func:`cells_table`: Tab. 2, policy x Patchwork cell yes/no (metric).

:func:`write_table` writes each as ``<stem>.md``, ``<stem>.csv`` and ``<stem>.json``;
:func:`read_table` reads the CSV or JSON back. Figures: :func:`plot_latency_accuracy`
(Figs. 5-8: accuracy against theoretical max MFLOPs or empirical p95 ms, one series per
method family: single-frame variants, Patchwork, LFS, BlockCopy) and :func:`render_strip` /
:func:`save_strip` (Fig. 4: consecutive frames with the attention window in red and the
predictions, drawn by :mod:`patchwork.render`). :func:`write_report` writes the tables and
figures of one task's rows at once.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in tests
import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor  # noqa: E402
from torchvision.io import write_png  # noqa: E402

from patchwork.evaluation.tables import markdown_table, write_json  # noqa: E402
from patchwork.render import hstack, render_stream_frame  # noqa: E402

PathLike = str | os.PathLike


# --------------------------------------------------------------------------- labels
def metric_columns(rows: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """``("mAP",)`` for detection rows, ``("J", "F")`` for segmentation rows."""
    tasks = {row["task"] for row in rows}
    if len(tasks) != 1:
        raise ValueError(f"a table holds one task's rows, got {sorted(tasks)}")
    return ("mAP",) if tasks == {"detection"} else ("J", "F")


# --------------------------------------------------------------------------- tables
@dataclass
class Table:
    """A table: a title, its column names and one dict per row (cells are numbers or strings)."""

    title: str
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def markdown(self, floats: str = ".1f") -> str:
        """GitHub Markdown, preceded by the title in bold."""
        return f"**{self.title}**\n\n" + markdown_table(self.rows, self.columns, floats)


def _round(value: float, digits: int = 1) -> float:
    return round(float(value), digits)


def metric_headers(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> list[str]:
    """Each metric's column, followed by ``"<metric> 95% CI"`` when any row has its bootstrap interval."""
    headers = []
    for metric in metrics:
        headers.append(metric)
        if any(f"{metric}_low" in row for row in rows):
            headers.append(f"{metric} 95% CI")
    return headers


def metric_cells(row: Mapping[str, Any], headers: Sequence[str]) -> dict[str, Any]:
    """The cells of :func:`metric_headers`: metrics rounded, intervals as ``"[low, high]"`` (``-`` without one)."""
    cells: dict[str, Any] = {}
    for header in headers:
        metric = header.removesuffix(" 95% CI")
        if metric == header:
            cells[header] = _round(row[metric])
        elif f"{metric}_low" in row:
            cells[header] = f"[{row[f'{metric}_low']:.1f}, {row[f'{metric}_high']:.1f}]"
        else:
            cells[header] = "-"
    return cells


def _ms_max(row: Mapping[str, Any], prefix: str = "ms") -> str:
    return f"{row[f'{prefix}_p95']:.1f} / {row[f'{prefix}_p99']:.1f}"


def _ms_avg(row: Mapping[str, Any], prefix: str = "ms") -> str:
    return f"{row[f'{prefix}_mean']:.1f} ± {row[f'{prefix}_std']:.1f}"


def paper_table(rows: Sequence[Mapping[str, Any]], title: str | None = None, coco_extra: bool = True) -> Table:
    """Tab. 4 / Tab. 5: ``Method | MFLOPs max | MFLOPs avg | ms max (p95 / p99) | ms avg (mean ± std) | mAP``
    (or ``J | F``).

    GPU latency columns are added when any row has ``gpu_ms_*``; for detection the COCO AP50
    (``AP50 (COCO, extra)``) when ``coco_extra``. Numbers are rounded to one decimal.
    """
    metrics = metric_columns(rows)
    detection = metrics == ("mAP",)
    gpu = any("gpu_ms_p95" in row for row in rows)
    columns = ["Method", "MFLOPs max", "MFLOPs avg", "ms max (p95 / p99)", "ms avg (mean ± std)"]
    if gpu:
        columns += ["GPU ms max (p95 / p99)", "GPU ms avg (mean ± std)"]
    headers = metric_headers(rows, metrics)
    columns += headers
    if detection and coco_extra:
        columns.append("AP50 (COCO, extra)")
    table = []
    for row in rows:
        cells = {
            "Method": row["method"],
            "MFLOPs max": _round(row["mflops_max"]),
            "MFLOPs avg": _round(row["mflops_avg"]),
            "ms max (p95 / p99)": _ms_max(row),
            "ms avg (mean ± std)": _ms_avg(row),
        }
        if gpu:
            has = "gpu_ms_p95" in row
            cells["GPU ms max (p95 / p99)"] = _ms_max(row, "gpu_ms") if has else "-"
            cells["GPU ms avg (mean ± std)"] = _ms_avg(row, "gpu_ms") if has else "-"
        cells.update(metric_cells(row, headers))
        if detection and coco_extra:
            cells["AP50 (COCO, extra)"] = _round(row["AP50_coco_extra"])
        table.append(cells)
    default = "Tab. 4: latency vs accuracy (detection)" if detection else "Tab. 5: latency vs accuracy (segmentation)"
    return Table(title or default, columns, table)


def policy_table(rows: Sequence[Mapping[str, Any]], title: str = "Tab. 1: attention policies") -> Table:
    """Tab. 1: ``M | N | Policy | MFLOPs | mAP`` (or ``J | F``); single-frame rows show ``-`` for M and N.

    MFLOPs is the max per frame (for a single-frame row with a keyframe schedule, the paper's
    comparable-max-latency baseline).
    """
    headers = metric_headers(rows, metric_columns(rows))
    table = []
    for row in rows:
        single = row.get("family") == "SF"
        cells = {
            "M": "-" if single else int(row["M"]),
            "N": "-" if single else int(row["N"]),
            "Policy": "Single-frame" if single else row["policy"],
            "MFLOPs": _round(row["mflops_max"]),
        }
        cells.update(metric_cells(row, headers))
        table.append(cells)
    return Table(title, ["M", "N", "Policy", "MFLOPs", *headers], table)


def interleaving_table(rows: Sequence[Mapping[str, Any]],
                       title: str = "LFS: interleaving sweep (Liu et al. 2019, Tab. 2, Fig. 6/7)") -> Table:
    """LFS's speed-accuracy points: ``Method | f0 rate | MFLOPs max | MFLOPs avg | mAP`` (f0 rate: the
    share of frames f0 ran, or was launched on, as run on the validation videos)."""
    metrics = metric_columns(rows)
    table = []
    for row in rows:
        cells = {"Method": row["method"], "f0 rate": f"{row['f0_rate']:.3f}" if "f0_rate" in row else "-",
                 "MFLOPs max": _round(row["mflops_max"]), "MFLOPs avg": _round(row["mflops_avg"])}
        cells.update({m: _round(row[m]) for m in metrics})
        table.append(cells)
    return Table(title, ["Method", "f0 rate", "MFLOPs max", "MFLOPs avg", *metrics], table)


def cells_table(rows: Sequence[Mapping[str, Any]], title: str = "Tab. 2: with and without Patchwork cells") -> Table:
    """Tab. 2: ``Policy | Patchwork Cell? | mAP`` (or ``J | F``); ``yes`` unless the row's ``cells`` is ``none``."""
    headers = metric_headers(rows, metric_columns(rows))
    table = []
    for row in rows:
        cells = {"Policy": row["policy"], "Patchwork Cell?": "no" if row["cells"] == "none" else "yes"}
        cells.update(metric_cells(row, headers))
        table.append(cells)
    return Table(title, ["Policy", "Patchwork Cell?", *headers], table)


def write_table(table: Table, directory: PathLike, stem: str) -> dict[str, Path]:
    """Write ``<stem>.md``, ``<stem>.csv`` and ``<stem>.json`` into ``directory``.

    The JSON holds ``{"title", "columns", "rows"}``; the CSV the header and one line per row.
    Returns ``{"md": path, "csv": path, "json": path}``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"md": directory / f"{stem}.md", "csv": directory / f"{stem}.csv", "json": directory / f"{stem}.json"}
    paths["md"].write_text(table.markdown() + "\n", encoding="utf-8")
    with paths["csv"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=table.columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(table.rows)
    write_json(paths["json"], {"title": table.title, "columns": table.columns, "rows": table.rows})
    return paths


def _parse_cell(text: str) -> Any:
    """A CSV cell back to the number it was written from (int, then float), else the string."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_table(path: PathLike) -> Table:
    """Read a table written by :func:`write_table` from its ``.json`` or ``.csv`` file.

    CSV cells that parse as numbers come back as ``int`` / ``float`` (the JSON keeps types
    exactly); a CSV carries no title, so the file's stem is used.
    """
    path = Path(path)
    if path.suffix == ".json":
        payload = json.loads(path.read_text(encoding="utf-8"))
        return Table(payload["title"], payload["columns"], payload["rows"])
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = [{key: _parse_cell(value) for key, value in line.items()} for line in reader]
        return Table(path.stem, list(reader.fieldnames or []), rows)


# --------------------------------------------------------------------------- figures
#: Figs. 6 and 8: single-frame variants in blue, Patchwork variants in red.
#: One colour per method family (the ``family`` of a row); the paper's figures: SF blue, Patchwork red.
SERIES_COLORS = {"SF": "tab:blue", "Patchwork": "tab:red", "LFS": "tab:green", "BlockCopy": "tab:purple"}
SERIES_LABELS = {"SF": "single-frame variants"}
X_LABELS = {
    "mflops_max": "theoretical max latency (MFLOPs per frame)",
    "ms_p95": "empirical max latency (ms per frame, p95, 1 CPU thread)",
    "gpu_ms_p95": "empirical max latency (ms per frame, p95, GPU)",
}


def plot_latency_accuracy(
    rows: Sequence[Mapping[str, Any]], path: PathLike, x: str = "mflops_max", metric: str | None = None,
    title: str | None = None,
) -> Path:
    """Accuracy against max latency, one series per family, each point labelled (Figs. 5-8), with
    the rows' 95% bootstrap intervals as bars when they have them.

    One series per ``family`` (single-frame variants in blue, Patchwork variants in red as in
    Figs. 6, 8; other families in their own colours); each family's line joins its Pareto
    front (best accuracy so far as the latency grows).

    Args:
        rows: evaluation rows (``family``, ``method`` and the ``x`` and ``metric`` keys).
        path: the PNG to write.
        x: ``"mflops_max"`` (Figs. 5, 7), ``"ms_p95"`` (Figs. 6, 8) or ``"gpu_ms_p95"``.
        metric: the y column (default ``mAP`` for detection, ``J`` for segmentation).
    Returns:
        ``path``.
    """
    metric = metric or metric_columns(rows)[0]
    with plt.style.context("seaborn-v0_8-whitegrid"):
        figure, axes = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    families = list(dict.fromkeys(row.get("family", "SF") for row in rows))
    palette = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"][4:])
    for family in families:
        color = SERIES_COLORS.get(family) or next(palette)
        members = sorted((row for row in rows if row.get("family", "SF") == family), key=lambda r: r[x])
        xs, ys = [row[x] for row in members], [row[metric] for row in members]
        label = SERIES_LABELS.get(family, f"{family} variants")
        axes.scatter(xs, ys, color=color, label=label, zorder=3)
        bounded = [(px, py, row) for row, px, py in zip(members, xs, ys) if f"{metric}_low" in row]
        if bounded:  # the rows' 95% bootstrap intervals as vertical bars
            bx, by, brows = zip(*bounded)
            below = [py - row[f"{metric}_low"] for _, py, row in bounded]
            above = [row[f"{metric}_high"] - py for _, py, row in bounded]
            axes.errorbar(bx, by, yerr=[below, above], fmt="none", ecolor=color, alpha=0.5, capsize=2, zorder=2)
        # The line joins the family's best accuracy at each latency (its Pareto front), so
        # ablations below the front stay points rather than bending the curve.
        front, best = [], -math.inf
        for px, py in zip(xs, ys):
            if py > best:
                front.append((px, py))
                best = py
        axes.plot(*zip(*front), "-", color=color, alpha=0.6)
        for row, px, py in zip(members, xs, ys):
            axes.annotate(row["method"], (px, py), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axes.margins(x=0.2, y=0.1)
    axes.set_xlabel(X_LABELS.get(x, x))
    axes.set_ylabel(f"{metric} (%)")
    axes.set_title(title or f"{metric} vs {X_LABELS.get(x, x).split(' (')[0]}")
    axes.legend(loc="lower right")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    plt.close(figure)
    return path


def render_strip(
    frames: Tensor,
    window_boxes: Tensor,
    predictions: Sequence[Mapping[str, Tensor]],
    class_names: Sequence[str] | None = None,
    score_threshold: float = 0.5,
    gap: int = 4,
) -> Tensor:
    """Fig. 4: consecutive frames side by side, each with its attention window in red and its predictions.

    Args:
        frames: ``(T, 3, H, W)`` uint8 or float in ``[0, 1]``.
        window_boxes: ``(T, 4)`` attention windows, xyxy pixels of the frames (x2, y2 exclusive).
        predictions: ``T`` predictions in the frames' pixels: ``boxes`` / ``scores`` / ``labels``
            (boxes above ``score_threshold`` are drawn in green, captioned with the class name,
            or its index without ``class_names``, and the score) or a ``mask`` (green overlay).
        gap: white pixels between frames.
    Returns:
        uint8 ``(3, H, T * W + (T - 1) * gap)``.
    """
    if not (len(frames) == len(window_boxes) == len(predictions)) or len(frames) == 0:
        raise ValueError(f"need as many frames, windows and predictions (>= 1), got "
                         f"{len(frames)}, {len(window_boxes)}, {len(predictions)}")
    tiles = [render_stream_frame(frame, prediction, window, class_names, score_threshold)
             for frame, window, prediction in zip(frames, window_boxes, predictions)]
    return hstack(tiles, gap)


def save_strip(path: PathLike, *args: Any, **kwargs: Any) -> Path:
    """:func:`render_strip` written as a PNG at ``path``; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(render_strip(*args, **kwargs), str(path))
    return path


def write_report(
    rows: Sequence[Mapping[str, Any]],
    directory: PathLike,
    policy_rows: Sequence[Mapping[str, Any]] = (),
    cell_rows: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Path]:
    """Everything for one task's rows: Tab. 4/5 (``latency_accuracy.{md,csv,json}``), the two
    latency-accuracy figures (``latency_accuracy_mflops.png``, ``latency_accuracy_ms.png``) and,
    when given, Tab. 1 (``policies.*``) and Tab. 2 (``cells.*``) of the chosen rows.

    Returns:
        ``{name: path}`` of every file written (names like ``"latency_accuracy.md"``).
    """
    directory = Path(directory)
    written: dict[str, Path] = {}
    for stem, table in (("latency_accuracy", paper_table(rows)),
                        ("policies", policy_table(policy_rows) if policy_rows else None),
                        ("cells", cells_table(cell_rows) if cell_rows else None)):
        if table is not None:
            written.update({f"{stem}.{kind}": path for kind, path in write_table(table, directory, stem).items()})
    for name, x in (("latency_accuracy_mflops.png", "mflops_max"), ("latency_accuracy_ms.png", "ms_p95")):
        written[name] = plot_latency_accuracy(rows, directory / name, x=x)
    return written



def claims_table(results: Sequence[Mapping[str, Any]], title: str = "The papers' orderings (95% paired bootstrap over videos)") -> Table:
    """``Source | Claim | Difference | 95% CI | Verdict`` from :func:`~patchwork.evaluation.claims.check_claims`."""
    table = []
    for result in results:
        ran = "difference" in result
        table.append({"Source": result["source"], "Claim": result["claim"],
                      "Difference": _round(result["difference"]) if ran else "-",
                      "95% CI": f"[{result['low']:.1f}, {result['high']:.1f}]" if ran else "-",
                      "Verdict": result["verdict"]})
    return Table(title, ["Source", "Claim", "Difference", "95% CI", "Verdict"], table)
