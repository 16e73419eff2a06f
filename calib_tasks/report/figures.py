"""The report's figures: reliability diagrams and the comparison across runs, drawn in the
commands' one figure style (``calib_tasks.render.figures``). The reliability panel is drawn by
``calib_tasks.render.reliability``, the diagram's one drawing; here are the report's layout
around it (histogram panel, titles, legend) and the saving."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure, SubFigure
from matplotlib.transforms import blended_transform_factory

from calib_metrics import ReliabilityBins
from calib_tasks.render.figures import saved_figure
from calib_tasks.render.reliability import (
    ACCURACY_COLOR,
    GAP_COLOR,
    XLABEL,
    ReliabilityData,
    draw_reliability,
    opaque,
)
from calib_tasks.render.text import LEVEL

RELIABILITY_SIZE = (6.4, 7.2)
COMPARISON_WIDTH = 7.0  # inches, plus COMPARISON_CHAR_WIDTH per character of the longest label
COMPARISON_CHAR_WIDTH = 0.075
COMPARISON_MAX_WIDTH = 14.0
COMPARISON_MARGIN = 0.6
COMPARISON_RUN_HEIGHT = 0.4
MAX_COUNT_LABELS = 20  # bins' counts are written above the histogram up to this many bins
ECE_COLOR = "#DD8452"
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
) -> Figure:
    """Write ``<stem>.png`` and ``<stem>.svg`` and return the figure drawn: the reliability
    panel of ``calib_tasks.render.reliability.draw_reliability`` (per bin, accuracy as a solid
    bar, mean confidence as a black line, the gap hatched red where overconfident and green
    where underconfident, every mark as opaque as its bin is full). Under it, on the same
    confidence axis, how the predictions spread over the bins (share per bin for bins of equal
    width, density otherwise), with each bin's count written above it when there are at most
    ``MAX_COUNT_LABELS`` filled bins; the legend of both under the figure.

    ``title`` names the task and run, ``stats`` (n, accuracy, ECE with its interval, the
    entry's markers; one per line, long lines wrapped) is the subtitle and ``binning`` (e.g.
    "10 equal-width bins") goes into the x-axis label.
    ``observed`` (lowest, highest confidence) narrows the outer bins to the observed range, for
    equal-mass bins whose outer edges are 0 and 1 by convention.
    """
    data = ReliabilityData.from_bins(bins, observed=observed)
    count = data.count.astype(float)
    edges = data.drawn_edges
    widths = np.diff(edges)
    filled = data.filled
    share = count / max(count.sum(), 1.0)
    equal_widths = np.ptp(widths) < 1e-9
    with saved_figure(stem, RELIABILITY_SIZE) as figure:
        top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
        draw_reliability(data, ax=top, legend=False)
        top.set_xlabel("")
        top.set_title(_wrap_lines(stats))
        top.tick_params(labelbottom=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            spread = share if equal_widths else np.where(widths > 0, share / widths, 0.0)
        bottom.bar(
            edges[:-1], spread, widths, align="edge", color="#8C8C8C", edgecolor="white", lw=0.5
        )
        if np.count_nonzero(filled) <= MAX_COUNT_LABELS:
            left = edges[:-1][filled]
            for x, y, n in zip(
                left + widths[filled] / 2, spread[filled], count[filled], strict=True
            ):
                bottom.annotate(
                    f"{n:.0f}", (x, y), xytext=(0, 1), textcoords="offset points",
                    ha="center", va="bottom", fontsize=7,
                )  # fmt: skip
        bottom.set_ylim(0, max(float(spread.max(initial=0)), 1e-9) * 1.3)
        bottom.set(
            xlim=(0, 1),
            ylabel="share of\npredictions" if equal_widths else "density of\npredictions",
            xlabel=f"{XLABEL}, {binning}",
        )
        bottom.set_xticks(np.linspace(0, 1, 11))
        figure.suptitle(_wrap(title), fontsize=12)
        opaque(figure.legend(loc="outside lower center", ncols=2, frameon=False, fontsize=8))
    return figure


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
    lines: Sequence[Sequence[int]],
) -> Figure:
    """Write ``<stem>.png``/``.svg`` and return the figure drawn: one row of panels per task
    (``points`` maps task -> run position -> numbers), ECE with its interval on the left and
    accuracy on the right, a marker per run. Runs are rows from top to bottom in the order of
    ``run_labels`` (``order_by`` says what that order follows), so that long run labels stay
    horizontal and readable. Only the runs of each of ``lines`` (indices into ``run_labels``, in
    order: runs along an ordered axis such as model size) are joined by a line; other runs are
    categories, not a trend."""
    tasks = sorted(points)
    longest = max((len(label) for label in run_labels), default=0)
    width = min(COMPARISON_WIDTH + COMPARISON_CHAR_WIDTH * longest, COMPARISON_MAX_WIDTH)
    row_height = 0.9 + COMPARISON_RUN_HEIGHT * len(run_labels)
    with saved_figure(stem, (width, COMPARISON_MARGIN + row_height * len(tasks))) as figure:
        figure.suptitle(f"Calibration across runs (top to bottom: by {order_by})", fontsize=12)
        for task, panel in zip(
            tasks, figure.subfigures(len(tasks), 1, squeeze=False)[:, 0], strict=True
        ):
            _comparison_row(panel, task, run_labels, points[task], lines)
    return figure


def _comparison_row(
    panel: SubFigure,
    task: str,
    run_labels: Sequence[str],
    points: dict[int, ComparisonPoint],
    lines: Sequence[Sequence[int]],
) -> None:
    at = sorted(points)
    values = [points[i] for i in at]
    ece = np.array([v.ece for v in values])
    low = np.array([v.ece_low for v in values])
    high = np.array([v.ece_high for v in values])
    has_ci = np.flatnonzero(np.isfinite(low) & np.isfinite(high))
    ece_axis, acc_axis = panel.subplots(1, 2, sharey=True)
    panel.suptitle(task, fontsize=11, fontweight="bold")
    ece_axis.plot(ece, at, "o", color=ECE_COLOR)
    acc_axis.plot([v.acc for v in values], at, "o", color=ACCURACY_COLOR)
    for line in lines:
        on_line = [i for i in line if i in points]
        if len(on_line) > 1:
            ece_axis.plot([points[i].ece for i in on_line], on_line, "-", color=ECE_COLOR, lw=1)
            acc_axis.plot(
                [points[i].acc for i in on_line], on_line, "-", color=ACCURACY_COLOR, lw=1
            )
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
