"""Proper scoring rules: Brier scores and negative log-likelihood."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from calib_metrics.validation import as_multiclass, as_top_label

#: Probabilities are clipped below at this value in ``nll``, so that a gold class given
#: probability 0 costs -log(1e-12) ~ 27.6 nats instead of infinity.
NLL_EPSILON = 1e-12


def brier_top_label(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Top-label Brier score: ``mean_i (c_i - y_i)**2``, in [0, 1].

    >>> brier_top_label([0.75, 0.25], [1, 0])
    0.0625
    """
    confidence, correct = as_top_label(confidence, correct)
    return float(np.mean((confidence - correct) ** 2))


def brier_multiclass(probs: ArrayLike, labels: ArrayLike) -> float:
    """Multiclass Brier score: ``mean_i sum_k (p_ik - 1[k = y_i])**2``, in [0, 2].

    Computed as ``(sum_ik p_ik**2 - 2 sum_i p_{i, y_i} + n) / n``, without an n x k temporary.

    >>> brier_multiclass([[0.5, 0.5], [1.0, 0.0]], [0, 0])  # (0.25 + 0.25 + 0) / 2
    0.25
    """
    probs, labels = as_multiclass(probs, labels)
    gold = probs[np.arange(labels.size), labels]
    return float((np.vdot(probs, probs) - 2.0 * gold.sum() + labels.size) / labels.size)


def nll(probs: ArrayLike, labels: ArrayLike) -> float:
    """Negative log-likelihood of the gold labels in nats:
    ``-mean_i log(max(p_{i, y_i}, NLL_EPSILON))``.

    >>> round(nll([[0.5, 0.5], [0.25, 0.75]], [0, 1]), 6)  # -(log 0.5 + log 0.75) / 2
    0.490415
    """
    probs, labels = as_multiclass(probs, labels)
    gold = probs[np.arange(labels.size), labels]
    return float(-np.mean(np.log(np.maximum(gold, NLL_EPSILON))))
