"""Confidence histograms: compact sufficient statistics of many top-label predictions.

A ``ConfidenceHistogram`` splits [0, 1] into ``resolution`` equal-width cells (the cell of ``c``
is ``min(floor(c * resolution), resolution - 1)``, decided exactly as in
``calib_metrics.binning``) and keeps, per cell and per correctness, the count, the sum of
confidences and the sum of squared confidences. Histograms add up exactly (counts) or to float
rounding (sums), so a token-level task keeps one small histogram per document and pools them.

Exact from a histogram whenever ``n_bins`` divides ``resolution`` (equal-width bins are then
unions of cells): ``n``, accuracy, mean confidence, ECE, MCE, RMS calibration error, one-bin ECE
and the top-label Brier score (``histogram_metrics``), and the equal-width reliability bins
(``reliability_bins_from_histogram``); the debiased L2 error would be exact too, from those
bins, but is not among ``histogram_metrics``. Not provided from histograms, because they need the
individual confidences: equal-mass binning, AUROC, AURC, accuracy at coverage, smooth ECE.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from calib_metrics._binned import (
    common_resolution,
    equal_width_edges,
    equal_width_index,
    histogram_statistics,
    metrics_from_statistics,
)
from calib_metrics.binning import ReliabilityBins
from calib_metrics.defaults import DEFAULT_N_BINS, DEFAULT_RESOLUTION
from calib_metrics.validation import as_top_label, check_positive_int

_COLUMNS = ("cell", "correct", "count", "sum_confidence", "sum_sq_confidence")
_INTEGER_COLUMNS = ("cell", "correct", "count")
# slack when checking that a stored mean confidence lies in its cell (float rounding of sums)
_CELL_SLACK = 1e-9


@dataclass(frozen=True, eq=False)
class ConfidenceHistogram:
    """Per-cell, per-correctness sufficient statistics on ``resolution`` cells over [0, 1].

    Stored sparsely: one entry per non-empty (cell, correctness) pair, sorted by ``cell`` then
    ``correct``, in read-only 1-D columns: ``cell`` (int64, in [0, resolution)), ``correct``
    (int64, 0 wrong or 1 correct), ``count`` (int64, >= 1), ``sum_confidence`` and
    ``sum_sq_confidence`` (float64). Construction validates all of it and raises ``ValueError``
    on a violation (including a mean confidence outside its cell).

    >>> a = ConfidenceHistogram.from_samples([0.12, 0.15, 0.9], [1, 0, 1], resolution=10)
    >>> a.cell.tolist(), a.correct.tolist(), a.count.tolist()
    ([1, 1, 9], [0, 1, 1], [1, 1, 1])
    >>> b = ConfidenceHistogram.from_dict(a.to_dict())  # JSON-friendly round trip
    >>> (a + b).n, (a + b).count.tolist(), ConfidenceHistogram.empty(10).n
    (6, [2, 2, 2], 0)
    """

    resolution: int
    cell: np.ndarray
    correct: np.ndarray
    count: np.ndarray
    sum_confidence: np.ndarray
    sum_sq_confidence: np.ndarray

    def __post_init__(self) -> None:
        resolution = check_positive_int("histogram resolution", self.resolution)
        object.__setattr__(self, "resolution", resolution)
        for name in _COLUMNS:
            object.__setattr__(self, name, _column(name, getattr(self, name)))
        sizes = {name: getattr(self, name).size for name in _COLUMNS}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"histogram columns have different lengths: {sizes}")
        if self.cell.size:
            self._check_entries()

    def _check_entries(self) -> None:
        if self.cell.min() < 0 or self.cell.max() >= self.resolution:
            raise ValueError(f"histogram cell out of range [0, {self.resolution})")
        if np.any((self.correct != 0) & (self.correct != 1)):
            raise ValueError("histogram correct must be 0 or 1")
        if self.count.min() < 1:
            raise ValueError("histogram count must be >= 1 (only non-empty entries are stored)")
        if not np.isfinite(np.concatenate((self.sum_confidence, self.sum_sq_confidence))).all():
            raise ValueError("histogram sums contain NaN or inf")
        if np.any(np.diff(2 * self.cell + self.correct) <= 0):
            raise ValueError("histogram entries must be sorted by (cell, correct), without repeats")
        edges = equal_width_edges(self.resolution)
        lower, upper = edges[self.cell], edges[self.cell + 1]
        for name, mean, low, high in (
            ("sum_confidence", self.sum_confidence / self.count, lower, upper),
            ("sum_sq_confidence", self.sum_sq_confidence / self.count, lower**2, upper**2),
        ):
            outside = np.flatnonzero((mean < low - _CELL_SLACK) | (mean > high + _CELL_SLACK))
            if outside.size:
                i = outside[0]
                raise ValueError(
                    f"histogram {name} of entry {i} is inconsistent with its cell "
                    f"{self.cell[i]}: mean {float(mean[i])!r} outside "
                    f"[{float(low[i])!r}, {float(high[i])!r}]"
                )

    @classmethod
    def from_samples(
        cls, confidence: ArrayLike, correct: ArrayLike, *, resolution: int = DEFAULT_RESOLUTION
    ) -> ConfidenceHistogram:
        """Histogram of top-label predictions (no samples give the empty histogram)."""
        confidence, correct = as_top_label(confidence, correct, allow_empty=True)
        resolution = check_positive_int("resolution", resolution)
        key = 2 * equal_width_index(confidence, resolution) + correct.astype(np.intp)
        return cls._aggregate(resolution, key, None, confidence, confidence**2)

    @classmethod
    def empty(cls, resolution: int = DEFAULT_RESOLUTION) -> ConfidenceHistogram:
        """The histogram of no samples."""
        nothing = np.zeros(0)
        return cls(resolution, nothing, nothing, nothing, nothing, nothing)

    @classmethod
    def merge(cls, histograms: Iterable[ConfidenceHistogram]) -> ConfidenceHistogram:
        """Sum of one or more histograms of the same resolution (the histogram of the pooled
        samples: counts exactly, sums to float rounding)."""
        histograms = list(histograms)
        resolution = common_resolution(histograms)
        return cls._aggregate(
            resolution,
            np.concatenate([2 * h.cell + h.correct for h in histograms]),
            np.concatenate([h.count for h in histograms]),
            np.concatenate([h.sum_confidence for h in histograms]),
            np.concatenate([h.sum_sq_confidence for h in histograms]),
        )

    @classmethod
    def _aggregate(
        cls,
        resolution: int,
        key: np.ndarray,
        count: np.ndarray | None,
        confidence: np.ndarray,
        squared: np.ndarray,
    ) -> ConfidenceHistogram:
        """Entries from values keyed by ``2 * cell + correct``; ``count=None`` counts each once."""
        size = 2 * resolution
        total = np.bincount(key, count, minlength=size)
        present = np.flatnonzero(total)
        return cls(
            resolution,
            present // 2,
            present % 2,
            total[present].astype(np.int64),  # exact: float sums of integer counts < 2**53
            np.bincount(key, confidence, minlength=size)[present],
            np.bincount(key, squared, minlength=size)[present],
        )

    def __add__(self, other: object) -> ConfidenceHistogram:
        """``a + b`` is ``ConfidenceHistogram.merge([a, b])``."""
        if not isinstance(other, ConfidenceHistogram):
            return NotImplemented
        return ConfidenceHistogram.merge((self, other))

    @property
    def n(self) -> int:
        """Number of samples."""
        return int(self.count.sum())

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly sparse form: ``{"resolution": int, "cell": [...], "correct": [...],
        "count": [...], "sum_confidence": [...], "sum_sq_confidence": [...]}`` with plain Python
        ints and floats, non-empty entries only."""
        columns = {name: getattr(self, name).tolist() for name in _COLUMNS}
        return {"resolution": self.resolution} | columns

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConfidenceHistogram:
        """Inverse of ``to_dict``; ``ValueError`` on a malformed dict (missing or unexpected keys,
        wrong types, inconsistent entries)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"histogram dict must be a mapping, got {type(data).__name__}")
        expected = ("resolution", *_COLUMNS)
        missing = [key for key in expected if key not in data]
        unexpected = sorted(set(data) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"malformed histogram dict: missing keys {missing}, unexpected keys {unexpected}"
            )
        return cls(*(data[key] for key in expected))


def canonical_order(histograms: Iterable[ConfidenceHistogram]) -> list[ConfidenceHistogram]:
    """The histograms sorted by their content (resolution, then the bytes of their columns).

    Group statistics such as a bootstrap over documents depend on the order of the groups; a
    sequence of per-document histograms carries no document ids, and the order in which
    documents arrive can differ between runs of the same evaluation (data-parallel ranks are
    gathered rank by rank). In this order they give the same result however they arrived.

    >>> a = ConfidenceHistogram.from_samples([0.9], [1], resolution=10)
    >>> b = ConfidenceHistogram.from_samples([0.2, 0.3], [0, 1], resolution=10)
    >>> canonical_order([a, b]) == canonical_order([b, a])
    True
    """

    def key(hist: ConfidenceHistogram) -> tuple[int, bytes]:
        return hist.resolution, b"".join(getattr(hist, name).tobytes() for name in _COLUMNS)

    return sorted(histograms, key=key)


def histogram_metrics(
    hist: ConfidenceHistogram, *, n_bins: int = DEFAULT_N_BINS
) -> dict[str, float]:
    """Metrics of the histogram's samples with ``n_bins`` equal-width bins: keys ``n`` (an int),
    ``acc``, ``mean_confidence``, ``ece``, ``mce``, ``rms_calibration_error``, ``ece_one_bin``,
    ``brier_top_label``; each equals its array version (``calib_metrics.ece`` etc.) to float
    rounding. ``ValueError`` if ``n_bins`` does not divide the resolution or there are no
    samples.

    >>> hist = ConfidenceHistogram.from_samples([0.75, 0.75, 0.25, 0.25], [1, 0, 0, 0])
    >>> metrics = histogram_metrics(hist)
    >>> metrics["n"], metrics["acc"], metrics["ece"], metrics["brier_top_label"]
    (4, 0.25, 0.25, 0.1875)
    """
    metrics = metrics_from_statistics(histogram_statistics(hist, n_bins))
    return {"n": hist.n} | {key: float(value) for key, value in metrics.items() if key != "n"}


def reliability_bins_from_histogram(
    hist: ConfidenceHistogram, *, n_bins: int = DEFAULT_N_BINS
) -> ReliabilityBins:
    """The equal-width ``ReliabilityBins`` of the histogram's samples (``n_bins`` must divide the
    resolution).

    >>> hist = ConfidenceHistogram.from_samples([0.25, 0.75, 0.75], [0, 1, 0], resolution=100)
    >>> bins = reliability_bins_from_histogram(hist, n_bins=2)
    >>> bins.count.tolist(), bins.accuracy.tolist(), bins.mean_confidence.tolist()
    ([1, 2], [0.0, 0.5], [0.25, 0.75])
    """
    count, sum_correct, sum_confidence, _, _ = histogram_statistics(hist, n_bins)
    return ReliabilityBins(
        equal_width_edges(n_bins), count.astype(np.int64), sum_confidence, sum_correct
    )


def _column(name: str, values: ArrayLike) -> np.ndarray:
    integer = name in _INTEGER_COLUMNS
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"histogram {name} must be a flat list, got shape {array.shape}")
    if array.size and array.dtype.kind not in ("iu" if integer else "iuf"):
        kind = "integers" if integer else "numbers"
        raise ValueError(f"histogram {name} must hold {kind}, got dtype {array.dtype}")
    array = array.astype(np.int64 if integer else np.float64)  # a private copy
    array.flags.writeable = False
    return array
