"""Reliability bins: per-bin count, sum of confidences and sum of correctness.

Edge convention, for ``B`` bins with edges ``e_0 = 0 <= e_1 <= ... <= e_B = 1``: bin ``i`` is
``[e_i, e_{i+1})`` except the last, which is closed: ``[e_{B-1}, 1]``.

* ``"equal_width"``: ``e_i = i/B``. Membership is decided in exact arithmetic, i.e. the bin of
  ``c`` is ``min(floor(c * B), B - 1)`` for the real number ``c * B``; the stored edge is the
  smallest double >= i/B, so ``c >= e_i`` holds exactly when ``c * B >= i``. Hence equal-width
  bins of ``B`` nest exactly in the cells of any grid whose size is a multiple of ``B`` (the
  ``ConfidenceHistogram`` cells), with no disagreement even one ulp from an edge.
* ``"equal_mass"``: ``e_1 .. e_{B-1}`` are the ``i/B`` quantiles of the confidences (numpy's
  default linear interpolation between order statistics). Tied confidences make duplicate
  edges: a bin ``[e_i, e_{i+1})`` with ``e_i == e_{i+1}`` is empty, and a confidence equal to a
  repeated edge goes to the highest bin whose left edge it equals, so tied items never split.

Empty bins have NaN ``mean_confidence`` and ``accuracy``; every metric weights a bin by its count,
so empty bins contribute nothing, and a reliability diagram skips them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from calib_metrics._binned import array_totals
from calib_metrics.defaults import DEFAULT_N_BINS, DEFAULT_STRATEGY
from calib_metrics.validation import checked_top_label


@dataclass(frozen=True, eq=False)
class ReliabilityBins:
    """Sufficient statistics of a reliability diagram with ``B`` bins.

    ``edges`` (B+1,), ``count`` (B,) int64, ``sum_confidence`` (B,) and ``sum_correct`` (B,)
    float64. See the module docstring for the edge convention and empty bins.

    >>> bins = reliability_bins([0.25, 0.75, 0.75], [0, 1, 0], n_bins=2)
    >>> bins.n, bins.count.tolist(), bins.accuracy.tolist(), bins.mean_confidence.tolist()
    (3, [1, 2], [0.0, 0.5], [0.25, 0.75])
    """

    edges: np.ndarray
    count: np.ndarray
    sum_confidence: np.ndarray
    sum_correct: np.ndarray

    @property
    def n(self) -> int:
        """Number of items in all bins."""
        return int(self.count.sum())

    @property
    def mean_confidence(self) -> np.ndarray:
        """Mean confidence per bin, ``sum_confidence / count``; NaN for an empty bin."""
        return _per_item(self.sum_confidence, self.count)

    @property
    def accuracy(self) -> np.ndarray:
        """Fraction correct per bin, ``sum_correct / count``; NaN for an empty bin."""
        return _per_item(self.sum_correct, self.count)


def reliability_bins(
    confidence: ArrayLike,
    correct: ArrayLike,
    *,
    n_bins: int = DEFAULT_N_BINS,
    strategy: str = DEFAULT_STRATEGY,
) -> ReliabilityBins:
    """Bin top-label predictions into ``n_bins`` (any integer >= 1) bins.

    ``strategy`` is ``"equal_width"`` or ``"equal_mass"`` (module docstring); anything else,
    or ``n_bins < 1``, raises ``ValueError``.

    >>> bins = reliability_bins([0.1, 0.2, 0.8, 0.9], [0, 1, 1, 1], n_bins=2, strategy="equal_mass")
    >>> bins.edges.tolist(), bins.count.tolist(), bins.sum_correct.tolist()
    ([0.0, 0.5, 1.0], [2, 2], [1.0, 2.0])
    """
    confidence, correct = checked_top_label(confidence, correct)
    return ReliabilityBins(*array_totals(confidence, correct, n_bins, strategy))


def _per_item(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count
