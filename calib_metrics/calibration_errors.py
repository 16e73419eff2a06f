"""Binned calibration errors of top-label predictions.

With bins ``b`` holding ``n_b`` of the ``n`` items, accuracy ``acc_b`` and mean confidence
``conf_b`` (``calib_metrics.binning``), each error is a weighted norm of the gaps
``acc_b - conf_b``; empty bins have weight 0. All of them, and their histogram and bootstrap
versions, come from the per-bin sums of one private kernel (``calib_metrics._binned``).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from calib_metrics._binned import (
    array_gaps,
    array_totals,
    ece_from_gaps,
    mce_from_gaps,
    rms_from_gaps,
)
from calib_metrics.defaults import DEFAULT_N_BINS, DEFAULT_STRATEGY
from calib_metrics.validation import as_top_label, checked_top_label


def ece(
    confidence: ArrayLike,
    correct: ArrayLike,
    *,
    n_bins: int = DEFAULT_N_BINS,
    strategy: str = DEFAULT_STRATEGY,
) -> float:
    """Expected calibration error (L1): ``sum_b n_b/n * |acc_b - conf_b|``, in [0, 1].

    One pass: per block of items, the bin index and a weighted ``np.bincount`` of the residuals.

    >>> ece([0.75, 0.75, 0.25, 0.25], [1, 0, 0, 0])  # bins [.2, .3) and [.7, .8): gaps .25, .25
    0.25
    """
    confidence, correct = checked_top_label(confidence, correct)
    return float(ece_from_gaps(array_gaps(confidence, correct, n_bins, strategy), confidence.size))


def mce(
    confidence: ArrayLike,
    correct: ArrayLike,
    *,
    n_bins: int = DEFAULT_N_BINS,
    strategy: str = DEFAULT_STRATEGY,
) -> float:
    """Maximum calibration error: ``max_b |acc_b - conf_b|`` over the non-empty bins.

    >>> mce([0.75, 0.75, 0.75, 0.75, 0.25], [1, 1, 1, 1, 0])  # gaps .25 (4 items) and .25
    0.25
    >>> mce([0.75, 0.75, 0.75, 0.75, 0.25], [1, 1, 1, 0, 1])  # gaps 0 and .75
    0.75
    """
    confidence, correct = checked_top_label(confidence, correct)
    _, count, sum_confidence, sum_correct = array_totals(confidence, correct, n_bins, strategy)
    return float(mce_from_gaps(sum_correct - sum_confidence, count))


def rms_calibration_error(
    confidence: ArrayLike,
    correct: ArrayLike,
    *,
    n_bins: int = DEFAULT_N_BINS,
    strategy: str = DEFAULT_STRATEGY,
) -> float:
    """Root-mean-square calibration error: ``sqrt(sum_b n_b/n * (acc_b - conf_b)**2)``.

    >>> round(rms_calibration_error([0.75] * 4 + [0.25], [1, 1, 1, 0, 1]), 6)  # sqrt(.2 * .75**2)
    0.33541
    """
    confidence, correct = checked_top_label(confidence, correct)
    _, count, sum_confidence, sum_correct = array_totals(confidence, correct, n_bins, strategy)
    return float(rms_from_gaps(sum_correct - sum_confidence, count))


def ece_one_bin(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Calibration-in-the-large: ``|mean(confidence) - mean(correct)|`` (the ECE of one bin).

    >>> ece_one_bin([0.75, 0.75, 0.25, 0.25], [1, 0, 0, 0])  # |0.5 - 0.25|
    0.25
    """
    confidence, correct = as_top_label(confidence, correct)
    return abs(float(correct.sum() - confidence.sum())) / confidence.size


def debiased_l2_calibration_error(
    confidence: ArrayLike,
    correct: ArrayLike,
    *,
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

    >>> debiased_l2_calibration_error([0.25] * 4, [1, 1, 1, 1])  # one bin, gap .75, no variance
    0.75
    >>> debiased_l2_calibration_error([0.5] * 4, [1, 0, 1, 0])  # calibrated: clipped at 0
    0.0
    """
    confidence, correct = checked_top_label(confidence, correct)
    _, count, sum_confidence, sum_correct = array_totals(confidence, correct, n_bins, strategy)
    pairs = count >= 2
    n_b = count[pairs]
    accuracy = sum_correct[pairs] / n_b
    gap = accuracy - sum_confidence[pairs] / n_b
    per_bin = gap**2 - accuracy * (1.0 - accuracy) / (n_b - 1)
    return float(np.sqrt(max(0.0, float(np.sum(n_b * per_bin)) / int(count.sum()))))
