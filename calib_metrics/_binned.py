"""The binned kernel (private): per-bin sums and the binned metrics computed from them.

Every binned number of ``calib_metrics`` goes through here: the array metrics (``ece``, ``mce``,
``rms_calibration_error``, ``debiased_l2_calibration_error``, ``reliability_bins``), the histogram
metrics (``histogram_metrics``, ``reliability_bins_from_histogram``) and the bootstrap. Three
steps, each written once:

1. a bin index per item (``equal_width_index``, or equal-mass edges from the quantiles) or per
   histogram entry (``entry_bins``: cells are nested in equal-width bins);
2. per-bin sums of some per-item rows: ``bin_sums`` (one weighted ``np.bincount`` per row), run
   over blocks of items on two threads by ``array_bin_sums`` for arrays;
3. the metrics of per-bin statistics, over any leading axes (``metrics_from_statistics``, and
   ``ece_from_gaps`` / ``mce_from_gaps`` / ``rms_from_gaps`` from residual sums and counts).

Statistics arrays have shape (..., 5, m): their five rows are the count, the sum
of correctness, the sum of confidences, the sum of confidences of correct items and the sum of
squared confidences, of m items, histogram entries or bins. See ``calib_metrics.binning`` for the
edge convention.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from calib_metrics.validation import check_positive_int

if TYPE_CHECKING:
    from calib_metrics.histogram import ConfidenceHistogram

STRATEGIES = ("equal_width", "equal_mass")

# Items binned per block: a block's temporaries stay in cache, which makes binning 10M items
# about twice as fast as with whole-array temporaries; two threads save about a third more.
_BLOCK = 1 << 16
_THREADS = 2

#: The rows summed per bin, for the items of one block (``None``: count the items).
Rows = Sequence[np.ndarray | None]


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    return strategy


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


def bin_sums(index: np.ndarray, rows: Rows, size: int) -> np.ndarray:
    """Sum each row (m,) into ``size`` slots by ``index`` (m,), ``None`` counting: (k, size)."""
    return np.stack([np.bincount(index, row, minlength=size) for row in rows])


def array_bin_sums(
    confidence: np.ndarray, n_bins: int, strategy: str, rows_of: Callable[[slice], Rows]
) -> tuple[np.ndarray, np.ndarray]:
    """The bin edges of validated confidences, and the per-bin sums (k, n_bins) of the rows
    ``rows_of(items)`` of consecutive blocks of items (``items`` a slice).

    A block's temporaries stay in cache, and blocks run on two threads (numpy releases the GIL in
    its arithmetic); block results are added in block order, so the sum does not depend on thread
    timing. ``ValueError`` for ``n_bins < 1`` or an unknown ``strategy``.
    """
    n_bins = check_positive_int("n_bins", n_bins)
    index_of: Callable[[np.ndarray], np.ndarray]
    if check_strategy(strategy) == "equal_width":
        edges = equal_width_edges(n_bins)
        index_of = functools.partial(equal_width_index, n_bins=n_bins)
    else:
        inner = np.quantile(confidence, np.arange(1, n_bins) / n_bins)
        edges = np.concatenate(([0.0], inner, [1.0]))
        index_of = functools.partial(np.searchsorted, inner, side="right")

    def one_block(start: int) -> np.ndarray:
        items = slice(start, start + _BLOCK)
        return bin_sums(index_of(confidence[items]), rows_of(items), n_bins)

    starts = range(0, confidence.size, _BLOCK)
    if len(starts) == 1:
        return edges, one_block(0)
    with ThreadPoolExecutor(_THREADS) as pool:
        return edges, sum(pool.map(one_block, starts))


def array_totals(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int, strategy: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Edges, count (int64), sum of confidences and sum of correctness per bin of validated
    top-label arrays (``correct`` of any 0/1 dtype)."""

    def rows(items: slice) -> Rows:
        return None, confidence[items], correct[items]

    edges, (count, sum_confidence, sum_correct) = array_bin_sums(confidence, n_bins, strategy, rows)
    # counts were summed as floats, exactly (integers below 2**53)
    return edges, count.astype(np.int64), sum_confidence, sum_correct


def array_gaps(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int, strategy: str
) -> np.ndarray:
    """Per-bin residual sums ``sum_{i in b} (y_i - c_i)`` of validated top-label arrays, in one
    weighted ``np.bincount`` per block (the whole cost of ``ece``)."""

    def rows(items: slice) -> Rows:
        return (correct[items] - confidence[items],)

    return array_bin_sums(confidence, n_bins, strategy, rows)[1][0]


def item_statistics(confidence: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """The five statistics of single items: (5, n)."""
    return np.stack(
        (np.ones_like(confidence), correct, confidence, confidence * correct, confidence**2)
    )


class Entries(NamedTuple):
    """The entries of several histograms, concatenated: which histogram each came from, its
    equal-width bin, and its five statistics (5, m)."""

    owner: np.ndarray
    bin: np.ndarray
    statistics: np.ndarray


def common_resolution(histograms: Sequence[ConfidenceHistogram]) -> int:
    if not histograms:
        raise ValueError("no histograms given")
    resolutions = sorted({h.resolution for h in histograms})
    if len(resolutions) > 1:
        raise ValueError(f"histograms have different resolutions: {resolutions}")
    return resolutions[0]


def entry_bins(histograms: Sequence[ConfidenceHistogram], n_bins: int) -> Entries:
    """Entries of ``histograms`` (same resolution, a multiple of ``n_bins``) in ``n_bins`` bins."""
    n_bins = check_positive_int("n_bins", n_bins)
    resolution = common_resolution(histograms)
    if resolution % n_bins:
        raise ValueError(
            f"n_bins={n_bins} must divide the histogram resolution {resolution} "
            "for bins to be unions of cells"
        )
    sizes = [h.cell.size for h in histograms]
    correct = np.concatenate([h.correct for h in histograms]).astype(np.float64)
    sum_confidence = np.concatenate([h.sum_confidence for h in histograms])
    count = np.concatenate([h.count for h in histograms]).astype(np.float64)
    statistics = np.stack(
        (
            count,
            count * correct,
            sum_confidence,
            sum_confidence * correct,
            np.concatenate([h.sum_sq_confidence for h in histograms]),
        )
    )
    return Entries(
        np.repeat(np.arange(len(histograms)), sizes),
        np.concatenate([h.cell for h in histograms]) // (resolution // n_bins),
        statistics,
    )


def histogram_statistics(hist: ConfidenceHistogram, n_bins: int) -> np.ndarray:
    """Per-bin statistics of one histogram: (5, n_bins)."""
    entries = entry_bins([hist], n_bins)
    return bin_sums(entries.bin, entries.statistics, n_bins)


def ece_from_gaps(gap: np.ndarray, n: np.ndarray | int) -> np.ndarray:
    """ECE from per-bin residual sums and the number of items: ``sum_b |gap_b| / n``."""
    return np.abs(gap).sum(axis=-1) / n


def mce_from_gaps(gap: np.ndarray, count: np.ndarray) -> np.ndarray:
    """MCE from per-bin residual sums and counts: ``max_b |gap_b| / n_b`` over the non-empty bins
    (an empty bin's gap is 0, which cannot exceed a non-empty bin's)."""
    return (np.abs(gap) / np.maximum(count, 1)).max(axis=-1)


def rms_from_gaps(gap: np.ndarray, count: np.ndarray) -> np.ndarray:
    """RMS calibration error from per-bin residual sums and counts:
    ``sqrt(sum_b gap_b**2 / n_b / n)``."""
    return np.sqrt((gap**2 / np.maximum(count, 1)).sum(axis=-1) / count.sum(axis=-1))


def metrics_from_statistics(statistics: np.ndarray) -> dict[str, np.ndarray]:
    """The ``histogram_metrics`` keys from per-bin statistics of shape (..., 5, n_bins),
    computed over any leading axes; ``ValueError`` if some set of statistics has no samples."""
    count, sum_correct, sum_confidence, sum_confidence_correct, sum_sq = np.moveaxis(
        statistics, -2, 0
    )
    n = count.sum(axis=-1)
    if np.any(n == 0):
        raise ValueError("no samples: the histogram is empty")
    gap = sum_correct - sum_confidence
    total_correct, total_confidence = sum_correct.sum(axis=-1), sum_confidence.sum(axis=-1)
    # sum (c - y)^2 = sum c^2 - 2 sum c y + sum y; clipped at 0 against rounding
    squared_error = sum_sq.sum(axis=-1) - 2.0 * sum_confidence_correct.sum(axis=-1) + total_correct
    return {
        "n": n,
        "acc": total_correct / n,
        "mean_confidence": total_confidence / n,
        "ece": ece_from_gaps(gap, n),
        "mce": mce_from_gaps(gap, count),
        "rms_calibration_error": rms_from_gaps(gap, count),
        "ece_one_bin": np.abs(total_correct - total_confidence) / n,
        "brier_top_label": np.maximum(squared_error, 0.0) / n,
    }
