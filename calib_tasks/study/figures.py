"""Line figures of ECE and accuracy against a numeric axis (parameter count, training step,
epoch), in the commands' one figure style (``calib_tasks.render.figures``).

A figure is a grid: one row of two panels (ECE with its bootstrap interval, accuracy) per row
title, one line per series in every row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np

from calib_tasks.render.figures import saved_figure
from calib_tasks.render.text import LEVEL
from calib_tasks.report.numbers import TaskNumbers

ROW_HEIGHT = 3.4
WIDTH = 11.0
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DODGE = 0.012  # horizontal offset between series, as a share of the axis span
TICK_GAP = 0.06  # least distance between labelled x values, as a share of the axis span


@dataclass(frozen=True)
class SeriesPoint:
    """One point of a line: its x value and the task's numbers there."""

    x: float
    numbers: TaskNumbers


Rows = Mapping[str, Mapping[str, Sequence[SeriesPoint]]]


@dataclass(frozen=True)
class XScale:
    """The x axis: ``linear``, ``log``, or ``symlog`` (a log axis that also shows 0, e.g.
    Pythia's ``step0``: linear below ``threshold``, the smallest positive x)."""

    name: str
    threshold: float = 1.0

    @classmethod
    def for_values(cls, xs: Sequence[float], log_x: bool) -> XScale:
        """The scale for the values ``xs``: log when asked for, symlog if some x <= 0."""
        if not log_x:
            return cls("linear")
        positive = [x for x in xs if x > 0]
        if len(positive) == len(xs):
            return cls("log")
        return cls("symlog", min(positive, default=1.0))

    def forward(self, xs: np.ndarray) -> np.ndarray:
        """Positions on a uniform scale (monotone; used to shift series sideways)."""
        if self.name == "log":
            return np.log10(xs)
        if self.name == "symlog":
            return np.sign(xs) * np.log10(1 + np.abs(xs) / self.threshold)
        return xs

    def inverse(self, ys: np.ndarray) -> np.ndarray:
        """The x values at uniform positions ``ys`` (``forward``'s inverse)."""
        if self.name == "log":
            return 10**ys
        if self.name == "symlog":
            return np.sign(ys) * self.threshold * (10 ** np.abs(ys) - 1)
        return ys

    def apply(self, axis) -> None:
        """Set this scale on a matplotlib axis."""
        if self.name == "symlog":
            axis.set_xscale("symlog", linthresh=self.threshold)
        else:
            axis.set_xscale(self.name)


def _spaced(xs: Sequence[float], scale: XScale) -> list[float]:
    """The sorted ``xs`` to label on the axis: each at least ``TICK_GAP`` of the axis span
    from the previous one (on the axis's scale), the largest always kept, so that labels do
    not overlap."""
    if len(xs) < 2:
        return list(xs)
    at = scale.forward(np.asarray(xs, dtype=float))
    gap = TICK_GAP * (at[-1] - at[0])
    kept = [0]
    for i in range(1, len(xs)):
        if at[i] - at[kept[-1]] >= gap:
            kept.append(i)
    if kept[-1] != len(xs) - 1:
        kept[-1] = len(xs) - 1
    return [xs[i] for i in kept]


def _dodged(
    xs: np.ndarray, index: int, count: int, span: tuple[float, float], scale: XScale
) -> np.ndarray:
    """``xs`` shifted sideways for the ``index``-th of ``count`` series, by a share of the
    axis span measured on the axis's own scale."""
    low, high = scale.forward(np.array(span, dtype=float))
    shift = DODGE * (index - (count - 1) / 2) * max(high - low, 1.0)
    return scale.inverse(scale.forward(xs) + shift)


def _ece_top(series: Mapping[str, Sequence[SeriesPoint]]) -> float:
    """Top of the ECE axis: 10% above the highest ECE or interval end (at least 0.01)."""
    values = [
        v
        for points in series.values()
        for p in points
        for v in (p.numbers.ece, p.numbers.ece_high)
        if math.isfinite(v)
    ]
    return max([0.01 / 1.1, *values]) * 1.1


def _draw_series(axes, label: str, xs: np.ndarray, points: Sequence[SeriesPoint], style: dict):
    """One line on each panel: ECE (with interval bars where known) and accuracy at ``xs``."""
    ece_axis, acc_axis = axes
    ece = np.array([p.numbers.ece for p in points])
    low = np.array([p.numbers.ece_low for p in points])
    high = np.array([p.numbers.ece_high for p in points])
    has_ci = np.isfinite(low) & np.isfinite(high)
    ece_axis.plot(xs, ece, label=label, **style)
    if has_ci.any():
        ece_axis.errorbar(
            xs[has_ci],
            ece[has_ci],
            yerr=[np.maximum(ece - low, 0)[has_ci], np.maximum(high - ece, 0)[has_ci]],
            fmt="none",
            ecolor=style["color"],
            capsize=3,
            lw=1,
        )
    acc_axis.plot(xs, [p.numbers.acc for p in points], label=label, **style)


def write_metric_grid(
    stem: Path,
    rows: Rows,
    *,
    title: str,
    x_label: str,
    log_x: bool,
    tick_text: Callable[[float], str] = lambda x: f"{x:g}",
) -> None:
    """Write ``<stem>.png`` and ``<stem>.svg``: ``rows`` maps a row title to its series
    (label -> points).

    Ticks are put at the x values present (thinned where labels would overlap), labelled
    with ``tick_text``; series are offset
    slightly sideways so that overlapping intervals stay visible. ``log_x`` with an x <= 0
    (``step0``) draws a symlog axis.
    """
    all_x = sorted({p.x for series in rows.values() for pts in series.values() for p in pts})
    span = (min(all_x), max(all_x)) if all_x else (1.0, 1.0)
    scale = XScale.for_values(all_x, log_x)
    ticks = _spaced(all_x, scale)
    labels = list(dict.fromkeys(label for series in rows.values() for label in series))
    colors = matplotlib.colormaps["tab10"].colors
    with saved_figure(stem, (WIDTH, 0.9 + ROW_HEIGHT * len(rows))) as figure:
        grid = figure.subplots(len(rows), 2, squeeze=False)
        for (row_title, series), axes in zip(rows.items(), grid, strict=True):
            for label, points in series.items():
                index = labels.index(label)
                ordered = sorted(points, key=lambda p: p.x)
                xs = np.array([p.x for p in ordered], dtype=float)
                style = {
                    "color": colors[index % len(colors)],
                    "marker": MARKERS[index % len(MARKERS)],
                    "lw": 1.5,
                    "ms": 6,
                }
                xs = _dodged(xs, index, len(labels), span, scale)
                _draw_series(axes, label, xs, ordered, style)
            ece_axis, acc_axis = axes
            for axis in axes:
                scale.apply(axis)
            prefix = f"{row_title}: " if row_title else ""
            ece_axis.set_title(f"{prefix}ECE (lower is better), {LEVEL} bootstrap interval")
            acc_axis.set_title(f"{prefix}accuracy")
            ece_axis.set_ylim(-0.02 * _ece_top(series), _ece_top(series))
            acc_axis.set_ylim(-0.02, 1.02)
            for axis, y_label in ((ece_axis, "ECE"), (acc_axis, "accuracy")):
                axis.set_xticks(ticks, [tick_text(x) for x in ticks])
                axis.minorticks_off()
                axis.set(xlabel=x_label, ylabel=y_label)
        figure.suptitle(title, fontsize=12)
        figure.legend(
            *grid[0, 0].get_legend_handles_labels(),
            loc="outside lower center",
            ncols=min(len(labels), 4),
            frameon=False,
        )
