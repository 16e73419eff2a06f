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

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from numpy.typing import ArrayLike

from calib_metrics.defaults import DEFAULT_N_BINS, DEFAULT_STRATEGY
from calib_metrics.validation import check_positive_int, checked_top_label

STRATEGIES = ("equal_width", "equal_mass")

# Items binned per block: a block's temporaries stay in cache, which makes binning 10M items
# about twice as fast as with whole-array temporaries; two threads save about a third more.
_BLOCK = 1 << 16
_THREADS = 2


@dataclass(frozen=True, eq=False)
class ReliabilityBins:
    """Sufficient statistics of a reliability diagram with ``B`` bins.

    ``edges`` (B+1,), ``count`` (B,) int64, ``sum_confidence`` (B,) and ``sum_correct`` (B,)
    float64. See the module docstring for the edge convention and empty bins.
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
    n_bins: int = DEFAULT_N_BINS,
    strategy: str = DEFAULT_STRATEGY,
) -> ReliabilityBins:
    """Bin top-label predictions into ``n_bins`` (any integer >= 1) bins.

    ``strategy`` is ``"equal_width"`` or ``"equal_mass"`` (module docstring); anything else,
    or ``n_bins < 1``, raises ``ValueError``.
    """
    confidence, correct = checked_top_label(confidence, correct)

    def block_sums(items: slice, index: np.ndarray) -> np.ndarray:
        return np.stack(
            (
                np.bincount(index, minlength=n_bins),
                np.bincount(index, confidence[items], minlength=n_bins),
                np.bincount(index, correct[items], minlength=n_bins),
            )
        )

    edges, (count, sum_confidence, sum_correct) = sum_over_blocks(
        confidence, n_bins, strategy, block_sums
    )
    # counts were summed as floats, exactly (integers below 2**53)
    return ReliabilityBins(edges, count.astype(np.int64), sum_confidence, sum_correct)


def sum_over_blocks(
    confidence: np.ndarray,
    n_bins: int,
    strategy: str,
    block_sums: Callable[[slice, np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """The bin edges of validated confidences, and the sum of ``block_sums(items, bin_index)``
    over consecutive blocks of items (``items`` a slice, ``bin_index`` the bins of its items).

    A block's temporaries stay in cache, and blocks run on two threads (numpy releases the GIL in
    its arithmetic); block results are added in block order, so the sum does not depend on thread
    timing. ``ValueError`` for ``n_bins < 1`` or an unknown ``strategy``.
    """
    n_bins = check_positive_int("n_bins", n_bins)
    index_of: Callable[[np.ndarray], np.ndarray]
    if strategy == "equal_width":
        edges = equal_width_edges(n_bins)
        index_of = functools.partial(equal_width_index, n_bins=n_bins)
    elif strategy == "equal_mass":
        inner = np.quantile(confidence, np.arange(1, n_bins) / n_bins)
        edges = np.concatenate(([0.0], inner, [1.0]))
        index_of = functools.partial(np.searchsorted, inner, side="right")
    else:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")

    def one_block(start: int) -> np.ndarray:
        items = slice(start, start + _BLOCK)
        return block_sums(items, index_of(confidence[items]))

    starts = range(0, confidence.size, _BLOCK)
    if len(starts) == 1:
        return edges, one_block(0)
    with ThreadPoolExecutor(_THREADS) as pool:
        return edges, sum(pool.map(one_block, starts))


@functools.cache
def equal_width_edges(n_bins: int) -> np.ndarray:
    """Edges of ``n_bins`` equal-width bins: ``e_i`` = the smallest double >= i/n_bins
    (read-only)."""
    edges = np.arange(n_bins + 1) / n_bins  # correctly rounded, so at most one ulp below i/B
    for i, edge in enumerate(edges):
        if Fraction(float(edge)) < Fraction(i, n_bins):
            edges[i] = np.nextafter(edge, 2.0)
    edges.flags.writeable = False
    return edges


def equal_width_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin of each (validated) confidence: ``min(floor(c * n_bins), n_bins - 1)``
    in exact arithmetic."""
    # the float cast truncates, i.e. floors the rounded product c * B for c >= 0
    index = np.multiply(
        confidence, n_bins, out=np.empty(confidence.shape, dtype=np.intp), casting="unsafe"
    )
    # Rounding to nearest may lift c * B onto an integer i while c < i/B exactly (it never drops
    # it below an integer it reaches): comparing with the exact edge undoes that.
    index -= confidence < equal_width_edges(n_bins)[index]
    return np.minimum(index, n_bins - 1, out=index)


def _per_item(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count
