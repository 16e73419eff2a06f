"""The risk-coverage (selective accuracy) curve, drawn into any matplotlib Axes: how accurate the
answers a model is most sure of are, one line per confidence method; calib-report's figure of a
generative task uses it (``calib_tasks.report.figures``).

Keep the ``k`` most confident of ``n`` answers: the curve is the accuracy of those ``k`` against
the coverage ``k / n``, for every ``k``. A confidence that ranks right answers above wrong ones
starts high on the left and falls to the overall accuracy at coverage 1; one that does not
stays flat. Answers of equal confidence are taken in a random order and the curve is the
expected accuracy under that order (linear inside a block of equal confidence), the tie rule of
``calib_metrics.aurc`` and ``calib_metrics.accuracy_at_coverage``, so the curve's mean risk is
the AURC the report shows.

Two steps, as ``calib_tasks.render.reliability``:

* ``RiskCoverageData.from_predictions``: the curve's numbers;
* ``draw_risk_coverage({name: data, ...}, ax=...)``: draw one line per curve;
* ``risk_coverage_curve({name: (confidence, correct), ...}, ax=...)``: both at once.

>>> from matplotlib.figure import Figure
>>> ax = Figure().subplots()
>>> drawn = risk_coverage_curve({"seq": ([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0])}, ax=ax)
>>> d = drawn.curves["seq"]
>>> d.coverage.tolist(), d.accuracy.round(3).tolist()
([0.25, 0.5, 0.75, 1.0], [1.0, 0.5, 0.667, 0.5])
>>> round(d.aurc, 6)  # (0/1 + 1/2 + 1/3 + 2/4) / 4
0.333333
>>> drawn.lines["seq"].get_label()
'seq (AURC 0.333)'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from numpy.typing import ArrayLike

from calib_metrics.ranking import selective_risks

__all__ = ["RiskCoverageData", "RiskCoveragePlot", "draw_risk_coverage", "risk_coverage_curve"]

XLABEL = "coverage (share of answers kept, most confident first)"
YLABEL = "accuracy of the answers kept"
NEW_FIGURE_SIZE = (5.0, 4.0)  # inches, of the figure made when no Axes is given


@dataclass(frozen=True, eq=False)
class RiskCoverageData:
    """The curve of ``n`` top-label predictions: ``coverage`` (n,) is ``k / n`` for k = 1..n,
    ``accuracy`` (n,) the expected accuracy of the ``k`` most confident (ties in random order),
    ``aurc`` the area under the risk-coverage curve, ``mean(1 - accuracy)``."""

    coverage: np.ndarray
    accuracy: np.ndarray
    aurc: float

    @classmethod
    def from_predictions(cls, confidence: ArrayLike, correct: ArrayLike) -> RiskCoverageData:
        """The curve of predictions ``confidence`` (in [0, 1]) and ``correct`` (0 or 1);
        ``ValueError`` for input ``calib_metrics`` refuses (empty, NaN, out of range)."""
        risk = selective_risks(confidence, correct)
        coverage = np.arange(1, risk.size + 1) / risk.size
        return cls(coverage, 1.0 - risk, float(np.mean(risk)))

    @property
    def n(self) -> int:
        """Number of predictions."""
        return int(self.coverage.size)


@dataclass(frozen=True, eq=False)
class RiskCoveragePlot:
    """Curves drawn: their numbers and lines by name, the Axes, and the legend (None when not
    asked for)."""

    curves: dict[str, RiskCoverageData]
    ax: Axes
    lines: dict[str, Line2D]
    legend: Legend | None = None


def _new_axes() -> Axes:
    import matplotlib.pyplot as plt  # only here: drawing into a given Axes needs no pyplot

    _, ax = plt.subplots(figsize=NEW_FIGURE_SIZE, layout="constrained")
    return ax


def draw_risk_coverage(
    curves: Mapping[str, RiskCoverageData], *, ax: Axes | None = None, legend: bool = True
) -> RiskCoveragePlot:
    """Draw each of ``curves`` into ``ax`` (a new pyplot figure when None): accuracy of the
    answers kept against coverage, one line per curve, labelled ``"<name> (AURC 0.123)"``, in
    matplotlib's colour cycle; both axes span [0, 1]. A curve of one prediction is a marker.
    ``legend`` adds a legend to ``ax``. Titles are left to the caller."""
    if ax is None:
        ax = _new_axes()
    lines = {}
    for name, data in curves.items():
        (lines[name],) = ax.plot(
            data.coverage,
            data.accuracy,
            "-" if data.n > 1 else "o",
            lw=1.5,
            label=f"{name} (AURC {data.aurc:.3f})",
        )
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel=XLABEL, ylabel=YLABEL)
    drawn_legend = ax.legend(loc="best", fontsize=8) if legend and curves else None
    return RiskCoveragePlot(dict(curves), ax, lines, drawn_legend)


def risk_coverage_curve(
    predictions: Mapping[str, tuple[ArrayLike, ArrayLike]],
    *,
    ax: Axes | None = None,
    legend: bool = True,
) -> RiskCoveragePlot:
    """The curves of ``predictions`` (name -> (confidence, correct)) drawn into ``ax``
    (``RiskCoverageData.from_predictions`` then ``draw_risk_coverage``)."""
    curves = {
        name: RiskCoverageData.from_predictions(confidence, correct)
        for name, (confidence, correct) in predictions.items()
    }
    return draw_risk_coverage(curves, ax=ax, legend=legend)
