"""Calibration of every option's probability, not only the top one's.

* ``classwise_ece``: every (item, option) pair is one prediction, the option's probability
  against whether it is the gold option, all pairs pooled into one ECE (the convention of the
  calibration figure of the GPT-4 technical report, which bins the probability of each of A-D).
* ``static_calibration_error`` (SCE, Nixon et al. 2019, "Measuring Calibration in Deep
  Learning"): the mean over options k of the ECE of ``probs[:, k]`` against ``labels == k``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from calib_metrics.calibration_errors import ece
from calib_metrics.defaults import DEFAULT_N_BINS, DEFAULT_STRATEGY
from calib_metrics.validation import as_multiclass


def _one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    hot = np.zeros((labels.size, k))
    hot[np.arange(labels.size), labels] = 1.0
    return hot


def classwise_ece(
    probs: ArrayLike,
    labels: ArrayLike,
    *,
    n_bins: int = DEFAULT_N_BINS,
    strategy: str = DEFAULT_STRATEGY,
) -> float:
    """ECE of all n * k option probabilities ``probs[i, j]`` against ``labels[i] == j``.

    >>> round(classwise_ece([[0.8, 0.2], [0.6, 0.4]], [0, 1]), 6)  # (.2 + .2 + .6 + .6) / 4
    0.4
    """
    probs, labels = as_multiclass(probs, labels)
    hot = _one_hot(labels, probs.shape[1])
    return ece(probs.ravel(), hot.ravel(), n_bins=n_bins, strategy=strategy)


def static_calibration_error(
    probs: ArrayLike, labels: ArrayLike, *, n_bins: int = DEFAULT_N_BINS
) -> float:
    """SCE: ``(1/k) sum_j sum_b n_bj / n * |acc_bj - conf_bj|``, the mean over options j of the
    equal-width ECE of ``probs[:, j]`` against ``labels == j``.

    >>> round(static_calibration_error([[0.9, 0.1], [0.6, 0.4]], [0, 1]), 6)  # (.35 + .35) / 2
    0.35
    """
    probs, labels = as_multiclass(probs, labels)
    hot = _one_hot(labels, probs.shape[1])
    per_option = [ece(probs[:, j], hot[:, j], n_bins=n_bins) for j in range(probs.shape[1])]
    return float(np.mean(per_option))
