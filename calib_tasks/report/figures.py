"""The report's figures: reliability diagrams, the comparison across runs, and a generative
task's reliability per confidence method and risk-coverage curves, drawn in the commands' one
figure style (``calib_tasks.render.figures``). The reliability panel is drawn by
``calib_tasks.render.reliability``, the diagram's one drawing, and the risk-coverage curve by
``calib_tasks.render.risk_coverage``; here are the report's layout around them (histogram
panel, titles, legend) and the saving."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
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
from calib_tasks.render.risk_coverage import RiskCoverageData, draw_risk_coverage
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
METHOD_PANEL_SIZE = (3.4, 3.6)  # inches per panel of the reliability per confidence method
METHOD_PANEL_COLUMNS = 3
RISK_COVERAGE_SIZE = (6.4, 5.0)
BASELINE_COLOR = "#555555"


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


@dataclass(frozen=True)
class MethodPanel:
    """One confidence method's panel of a generative task's reliability figure: its name, its
    numbers per bin (None when it scored no answer) and the panel's subtitle (n, ECE)."""

    method: str
    data: ReliabilityData | None
    stats: str


def write_method_reliability_figure(
    stem: Path, panels: Sequence[MethodPanel], *, title: str, binning: str
) -> Figure:
    """Write ``<stem>.png``/``.svg`` and return the figure drawn: one reliability panel
    (``calib_tasks.render.reliability.draw_reliability``) per confidence method, up to
    ``METHOD_PANEL_COLUMNS`` a row, the method and its ``stats`` over each; a method that scored
    no answer gets an empty panel saying so. ``binning`` goes into the x-axis labels, the
    legend of every panel under the figure."""
    columns = min(len(panels), METHOD_PANEL_COLUMNS)
    rows = math.ceil(len(panels) / columns)
    size = (METHOD_PANEL_SIZE[0] * columns, METHOD_PANEL_SIZE[1] * rows + 0.9)
    with saved_figure(stem, size) as figure:
        axes = figure.subplots(rows, columns, squeeze=False).ravel()
        marks: dict[str, object] = {}  # every mark drawn in some panel, once
        for ax, panel in zip(axes, panels, strict=False):
            ax.set_title(f"{panel.method}\n{_wrap_lines(panel.stats)}", fontsize=9)
            if panel.data is None:
                ax.set(xlim=(0, 1), ylim=(0, 1), xticks=[], yticks=[])
                ax.text(
                    0.5, 0.5, f"no answer has a\n{panel.method} confidence",
                    ha="center", va="center", transform=ax.transAxes, color=GAP_COLOR,
                )  # fmt: skip
                continue
            draw_reliability(panel.data, ax=ax, legend=False)
            ax.set_xlabel(f"{panel.method} confidence, {binning}", fontsize=8)
            handles, labels = ax.get_legend_handles_labels()
            marks.update({label: handle for handle, label in zip(handles, labels, strict=True)})
        if marks:
            opaque(
                figure.legend(
                    list(marks.values()), list(marks), loc="outside lower center", ncols=2,
                    frameon=False, fontsize=8,
                )
            )  # fmt: skip
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        figure.suptitle(_wrap(title), fontsize=12)
    return figure


def write_risk_coverage_figure(
    stem: Path,
    curves: Mapping[str, RiskCoverageData],
    *,
    title: str,
    accuracy: float,
    n: int,
) -> Figure:
    """Write ``<stem>.png``/``.svg`` and return the figure drawn: the risk-coverage curve of
    each confidence method (``calib_tasks.render.risk_coverage.draw_risk_coverage``: accuracy
    of the k most confident answers against the coverage k/n, one line per method, its AURC in
    the legend), over the ``accuracy`` of all ``n`` answers as a dotted line (where a
    confidence that ranks nothing stays)."""
    with saved_figure(stem, RISK_COVERAGE_SIZE) as figure:
        ax = figure.subplots()
        ax.axhline(
            accuracy, ls=":", lw=1, color=BASELINE_COLOR,
            label=f"accuracy of all {n} answers ({accuracy:.3f})",
        )  # fmt: skip
        draw_risk_coverage(curves, ax=ax, legend=False)
        ax.legend(loc="best", fontsize=8)
        ax.set_title("accuracy of the k most confident answers against coverage k/n")
        figure.suptitle(_wrap(title), fontsize=12)
    return figure
