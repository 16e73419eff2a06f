"""Bootstrap confidence intervals of top-label metrics.

Percentile intervals: the ``(1 - level)/2`` and ``(1 + level)/2`` quantiles (numpy's default
linear interpolation) of the metric over ``n_resamples`` resamples, widened where needed to
contain the point estimate. The widening matters for ECE: its bootstrap distribution carries the
same upward small-sample bias as the estimate itself (a resample's binned gaps are noisier), so
for nearly calibrated data the percentile interval can lie entirely above the estimate.

Randomness comes from ``numpy.random.Generator(PCG64(seed))`` only: the same inputs and seed give
the same interval. With ``groups``, whole groups (e.g. the documents of a token-level task) are
resampled with replacement instead of items, which keeps the dependence inside a group.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from calib_metrics.binning import equal_width_index
from calib_metrics.calibration_errors import ece, ece_one_bin, mce, rms_calibration_error
from calib_metrics.defaults import (
    DEFAULT_LEVEL,
    DEFAULT_N_BINS,
    DEFAULT_N_RESAMPLES,
    DEFAULT_RESOLUTION,
    DEFAULT_SEED,
)
from calib_metrics.histogram import (
    ConfidenceHistogram,
    item_statistics,
    metrics_from_statistics,
    scatter,
    stacked_entries,
)
from calib_metrics.scores import brier_top_label
from calib_metrics.validation import as_top_label, check_level, check_positive_int

# Most resample-by-group weights held at once (rows x groups) by the group bootstrap.
_WEIGHTS_PER_CHUNK = 1 << 22


@dataclass(frozen=True)
class ConfidenceInterval:
    """A bootstrap percentile interval ``[low, high]`` around ``estimate`` (always inside it)."""

    estimate: float
    low: float
    high: float
    level: float
    n_resamples: int


def bootstrap_ci(
    metric: Callable[[np.ndarray, np.ndarray], float],
    confidence: ArrayLike,
    correct: ArrayLike,
    *,
    groups: ArrayLike | None = None,
    n_resamples: int = DEFAULT_N_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = DEFAULT_SEED,
) -> ConfidenceInterval:
    """Interval of any top-label ``metric(confidence, correct) -> float`` by exact resampling.

    Each resample draws ``n`` item indices uniformly with replacement or, with ``groups`` (one
    sortable id per item, e.g. a document id), as many groups as there are, uniformly with
    replacement, taking all their items. With one item per group and ids ``0..n-1`` both draw the
    same indices. The metric is called once per resample; ``ValueError`` if it returns NaN or
    inf on one.
    """
    confidence, correct = as_top_label(confidence, correct)
    n_resamples = check_positive_int("n_resamples", n_resamples)
    level = check_level(level)
    members = None if groups is None else _members(_group_codes(groups, confidence.size))
    rng = np.random.Generator(np.random.PCG64(seed))
    values = np.empty(n_resamples)
    for r in range(n_resamples):
        if members is None:
            index = rng.integers(0, confidence.size, size=confidence.size)
        else:
            index = _draw_groups(rng, *members)
        values[r] = metric(confidence[index], correct[index])
    if not np.isfinite(values).all():
        raise ValueError("the metric returned NaN or inf on a bootstrap resample")
    return _interval(float(metric(confidence, correct)), values, level)


def histogram_bootstrap_ci(
    units: ConfidenceHistogram | Sequence[ConfidenceHistogram],
    *,
    n_bins: int = DEFAULT_N_BINS,
    n_resamples: int = DEFAULT_N_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = DEFAULT_SEED,
) -> dict[str, ConfidenceInterval]:
    """Intervals of every ``histogram_metrics`` key but ``n``, from histograms alone.

    * A sequence: one histogram per group (e.g. document), resampled as whole groups; exact:
      each resample's per-bin statistics are ``W @ S`` with ``W`` the (resamples x groups) counts
      of each group drawn and ``S`` the per-group, per-bin statistics. Empty groups carry no
      information and are left out of the draw. The interval depends on the order of the
      sequence (as an index bootstrap depends on the order of the items): pass
      ``canonical_order(histograms)`` for one that does not.
    * One histogram: items resampled. A resample's counts over the histogram's non-empty
      (cell, correctness) entries are multinomial, exactly as under index resampling, and each
      drawn item carries its entry's mean confidence and mean squared confidence. This is index
      resampling with every drawn ``c`` (and ``c**2``) replaced by its entry's mean: per bin,
      counts and numbers correct are exact, and a sum of confidences differs from the index
      resample's by the within-cell spread only, less than ``1/resolution`` per drawn item (so
      a resample's ECE, MCE, mean confidence and one-bin ECE move by less than
      ``1/resolution``).

    Estimates are the ``histogram_metrics`` of the pooled samples.
    """
    n_resamples = check_positive_int("n_resamples", n_resamples)
    level = check_level(level)
    rng = np.random.Generator(np.random.PCG64(seed))
    if isinstance(units, ConfidenceHistogram):
        entries = stacked_entries([units], n_bins)
        totals = scatter(entries.bin, entries.statistics, n_bins)
        resampled = _item_resamples(entries.bin, entries.statistics, n_bins, n_resamples, rng)
    else:
        units = list(units)
        entries = stacked_entries(units, n_bins)
        per_group = _per_group(entries.owner, entries.bin, entries.statistics, len(units), n_bins)
        totals = per_group.sum(axis=0)
        per_group = per_group[per_group[:, 0].sum(axis=1) > 0]
        resampled = _group_resamples(per_group, n_resamples, rng)
    pooled = metrics_from_statistics(totals)
    estimates = {key: float(value) for key, value in pooled.items() if key != "n"}
    return _intervals(estimates, metrics_from_statistics(resampled), level)


def binned_bootstrap_ci(
    confidence: ArrayLike,
    correct: ArrayLike,
    *,
    groups: ArrayLike | None = None,
    n_bins: int = DEFAULT_N_BINS,
    n_resamples: int = DEFAULT_N_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = DEFAULT_SEED,
) -> dict[str, ConfidenceInterval]:
    """Intervals of every ``histogram_metrics`` key but ``n`` for arrays, at histogram speed.

    Estimates are the exact array metrics (``ece(confidence, correct, n_bins)`` etc., equal-width
    bins). Without ``groups`` the items are resampled from their ``ConfidenceHistogram`` with
    ``resolution`` the smallest multiple of ``n_bins`` >= ``DEFAULT_RESOLUTION`` (the one-histogram
    case of ``histogram_bootstrap_ci``). With ``groups`` (one sortable id per item) whole groups
    are resampled exactly, from per-group, per-bin statistics computed directly from the arrays
    (never a groups x resolution array).
    """
    confidence, correct = as_top_label(confidence, correct)
    n_bins = check_positive_int("n_bins", n_bins)
    n_resamples = check_positive_int("n_resamples", n_resamples)
    level = check_level(level)
    rng = np.random.Generator(np.random.PCG64(seed))
    if groups is None:
        resolution = n_bins * math.ceil(DEFAULT_RESOLUTION / n_bins)
        hist = ConfidenceHistogram.from_samples(confidence, correct, resolution)
        entries = stacked_entries([hist], n_bins)
        resampled = _item_resamples(entries.bin, entries.statistics, n_bins, n_resamples, rng)
    else:
        codes = _group_codes(groups, confidence.size)
        bins = equal_width_index(confidence, n_bins)
        statistics = item_statistics(confidence, correct)
        per_group = _per_group(codes, bins, statistics, int(codes.max()) + 1, n_bins)
        resampled = _group_resamples(per_group, n_resamples, rng)
    estimates = {
        "acc": float(np.mean(correct)),
        "mean_confidence": float(np.mean(confidence)),
        "ece": ece(confidence, correct, n_bins),
        "mce": mce(confidence, correct, n_bins),
        "rms_calibration_error": rms_calibration_error(confidence, correct, n_bins),
        "ece_one_bin": ece_one_bin(confidence, correct),
        "brier_top_label": brier_top_label(confidence, correct),
    }
    return _intervals(estimates, metrics_from_statistics(resampled), level)


def _per_group(
    group: np.ndarray, bins: np.ndarray, statistics: np.ndarray, n_groups: int, n_bins: int
) -> np.ndarray:
    """Statistics (5, m) of items or entries summed per group and bin: (groups, 5, n_bins)."""
    summed = scatter(group * n_bins + bins, statistics, n_groups * n_bins)
    return summed.reshape(5, n_groups, n_bins).swapaxes(0, 1)


def _item_resamples(
    bins: np.ndarray,
    statistics: np.ndarray,
    n_bins: int,
    n_resamples: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Per-bin statistics (resamples, 5, n_bins) of item resamples of histogram entries."""
    count = statistics[0]
    n, n_entries = int(count.sum()), count.size
    if n == 0:
        raise ValueError("no samples: the histogram is empty")
    # one item of each entry, placed in its bin: (entries, 5 * n_bins)
    per_item = np.zeros((n_entries, 5, n_bins))
    per_item[np.arange(n_entries), :, bins] = (statistics / count).T
    # float64, as numpy multiplies int64 matrices without BLAS, many times slower
    drawn = rng.multinomial(n, count / n, size=n_resamples).astype(np.float64)
    return (drawn @ per_item.reshape(n_entries, -1)).reshape(n_resamples, 5, n_bins)


def _group_resamples(
    per_group: np.ndarray, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Per-bin statistics (resamples, 5, n_bins) of group resamples: ``W @ per_group`` with
    ``W[r, g]`` the number of times group ``g`` is drawn in resample ``r``."""
    n_groups = per_group.shape[0]
    if n_groups == 0:
        raise ValueError("no samples: every histogram is empty")
    flat = per_group.reshape(n_groups, -1)
    resampled = np.empty((n_resamples, flat.shape[1]))
    rows = max(1, _WEIGHTS_PER_CHUNK // n_groups)
    for start in range(0, n_resamples, rows):
        stop = min(start + rows, n_resamples)
        drawn = rng.integers(0, n_groups, size=(stop - start, n_groups))
        drawn += n_groups * np.arange(stop - start)[:, None]  # one block of ids per resample
        weights = np.bincount(drawn.ravel(), minlength=drawn.size).reshape(drawn.shape)
        resampled[start:stop] = weights.astype(np.float64) @ flat  # float64: BLAS
    return resampled.reshape(n_resamples, *per_group.shape[1:])


def _group_codes(groups: ArrayLike, n: int) -> np.ndarray:
    """Group ids as codes 0..G-1 (in sorted order of the ids)."""
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups must have shape ({n},) (one id per item), got {groups.shape}")
    return np.unique(groups, return_inverse=True)[1].reshape(n)


def _members(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items sorted by group, and each group's start and size in that order."""
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes)
    return order, np.cumsum(sizes) - sizes, sizes


def _draw_groups(
    rng: np.random.Generator, order: np.ndarray, starts: np.ndarray, sizes: np.ndarray
) -> np.ndarray:
    """Item indices of ``len(sizes)`` groups drawn uniformly with replacement."""
    chosen = rng.integers(0, sizes.size, size=sizes.size)
    chosen_sizes = sizes[chosen]
    ends = np.cumsum(chosen_sizes)
    # output position p of chosen group j maps to item order[starts_j + p - (ends_j - sizes_j)]
    shift = np.repeat(starts[chosen] - ends + chosen_sizes, chosen_sizes)
    return order[np.arange(ends[-1]) + shift]


def _intervals(
    estimates: dict[str, float], resampled: dict[str, np.ndarray], level: float
) -> dict[str, ConfidenceInterval]:
    return {key: _interval(value, resampled[key], level) for key, value in estimates.items()}


def _interval(estimate: float, values: np.ndarray, level: float) -> ConfidenceInterval:
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return ConfidenceInterval(
        estimate, min(float(low), estimate), max(float(high), estimate), level, values.size
    )
