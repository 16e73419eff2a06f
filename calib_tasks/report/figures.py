"""The report's figures: reliability diagrams and the comparison across runs, drawn in the
commands' one figure style (``calib_tasks.render.figures``)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.colors import to_rgba
from matplotlib.figure import SubFigure
from matplotlib.transforms import blended_transform_factory

from calib_metrics import ReliabilityBins
from calib_tasks.render.figures import saved_figure
from calib_tasks.render.text import LEVEL

RELIABILITY_SIZE = (6.4, 7.2)
COMPARISON_WIDTH = 7.0  # inches, plus COMPARISON_CHAR_WIDTH per character of the longest label
COMPARISON_CHAR_WIDTH = 0.075
COMPARISON_MAX_WIDTH = 14.0
COMPARISON_MARGIN = 0.6
COMPARISON_RUN_HEIGHT = 0.4
ACCURACY_COLOR = "#4C72B0"
GAP_COLOR = "#C44E52"
ECE_COLOR = "#DD8452"
DIAGONAL_COLOR = "#555555"
TITLE_WIDTH = 60
MARKER_OFFSET = 0.12  # comparison rows are 1 apart: a marker sits this far under its row


def _wrap(text: str) -> str:
    return "\n".join(textwrap.wrap(text, TITLE_WIDTH, break_on_hyphens=False)) or text


def _wrap_lines(text: str) -> str:
    return "\n".join(_wrap(line) for line in text.split("\n"))


def write_reliability_diagram(
    stem: Path,
    bins: ReliabilityBins,
    *,
    title: str,
    stats: str,
    binning: str,
    observed: tuple[float, float] | None = None,
) -> None:
    """Write ``<stem>.png`` and ``<stem>.svg``: accuracy per bin as bars against the diagonal,
    each bin's gap between accuracy and mean confidence shaded, and how the predictions spread
    over the bins underneath, on the same confidence axis (share per bin for bins of equal
    width, density otherwise).

    ``title`` names the task and run, ``stats`` (n, accuracy, ECE with its interval, the
    entry's markers; one per line, long lines wrapped) is the subtitle and ``binning`` (e.g.
    "10 equal-width bins") goes into the x-axis label.
    ``observed`` (lowest, highest confidence) narrows the outer bins to the observed range, for
    equal-mass bins whose outer edges are 0 and 1 by convention.
    """
    count = np.asarray(bins.count, dtype=float)
    edges = np.array(bins.edges, dtype=float)
    if observed is not None:
        edges[0], edges[-1] = min(observed[0], edges[1]), max(observed[1], edges[-2])
    widths = np.diff(edges)
    filled = count > 0
    left, width = edges[:-1][filled], widths[filled]
    accuracy = np.asarray(bins.accuracy, dtype=float)[filled]
    confidence = np.asarray(bins.mean_confidence, dtype=float)[filled]
    share = count / max(count.sum(), 1.0)
    equal_widths = np.ptp(widths) < 1e-9
    with saved_figure(stem, RELIABILITY_SIZE) as figure:
        top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
        top.plot([0, 1], [0, 1], "--", color=DIAGONAL_COLOR, lw=1, label="perfect calibration")
        bar_style = {"align": "edge", "edgecolor": "white", "linewidth": 0.5}
        top.bar(left, accuracy, width, color=ACCURACY_COLOR, label="accuracy in bin", **bar_style)
        top.bar(
            left,
            confidence - accuracy,
            width,
            bottom=accuracy,
            align="edge",
            color=to_rgba(GAP_COLOR, 0.25),
            edgecolor=GAP_COLOR,
            linewidth=0.8,
            hatch="//",
            label="gap to mean confidence",
        )
        top.plot(
            confidence, accuracy, "o", color="black", ms=3, label="bin: (mean confidence, accuracy)"
        )
        top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy")
        top.set_title(_wrap_lines(stats))
        top.tick_params(labelbottom=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            spread = share if equal_widths else np.where(widths > 0, share / widths, 0.0)
        bottom.bar(edges[:-1], spread, widths, color="#8C8C8C", **bar_style)
        bottom.set(
            xlim=(0, 1),
            ylabel="share of\npredictions" if equal_widths else "density of\npredictions",
            xlabel=f"confidence (top-label probability), {binning}",
        )
        bottom.set_xticks(np.linspace(0, 1, 11))
        figure.suptitle(_wrap(title), fontsize=12)
        figure.legend(loc="outside lower center", ncols=2, frameon=False)


@dataclass(frozen=True)
class ComparisonPoint:
    """One task's numbers for one run (NaN where unknown); ``marker`` is written beside them
    (e.g. "ECE not measured"), when not empty."""

    ece: float
    ece_low: float
    ece_high: float
    acc: float
    marker: str = ""


def write_comparison_figure(
    stem: Path,
    run_labels: Sequence[str],
    points: dict[str, dict[int, ComparisonPoint]],
    *,
    order_by: str,
) -> None:
    """Write ``<stem>.png``/``.svg``: one row of panels per task (``points`` maps task -> run
    position -> numbers), ECE with its interval on the left and accuracy on the right. Runs
    are rows from top to bottom in the order of ``run_labels`` (``order_by`` says what that
    order follows), so that long run labels stay horizontal and readable."""
    tasks = sorted(points)
    longest = max((len(label) for label in run_labels), default=0)
    width = min(COMPARISON_WIDTH + COMPARISON_CHAR_WIDTH * longest, COMPARISON_MAX_WIDTH)
    row_height = 0.9 + COMPARISON_RUN_HEIGHT * len(run_labels)
    with saved_figure(stem, (width, COMPARISON_MARGIN + row_height * len(tasks))) as figure:
        figure.suptitle(f"Calibration across runs (top to bottom: by {order_by})", fontsize=12)
        for task, panel in zip(
            tasks, figure.subfigures(len(tasks), 1, squeeze=False)[:, 0], strict=True
        ):
            _comparison_row(panel, task, run_labels, points[task])


def _comparison_row(
    panel: SubFigure, task: str, run_labels: Sequence[str], points: dict[int, ComparisonPoint]
) -> None:
    at = sorted(points)
    values = [points[i] for i in at]
    ece = np.array([v.ece for v in values])
    low = np.array([v.ece_low for v in values])
    high = np.array([v.ece_high for v in values])
    has_ci = np.flatnonzero(np.isfinite(low) & np.isfinite(high))
    ece_axis, acc_axis = panel.subplots(1, 2, sharey=True)
    panel.suptitle(task, fontsize=11, fontweight="bold")
    ece_axis.plot(ece, at, "-o", color=ECE_COLOR, lw=1)
    if has_ci.size:
        ece_axis.errorbar(
            ece[has_ci],
            np.asarray(at)[has_ci],
            xerr=[
                np.maximum(ece[has_ci] - low[has_ci], 0),
                np.maximum(high[has_ci] - ece[has_ci], 0),
            ],
            fmt="none",
            ecolor=ECE_COLOR,
            capsize=4,
        )
    acc_axis.plot([v.acc for v in values], at, "-o", color=ACCURACY_COLOR, lw=1)
    ece_axis.set(xlabel=f"ECE with {LEVEL} bootstrap interval (lower is better)")
    acc_axis.set(xlabel="accuracy", xlim=(0, 1))
    known = np.concatenate([ece, high])
    known = known[np.isfinite(known)]
    ece_axis.set_xlim(0, known.max() * 1.1 if known.size and known.max() > 0 else None)
    for y, value in zip(at, values, strict=True):
        if value.marker:
            ece_axis.text(  # under the row's point and interval, at the right
                0.98,
                y + MARKER_OFFSET,
                value.marker,
                transform=blended_transform_factory(ece_axis.transAxes, ece_axis.transData),
                ha="right",
                va="top",
                color=GAP_COLOR,
                fontsize=8,
            )
    ece_axis.set_yticks(np.arange(len(run_labels)), list(run_labels))
    ece_axis.set_ylim(len(run_labels) - 0.5, -0.5)
