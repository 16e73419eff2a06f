"""Binned calibration errors of top-label predictions.

With bins ``b`` holding ``n_b`` of the ``n`` items, accuracy ``acc_b`` and mean confidence
``conf_b`` (``calib_metrics.binning``), each error is a weighted norm of the gaps
``acc_b - conf_b``; empty bins have weight 0. The ``*_from_gaps`` functions compute the errors
from per-bin sums of residuals ``gap_b = sum_{i in b} (y_i - c_i) = n_b (acc_b - conf_b)`` and
counts (bins on the last axis, any leading axes), which is how histograms and bootstrap resamples
use them.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from calib_metrics.binning import reliability_bins, sum_over_blocks
from calib_metrics.defaults import DEFAULT_N_BINS, DEFAULT_STRATEGY
from calib_metrics.validation import as_top_label, checked_top_label


def ece(
    confidence: ArrayLike,
    correct: ArrayLike,
    n_bins: int = DEFAULT_N_BINS,
    strategy: str = DEFAULT_STRATEGY,
) -> float:
    """Expected calibration error (L1): ``sum_b n_b/n * |acc_b - conf_b|``, in [0, 1].

    One pass: per block of items, the bin index and a weighted ``np.bincount`` of the residuals.
    """
    confidence, correct = checked_top_label(confidence, correct)

    def block_gaps(items: slice, index: np.ndarray) -> np.ndarray:
        return np.bincount(index, correct[items] - confidence[items], minlength=n_bins)

    _, gap = sum_over_blocks(confidence, n_bins, strategy, block_gaps)
    return float(ece_from_gaps(gap, confidence.size))


def mce(
    confidence: ArrayLike,
    correct: ArrayLike,
    n_bins: int = DEFAULT_N_BINS,
    strategy: str = DEFAULT_STRATEGY,
) -> float:
    """Maximum calibration error: ``max_b |acc_b - conf_b|`` over the non-empty bins."""
    bins = reliability_bins(confidence, correct, n_bins, strategy)
    return float(mce_from_gaps(bins.sum_correct - bins.sum_confidence, bins.count))


def rms_calibration_error(
    confidence: ArrayLike,
    correct: ArrayLike,
    n_bins: int = DEFAULT_N_BINS,
    strategy: str = DEFAULT_STRATEGY,
) -> float:
    """Root-mean-square calibration error: ``sqrt(sum_b n_b/n * (acc_b - conf_b)**2)``."""
    bins = reliability_bins(confidence, correct, n_bins, strategy)
    return float(rms_from_gaps(bins.sum_correct - bins.sum_confidence, bins.count))


def ece_one_bin(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Calibration-in-the-large: ``|mean(confidence) - mean(correct)|`` (the ECE of one bin)."""
    confidence, correct = as_top_label(confidence, correct)
    return abs(float(correct.sum() - confidence.sum())) / confidence.size


def debiased_l2_calibration_error(
    confidence: ArrayLike,
    correct: ArrayLike,
    n_bins: int = DEFAULT_N_BINS,
    strategy: str = DEFAULT_STRATEGY,
) -> float:
    """Debiased L2 calibration error of Kumar, Liang & Ma (2019, "Verified Uncertainty
    Calibration").

    ``sqrt(max(0, sum_b n_b/n * [(acc_b - conf_b)**2 - acc_b (1 - acc_b) / (n_b - 1)]))``: the
    plug-in squared gap of a bin overestimates the true one by the variance of ``acc_b``, which
    ``acc_b (1 - acc_b) / (n_b - 1)`` estimates without bias. A bin with ``n_b < 2`` has no such
    estimate and contributes 0 (its weight still counts in ``n``), as in the authors' reference
    implementation; its plug-in ``(y - c)**2`` would carry the whole Bernoulli variance. The
    debiased sum can be negative for well-calibrated data and is clipped at 0.
    """
    bins = reliability_bins(confidence, correct, n_bins, strategy)
    pairs = bins.count >= 2
    n_b = bins.count[pairs]
    accuracy = bins.sum_correct[pairs] / n_b
    gap = accuracy - bins.sum_confidence[pairs] / n_b
    per_bin = gap**2 - accuracy * (1.0 - accuracy) / (n_b - 1)
    return float(np.sqrt(max(0.0, float(np.sum(n_b * per_bin)) / bins.n)))


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
