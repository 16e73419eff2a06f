"""Bootstrap confidence intervals of top-label metrics: one entry point, ``bootstrap_ci``, and
under it ``index_bootstrap_ci``, the bootstrap of any statistic of item indices.

Percentile intervals: the ``(1 - level)/2`` and ``(1 + level)/2`` quantiles (numpy's default
linear interpolation) of the metric over ``n_resamples`` resamples, widened where needed to
contain the point estimate. The widening matters for ECE: its bootstrap distribution carries the
same upward small-sample bias as the estimate itself (a resample's binned gaps are noisier), so
for nearly calibrated data the percentile interval can lie entirely above the estimate.

Randomness comes from ``numpy.random.Generator(PCG64(seed))`` only: the same inputs and seed give
the same interval. With ``groups`` (or a sequence of per-group histograms), whole groups (e.g. the
documents of a token-level task) are resampled with replacement instead of items, which keeps the
dependence inside a group.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from calib_metrics._binned import (
    bin_sums,
    check_strategy,
    entry_bins,
    equal_width_index,
    item_statistics,
    metrics_from_statistics,
)
from calib_metrics.calibration_errors import ece, ece_one_bin, mce, rms_calibration_error
from calib_metrics.defaults import (
    DEFAULT_LEVEL,
    DEFAULT_N_BINS,
    DEFAULT_N_RESAMPLES,
    DEFAULT_RESOLUTION,
    DEFAULT_SEED,
    DEFAULT_STRATEGY,
)
from calib_metrics.histogram import ConfidenceHistogram
from calib_metrics.scores import brier_top_label
from calib_metrics.validation import as_top_label, check_level, check_positive_int

# Most resample-by-group weights held at once (rows x groups) by the group bootstrap.
_WEIGHTS_PER_CHUNK = 1 << 22

Metric = Callable[[np.ndarray, np.ndarray], float]


def _accuracy(confidence: np.ndarray, correct: np.ndarray) -> float:
    return float(np.mean(correct))


def _mean_confidence(confidence: np.ndarray, correct: np.ndarray) -> float:
    return float(np.mean(confidence))


# The named metrics, the keys of ``histogram_metrics`` but ``n``, as array metrics.
_NAMED: dict[str, Callable[..., float]] = {
    "acc": _accuracy,
    "mean_confidence": _mean_confidence,
    "ece": ece,
    "mce": mce,
    "rms_calibration_error": rms_calibration_error,
    "ece_one_bin": ece_one_bin,
    "brier_top_label": brier_top_label,
}
# the named metrics that take n_bins and strategy
_BINNED = ("ece", "mce", "rms_calibration_error")


@dataclass(frozen=True)
class ConfidenceInterval:
    """A bootstrap percentile interval ``[low, high]`` around ``estimate`` (always inside it).

    >>> ConfidenceInterval(estimate=0.1, low=0.05, high=0.2, level=0.95, n_resamples=1000)
    ConfidenceInterval(estimate=0.1, low=0.05, high=0.2, level=0.95, n_resamples=1000)
    """

    estimate: float
    low: float
    high: float
    level: float
    n_resamples: int


def bootstrap_ci(
    confidence: ArrayLike | None = None,
    correct: ArrayLike | None = None,
    *,
    histograms: ConfidenceHistogram | Sequence[ConfidenceHistogram] | None = None,
    metric: str | Metric = "ece",
    groups: ArrayLike | None = None,
    n_bins: int = DEFAULT_N_BINS,
    strategy: str = DEFAULT_STRATEGY,
    n_resamples: int = DEFAULT_N_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = DEFAULT_SEED,
) -> ConfidenceInterval:
    """Bootstrap interval of a top-label metric, of arrays or of confidence histograms.

    The data: top-label arrays ``confidence, correct``, optionally with ``groups`` (one sortable
    id per item, e.g. a document id): whole groups are resampled; or instead ``histograms=``: one
    ``ConfidenceHistogram`` (its items are resampled) or a sequence of them, one per group (whole
    groups are resampled; the interval depends on their order, as an item bootstrap depends on
    the items' order: pass ``canonical_order(histograms)`` for one that does not).

    ``metric``: one of the names ``"acc"``, ``"mean_confidence"``, ``"ece"``, ``"mce"``,
    ``"rms_calibration_error"``, ``"ece_one_bin"``, ``"brier_top_label"`` (the
    ``histogram_metrics`` keys; ``n_bins`` and ``strategy`` are the bins of the three binned
    ones), or any ``metric(confidence, correct) -> float`` of arrays. Resamples are computed:

    * for a name with equal-width bins, vectorised, every resample at once from per-bin
      statistics. With groups (or per-group histograms) exactly: a resample's per-bin statistics
      are ``W @ S``, ``W`` the (resamples x groups) counts of each group drawn and ``S`` the
      per-group, per-bin statistics (empty groups are left out of the draw). Items are resampled
      from a histogram (for arrays, their ``ConfidenceHistogram`` with ``resolution`` the
      smallest multiple of ``n_bins`` >= ``DEFAULT_RESOLUTION``): a resample's counts over the
      non-empty (cell, correctness) entries are multinomial, as under index resampling, and each
      drawn item carries its entry's mean confidence and mean squared confidence, so per-bin
      counts and numbers correct are exact and a resample's ECE, MCE, mean confidence and one-bin
      ECE differ from the index resample's by less than ``1/resolution``. Histograms need
      ``n_bins`` to divide their resolution.
    * for a callable, or a name with equal-mass bins (arrays only), by exact resampling
      (``index_bootstrap_ci`` of the metric of the items drawn): the metric is called once per
      resample, on ``n`` item indices drawn uniformly with replacement or, with ``groups``, on
      all the items of as many groups as there are, drawn uniformly with replacement;
      ``ValueError`` if it returns NaN or inf on a resample.

    The estimate is the metric of all the data: the array metric itself (bitwise), or the
    ``histogram_metrics`` of the pooled histograms.

    >>> rng = np.random.default_rng(0)
    >>> confidence = rng.random(400); correct = rng.random(400) < confidence**2
    >>> ci = bootstrap_ci(confidence, correct, metric="ece", n_resamples=200)
    >>> round(ci.estimate, 3), round(ci.low, 3), round(ci.high, 3), ci.level, ci.n_resamples
    (0.166, 0.137, 0.207, 0.95, 200)
    >>> ci = bootstrap_ci(confidence, correct, metric=brier_top_label, groups=np.arange(400) % 8)
    >>> round(ci.estimate, 3), round(ci.low, 3), round(ci.high, 3)
    (0.17, 0.152, 0.185)
    >>> docs = [ConfidenceHistogram.from_samples(confidence[i::8], correct[i::8]) for i in range(8)]
    >>> ci = bootstrap_ci(histograms=docs, metric="ece", n_resamples=200)
    >>> round(ci.estimate, 3), round(ci.low, 3), round(ci.high, 3)
    (0.166, 0.143, 0.195)
    """
    if histograms is not None:
        if confidence is not None or correct is not None or groups is not None:
            raise ValueError("give confidence and correct (and groups), or histograms, not both")
        return _histogram_interval(
            histograms, metric, n_bins, strategy, n_resamples, check_level(level), seed
        )
    if confidence is None or correct is None:
        raise ValueError("give confidence and correct, or histograms")
    confidence, correct = as_top_label(confidence, correct)
    n_resamples = check_positive_int("n_resamples", n_resamples)
    level = check_level(level)
    if isinstance(metric, str) and check_strategy(strategy) == "equal_width":
        n_bins = check_positive_int("n_bins", n_bins)
        codes = None if groups is None else _group_codes(groups, confidence.size)
        estimate = _array_metric(metric, n_bins, strategy)(confidence, correct)
        rng = np.random.Generator(np.random.PCG64(seed))
        resampled = _binned_resamples(confidence, correct, codes, n_bins, n_resamples, rng)
        return _interval(estimate, metrics_from_statistics(resampled)[metric], level)
    array_metric = _array_metric(metric, n_bins, strategy)
    return index_bootstrap_ci(
        lambda index: array_metric(confidence[index], correct[index]),
        confidence.size,
        groups=groups,
        n_resamples=n_resamples,
        level=level,
        seed=seed,
    )


def index_bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    n: int,
    *,
    groups: ArrayLike | None = None,
    n_resamples: int = DEFAULT_N_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = DEFAULT_SEED,
) -> ConfidenceInterval:
    """Bootstrap interval of ``statistic(index)``, a statistic of the caller's computed on the
    items at the positions ``index`` of ``n`` items (any data of the caller's: option
    probabilities, scores to refit a recalibration map on, ...).

    The estimate is ``statistic(np.arange(n))``. Each of ``n_resamples`` resamples calls it once
    on ``n`` positions drawn uniformly with replacement or, with ``groups`` (one sortable id per
    item), on all the positions of as many groups as there are, drawn uniformly with replacement
    (with one item per group and ids ``0..n-1`` both draw the same positions); the draws come
    from ``numpy.random.Generator(PCG64(seed))`` only. ``ValueError`` if the statistic (the
    caller's metric) returns NaN or inf on a resample. ``bootstrap_ci`` of a callable metric is
    this bootstrap of ``metric(confidence[index], correct[index])``.

    >>> values = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0])
    >>> ci = index_bootstrap_ci(lambda index: float(values[index].mean()), 8, n_resamples=200)
    >>> ci.estimate, round(ci.low, 3), round(ci.high, 3), ci.n_resamples
    (3.875, 2.122, 5.628, 200)
    >>> pairs = [0, 0, 1, 1, 2, 2, 3, 3]
    >>> ci = index_bootstrap_ci(lambda index: float(values[index].mean()), 8, groups=pairs)
    >>> ci.estimate, ci.low <= ci.estimate <= ci.high
    (3.875, True)
    """
    n = check_positive_int("n", n)
    n_resamples = check_positive_int("n_resamples", n_resamples)
    level = check_level(level)
    members = None if groups is None else _members(_group_codes(groups, n))
    rng = np.random.Generator(np.random.PCG64(seed))
    values = np.empty(n_resamples)
    for r in range(n_resamples):
        index = rng.integers(0, n, size=n) if members is None else _draw_groups(rng, *members)
        values[r] = statistic(index)
    if not np.isfinite(values).all():
        raise ValueError("the metric returned NaN or inf on a bootstrap resample")
    return _interval(float(statistic(np.arange(n))), values, level)


def _array_metric(metric: str | Metric, n_bins: int, strategy: str) -> Metric:
    """The array metric of a name (with its bins), or the callable itself."""
    if not isinstance(metric, str):
        if not callable(metric):
            raise ValueError(f"metric must be a name or a callable, got {metric!r}")
        return metric
    if metric not in _NAMED:
        raise ValueError(f"metric must be a callable or one of {tuple(_NAMED)}, got {metric!r}")
    if metric in _BINNED:
        return functools.partial(_NAMED[metric], n_bins=n_bins, strategy=strategy)
    return _NAMED[metric]


def _binned_resamples(
    confidence: np.ndarray,
    correct: np.ndarray,
    codes: np.ndarray | None,
    n_bins: int,
    n_resamples: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Per-bin statistics (resamples, 5, n_bins) of resampled arrays: items through their
    histogram, groups exactly from per-group, per-bin statistics of the items (never a
    groups x resolution array)."""
    if codes is None:
        resolution = n_bins * math.ceil(DEFAULT_RESOLUTION / n_bins)
        hist = ConfidenceHistogram.from_samples(confidence, correct, resolution=resolution)
        entries = entry_bins([hist], n_bins)
        return _item_resamples(entries.bin, entries.statistics, n_bins, n_resamples, rng)
    bins = equal_width_index(confidence, n_bins)
    statistics = item_statistics(confidence, correct)
    per_group = _per_group(codes, bins, statistics, int(codes.max()) + 1, n_bins)
    return _group_resamples(per_group, n_resamples, rng)


def _histogram_interval(
    units: ConfidenceHistogram | Sequence[ConfidenceHistogram],
    metric: str | Metric,
    n_bins: int,
    strategy: str,
    n_resamples: int,
    level: float,
    seed: int,
) -> ConfidenceInterval:
    """The interval of a named metric from one histogram (items) or per-group histograms."""
    if not isinstance(metric, str):
        raise ValueError("a metric of histograms must be named (a key of histogram_metrics)")
    _array_metric(metric, n_bins, strategy)  # checks the name
    if check_strategy(strategy) != "equal_width":
        raise ValueError(f"histograms have equal-width bins only, got strategy={strategy!r}")
    n_resamples = check_positive_int("n_resamples", n_resamples)
    rng = np.random.Generator(np.random.PCG64(seed))
    if isinstance(units, ConfidenceHistogram):
        entries = entry_bins([units], n_bins)
        totals = bin_sums(entries.bin, entries.statistics, n_bins)
        resampled = _item_resamples(entries.bin, entries.statistics, n_bins, n_resamples, rng)
    else:
        units = list(units)
        entries = entry_bins(units, n_bins)
        per_group = _per_group(entries.owner, entries.bin, entries.statistics, len(units), n_bins)
        totals = per_group.sum(axis=0)
        per_group = per_group[per_group[:, 0].sum(axis=1) > 0]
        resampled = _group_resamples(per_group, n_resamples, rng)
    estimate = float(metrics_from_statistics(totals)[metric])
    return _interval(estimate, metrics_from_statistics(resampled)[metric], level)


def _per_group(
    group: np.ndarray, bins: np.ndarray, statistics: np.ndarray, n_groups: int, n_bins: int
) -> np.ndarray:
    """Statistics (5, m) of items or entries summed per group and bin: (groups, 5, n_bins)."""
    summed = bin_sums(group * n_bins + bins, statistics, n_groups * n_bins)
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


def _interval(estimate: float, values: np.ndarray, level: float) -> ConfidenceInterval:
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return ConfidenceInterval(
        estimate, min(float(low), estimate), max(float(high), estimate), level, values.size
    )
