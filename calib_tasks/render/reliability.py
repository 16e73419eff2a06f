"""The reliability diagram, drawn into any matplotlib Axes: the one drawing of it, which
calib-report's figures use too (``calib_tasks.report.figures``).

Per bin: accuracy as a solid bar, mean confidence as a black line across the bin, and the gap
between them hatched, red where confidence is above accuracy (overconfident) and green where it
is below (underconfident); every mark of a bin is as opaque as the bin is full, so that
near-empty bins do not dominate. The binning is calib_metrics' (``cm.reliability_bins``), so
the numbers returned are the report's.

Two steps, as in relplot (prepare, then plot), or one, as sklearn's
``CalibrationDisplay.from_predictions(..., ax=...)``:

* ``ReliabilityData.from_predictions`` / ``ReliabilityData.from_bins``: the numbers per bin;
* ``draw_reliability(data, ax=...)``: draw them;
* ``reliability_diagram(confidence, correct, ax=...)``: both at once.

Only matplotlib and calib_metrics are needed (no lm_eval). Drawing into the second panel of a
1x2 grid:

>>> from matplotlib.figure import Figure
>>> left, right = Figure(figsize=(9, 4)).subplots(1, 2)
>>> diagram = reliability_diagram(
...     [0.15, 0.35, 0.35, 0.65, 0.65], [1, 1, 0, 0, 1], ax=right, n_bins=10
... )
>>> diagram.ax is right
True
>>> d = diagram.data
>>> d.count.tolist()
[0, 1, 0, 2, 0, 0, 2, 0, 0, 0]
>>> d.accuracy[d.filled].tolist(), d.mean_confidence[d.filled].tolist()
([1.0, 0.5, 0.5], [0.15, 0.35, 0.65])
>>> d.gap[d.filled].round(2).tolist(), round(d.ece, 2)  # confidence minus accuracy
([-0.85, -0.15, 0.15], 0.29)
>>> len(diagram.accuracy), len(diagram.overconfident), len(diagram.underconfident)
(3, 1, 2)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba
from matplotlib.container import BarContainer
from matplotlib.figure import Figure, SubFigure
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from numpy.typing import ArrayLike

import calib_metrics as cm

__all__ = ["ReliabilityData", "ReliabilityDiagram", "draw_reliability", "reliability_diagram"]

ACCURACY_COLOR = "#4C72B0"
GAP_COLOR = "#C44E52"
UNDERCONFIDENT_COLOR = "#55A868"
CONFIDENCE_COLOR = "black"
DIAGONAL_COLOR = "#555555"
#: color, hatch and legend text of the gap between accuracy and mean confidence, by direction
GAP_STYLES = {
    "over": (GAP_COLOR, "//", "gap, overconfident (confidence above accuracy)"),
    "under": (UNDERCONFIDENT_COLOR, "\\\\", "gap, underconfident (accuracy above confidence)"),
}
ACCURACY_LABEL = "accuracy in bin (fainter: fewer predictions)"
CONFIDENCE_LABEL = "mean confidence in bin"
DIAGONAL_LABEL = "perfect calibration"
XLABEL = "confidence (top-label probability)"
MIN_ALPHA = 0.15  # opacity of the marks of a bin with next to no predictions
NEW_FIGURE_SIZE = (5.0, 5.0)  # inches, of the figure made when no Axes is given
EQUAL_MASS = "equal_mass"


@dataclass(frozen=True, eq=False)
class ReliabilityData:
    """The numbers of a reliability diagram with ``B`` bins, as calib_metrics bins them.

    ``edges`` (B+1,) are calib_metrics' bin edges; ``count`` (B,) the predictions per bin;
    ``accuracy`` and ``mean_confidence`` (B,) the fraction correct and the mean confidence per
    bin, NaN for an empty bin; ``gap`` (B,) is ``mean_confidence - accuracy`` (positive:
    overconfident, negative: underconfident; NaN for an empty bin); ``ece`` is the expected
    calibration error, ``sum_b count_b * |gap_b| / n``. ``observed`` (lowest, highest
    confidence), when given, narrows the outer bins as drawn (``drawn_edges``) to the observed
    range, for equal-mass bins whose outer edges are 0 and 1 by convention.
    """

    edges: np.ndarray
    count: np.ndarray
    accuracy: np.ndarray
    mean_confidence: np.ndarray
    gap: np.ndarray
    ece: float
    observed: tuple[float, float] | None = None

    @classmethod
    def from_predictions(
        cls,
        confidence: ArrayLike,
        correct: ArrayLike,
        *,
        n_bins: int = cm.DEFAULT_N_BINS,
        strategy: str = cm.DEFAULT_STRATEGY,
    ) -> ReliabilityData:
        """The numbers of top-label predictions (``confidence`` in [0, 1], ``correct`` 0 or
        1) in ``n_bins`` bins of ``strategy`` (``"equal_width"`` or ``"equal_mass"``), as
        ``cm.reliability_bins`` and ``cm.ece`` compute them; equal-mass bins are drawn over
        the observed range of confidence."""
        confidence = np.asarray(confidence, dtype=float)
        correct = np.asarray(correct, dtype=float)
        bins = cm.reliability_bins(confidence, correct, n_bins=n_bins, strategy=strategy)
        observed = None
        if strategy == EQUAL_MASS:
            observed = (float(confidence.min()), float(confidence.max()))
        return replace(
            cls.from_bins(bins, observed=observed),
            ece=cm.ece(confidence, correct, n_bins=n_bins, strategy=strategy),
        )

    @classmethod
    def from_bins(
        cls, bins: cm.ReliabilityBins, *, observed: tuple[float, float] | None = None
    ) -> ReliabilityData:
        """The numbers of bins already computed (``cm.reliability_bins`` or
        ``calib_metrics.histogram.reliability_bins_from_histogram``); the ECE from the bins'
        sums."""
        count = np.asarray(bins.count)
        accuracy = np.asarray(bins.accuracy, dtype=float)
        mean_confidence = np.asarray(bins.mean_confidence, dtype=float)
        residual = np.asarray(bins.sum_correct, dtype=float) - bins.sum_confidence
        ece = float(np.abs(residual).sum() / count.sum()) if count.sum() else float("nan")
        return cls(
            np.array(bins.edges, dtype=float),
            count,
            accuracy,
            mean_confidence,
            mean_confidence - accuracy,
            ece,
            observed,
        )

    @property
    def n(self) -> int:
        """Number of predictions in all bins."""
        return int(self.count.sum())

    @property
    def filled(self) -> np.ndarray:
        """Which bins hold a prediction (the bins drawn)."""
        return self.count > 0

    @property
    def drawn_edges(self) -> np.ndarray:
        """``edges`` with the outer two narrowed to ``observed``, when given."""
        edges = self.edges.copy()
        if self.observed is not None:
            edges[0] = min(self.observed[0], edges[1])
            edges[-1] = max(self.observed[1], edges[-2])
        return edges


@dataclass(frozen=True, eq=False)
class ReliabilityDiagram:
    """A reliability diagram drawn: its numbers (``data``), the Axes drawn into and the
    artists drawn there, one bar or line per filled bin in order of confidence: the diagonal,
    the accuracy bars, the mean-confidence lines, the hatched gaps of the overconfident and of
    the underconfident bins (None when there are none) and the legend (None when not asked
    for)."""

    data: ReliabilityData
    ax: Axes
    diagonal: Line2D
    accuracy: BarContainer
    confidence: LineCollection
    overconfident: BarContainer | None
    underconfident: BarContainer | None
    legend: Legend | None = field(default=None)

    @property
    def figure(self) -> Figure | SubFigure:
        """The figure (or subfigure) of ``ax``."""
        return self.ax.figure


def _bin_alpha(count: np.ndarray) -> np.ndarray:
    """The opacity of each bin's marks: from ``MIN_ALPHA`` (a bin with next to no predictions)
    to 1 (the fullest bin), in proportion to the bin's count."""
    count = np.asarray(count, dtype=float)
    return MIN_ALPHA + (1 - MIN_ALPHA) * count / max(float(count.max(initial=0)), 1.0)


def _gap_bars(
    ax: Axes, left: np.ndarray, width: np.ndarray, low: np.ndarray, high: np.ndarray, alpha, *, kind
) -> BarContainer | None:
    """The hatched region between ``low`` and ``high`` of each bin (``kind`` names the
    direction in ``GAP_STYLES``), no fill, its hatching as opaque as its bin's marks."""
    color, hatch, label = GAP_STYLES[kind]
    if not left.size:
        return None
    return ax.bar(
        left,
        high - low,
        width,
        bottom=low,
        align="edge",
        facecolor="none",
        edgecolor=[to_rgba(color, a) for a in alpha],
        linewidth=0.8,
        hatch=hatch,
        label=label,
    )


def _new_axes() -> Axes:
    import matplotlib.pyplot as plt  # only here: drawing into a given Axes needs no pyplot

    _, ax = plt.subplots(figsize=NEW_FIGURE_SIZE, layout="constrained")
    return ax


def draw_reliability(
    data: ReliabilityData, *, ax: Axes | None = None, legend: bool = True
) -> ReliabilityDiagram:
    """Draw ``data`` into ``ax`` (a new pyplot figure when None): the diagonal of perfect
    calibration and, per filled bin, accuracy, mean confidence and the gap between them (module
    docstring); both axes span [0, 1]. ``legend`` adds a legend to ``ax`` (its marks opaque).
    Titles are left to the caller."""
    if ax is None:
        ax = _new_axes()
    edges = data.drawn_edges
    filled = data.filled
    left, width = edges[:-1][filled], np.diff(edges)[filled]
    accuracy, confidence = data.accuracy[filled], data.mean_confidence[filled]
    alpha = _bin_alpha(data.count[filled])
    (diagonal,) = ax.plot([0, 1], [0, 1], "--", color=DIAGONAL_COLOR, lw=1, label=DIAGONAL_LABEL)
    bars = ax.bar(
        left,
        accuracy,
        width,
        align="edge",
        color=[to_rgba(ACCURACY_COLOR, a) for a in alpha],
        edgecolor="white",
        linewidth=0.5,
        label=ACCURACY_LABEL,
    )
    over, under = confidence > accuracy, confidence < accuracy
    overconfident = _gap_bars(
        ax, left[over], width[over], accuracy[over], confidence[over], alpha[over], kind="over"
    )
    underconfident = _gap_bars(
        ax, left[under], width[under], confidence[under], accuracy[under], alpha[under],
        kind="under",
    )  # fmt: skip
    lines = ax.hlines(
        confidence,
        left,
        left + width,
        colors=[to_rgba(CONFIDENCE_COLOR, a) for a in alpha],
        linewidth=2.5,
        label=CONFIDENCE_LABEL,
    )
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=XLABEL, ylabel="accuracy")
    drawn_legend = None
    if legend:
        drawn_legend = ax.legend(loc="best", fontsize=7)
        opaque(drawn_legend)
    return ReliabilityDiagram(
        data, ax, diagonal, bars, lines, overconfident, underconfident, drawn_legend
    )


def reliability_diagram(
    confidence: ArrayLike,
    correct: ArrayLike,
    *,
    ax: Axes | None = None,
    n_bins: int = cm.DEFAULT_N_BINS,
    strategy: str = cm.DEFAULT_STRATEGY,
    legend: bool = True,
) -> ReliabilityDiagram:
    """Bin top-label predictions as calib_metrics does (``n_bins`` bins of ``strategy``,
    ``"equal_width"`` or ``"equal_mass"``) and draw them into ``ax`` (a new pyplot figure when
    None); return the numbers per bin, the ECE, the Axes and the artists drawn
    (``ReliabilityData.from_predictions`` then ``draw_reliability``)."""
    data = ReliabilityData.from_predictions(confidence, correct, n_bins=n_bins, strategy=strategy)
    return draw_reliability(data, ax=ax, legend=legend)


def opaque(legend: Legend) -> None:
    """Make the legend's marks opaque, whatever the opacity of the bins they stand for."""
    for handle in legend.legend_handles:
        handle.set_alpha(1)
