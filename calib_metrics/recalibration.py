"""Recalibration maps, each a ``fit`` / ``apply`` pair, and cross-fitting to score them honestly.

* ``TemperatureScaling`` (multiple choice, where every option's score is known): option
  probabilities ``softmax(scores / T)``; ``fit`` minimises the mean negative log-likelihood of the
  gold options over ``T > 0`` (Guo et al., 2017), by Newton's method on ``1/T`` (the objective is
  convex in ``1/T``).
* ``PlattScaling`` (any top-label confidence): ``sigmoid(a * logit(c) + b)``; ``fit`` maximises
  the likelihood of correctness with Platt's (1999) smoothed targets ``(N+ + 1)/(N+ + 2)`` and
  ``1/(N- + 2)``, which keeps the fit finite on separable data.
* ``HistogramBinning``: the accuracy of the equal-width bin of ``c`` (Zadrozny & Elkan, 2001);
  a bin without training items keeps its centre.
* ``IsotonicCalibration``: the non-decreasing step function of ``c`` closest to correctness in
  squared error (pool-adjacent-violators; Zadrozny & Elkan, 2002).

A map fitted on the items it is scored on flatters them (a flexible map fits the noise).
``cross_fit`` fits on K-1 folds and applies to the held-out one, for every fold; with ``groups``
(a document of a token task, an MMLU subject) a group's items stay in one fold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from calib_metrics._binned import equal_width_index
from calib_metrics.defaults import DEFAULT_N_BINS, DEFAULT_SEED
from calib_metrics.validation import as_top_label, check_positive_int

#: Newton iterations stop when a step changes the parameter by less than this (relative).
_TOLERANCE = 1e-10
_MAX_ITERATIONS = 100
#: Temperature scaling stops at this relative change of 1/T (float32 per-item terms).
_TEMPERATURE_TOLERANCE = 1e-7
_SMALLEST_INVERSE_TEMPERATURE = 1e-9
#: Confidences are clipped to [eps, 1 - eps] before the logit of Platt scaling.
_LOGIT_EPS = 1e-12


def _scores_and_labels(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 2 or scores.shape[1] < 2 or scores.shape[0] == 0:
        raise ValueError(f"scores must be (n, k) with n >= 1 and k >= 2, got {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite (a -inf log-likelihood cannot be rescaled)")
    if labels.shape != (scores.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be {scores.shape[0]} integers, got {labels.shape}")
    if labels.min() < 0 or labels.max() >= scores.shape[1]:
        raise ValueError(f"labels must lie in [0, {scores.shape[1]})")
    return scores, labels.astype(np.intp)


@dataclass(frozen=True)
class TemperatureScaling:
    """``softmax(scores / temperature)`` over each item's options.

    >>> fitted = TemperatureScaling.fit([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0]], [0, 0, 0])
    >>> round(fitted.temperature, 4), fitted.apply([[2.0, 0.0]]).round(4).tolist()
    (2.8854, [[0.6667, 0.3333]])
    """

    temperature: float

    @classmethod
    def fit(cls, scores: ArrayLike, labels: ArrayLike) -> TemperatureScaling:
        """The temperature minimising ``mean_i -log softmax(scores_i / T)[labels_i]``.

        ``scores`` (n, k) are option log-likelihoods or logits. With ``b = 1/T`` and ``d`` the
        scores minus each item's maximum, the objective ``mean(logsumexp(b d) - b d_gold)`` is
        convex in ``b``, with derivative ``mean(E_p[d] - d_gold)`` and second derivative
        ``mean(Var_p[d])``: Newton's method, kept inside a shrinking bracket of the root of the
        derivative. Raises ``ValueError`` when every item's options are tied (no temperature is
        better than another).
        """
        scores, labels = _scores_and_labels(scores, labels)
        # (k, n) float32: per-item maxima and sums are k vector operations, exp runs faster
        columns = np.ascontiguousarray(scores.T, dtype=np.float32)
        columns -= columns.max(axis=0)  # <= 0; the objective is unchanged
        d_gold = float(columns[labels, np.arange(labels.size)].mean(dtype=np.float64))
        if not np.any(columns):
            raise ValueError("every item's options are tied: the temperature is not identified")
        low, high, beta = 0.0, np.inf, 1.0
        for _ in range(_MAX_ITERATIONS):
            gradient, curvature = _temperature_derivatives(columns, beta, d_gold)
            if gradient > 0:
                high = beta
            else:
                low = beta
            step = gradient / curvature if curvature > 0 else -np.inf
            candidate = beta - step
            if not low < candidate < high:  # Newton left the bracket: bisect (or grow it)
                candidate = (low + high) / 2.0 if np.isfinite(high) else 2.0 * max(beta, low)
            if abs(candidate - beta) <= _TEMPERATURE_TOLERANCE * beta:
                beta = candidate
                break
            if high < _SMALLEST_INVERSE_TEMPERATURE:
                raise ValueError(
                    "the scores carry no information about the gold option: the best "
                    "temperature is infinite"
                )
            beta = candidate
        return cls(temperature=1.0 / beta)

    def apply(self, scores: ArrayLike) -> np.ndarray:
        """Option probabilities (n, k) of ``scores`` at the fitted temperature."""
        columns = np.asarray(scores, dtype=np.float64).T / self.temperature
        e = np.exp(columns - columns.max(axis=0))
        e /= e.sum(axis=0)
        return e.T


def _temperature_derivatives(
    columns: np.ndarray, beta: float, d_gold: float
) -> tuple[float, float]:
    """First and second derivative in ``beta`` of the temperature objective (see ``fit``):
    per-item terms in the columns' float32, their means accumulated in float64."""
    e = np.exp(columns * np.float32(beta))
    total = e.sum(axis=0)
    e *= columns
    first = e.sum(axis=0) / total
    e *= columns
    spread = e.sum(axis=0) / total - first * first
    return float(first.mean(dtype=np.float64) - d_gold), float(spread.mean(dtype=np.float64))


def _logit(confidence: np.ndarray) -> np.ndarray:
    c = np.clip(confidence, _LOGIT_EPS, 1.0 - _LOGIT_EPS)
    return np.log(c) - np.log1p(-c)


@dataclass(frozen=True)
class PlattScaling:
    """``sigmoid(slope * logit(c) + intercept)`` of a top-label confidence ``c``.

    >>> fitted = PlattScaling.fit([0.9, 0.9, 0.9, 0.9], [1, 0, 1, 0])  # overconfident
    >>> round(float(fitted.apply([0.9])[0]), 4)
    0.5
    """

    slope: float
    intercept: float

    @classmethod
    def fit(cls, confidence: ArrayLike, correct: ArrayLike) -> PlattScaling:
        """Maximum likelihood of Platt's smoothed targets (see the module docstring)."""
        confidence, correct = as_top_label(confidence, correct)
        x = _logit(confidence)
        positives = correct.sum()
        negatives = correct.size - positives
        target = np.where(correct > 0, (positives + 1) / (positives + 2), 1 / (negatives + 2))
        design = np.column_stack([x, np.ones_like(x)])
        theta = np.array([1.0, 0.0]) if np.ptp(x) > 0 else np.array([0.0, 0.0])

        def loss(t: np.ndarray) -> float:
            z = design @ t
            return float(np.mean(np.logaddexp(0.0, z) - target * z))

        value = loss(theta)
        for _ in range(_MAX_ITERATIONS):
            p = 1.0 / (1.0 + np.exp(-(design @ theta)))
            gradient = design.T @ (p - target) / x.size
            hessian = (design * (p * (1 - p))[:, None]).T @ design / x.size
            hessian += 1e-12 * np.eye(2)  # a constant x leaves the slope unidentified
            step = np.linalg.solve(hessian, gradient)
            candidate = theta - step
            while loss(candidate) > value + 1e-15 and np.abs(step).max() > _TOLERANCE:
                step /= 2.0
                candidate = theta - step
            if np.abs(candidate - theta).max() <= _TOLERANCE * max(1.0, np.abs(theta).max()):
                theta = candidate
                break
            theta, value = candidate, loss(candidate)
        return cls(slope=float(theta[0]), intercept=float(theta[1]))

    def apply(self, confidence: ArrayLike) -> np.ndarray:
        """Recalibrated confidences."""
        z = self.slope * _logit(np.asarray(confidence, dtype=np.float64)) + self.intercept
        return 1.0 / (1.0 + np.exp(-z))


@dataclass(frozen=True)
class HistogramBinning:
    """The training accuracy of the equal-width bin of a confidence.

    >>> HistogramBinning.fit([0.15, 0.12, 0.95], [1, 0, 1], n_bins=10).apply([0.11, 0.5, 0.99])
    array([0.5 , 0.55, 1.  ])
    """

    values: np.ndarray  # (n_bins,): per-bin accuracy, or the bin's centre where it was empty

    @classmethod
    def fit(
        cls, confidence: ArrayLike, correct: ArrayLike, *, n_bins: int = DEFAULT_N_BINS
    ) -> HistogramBinning:
        """Per-bin accuracy on ``n_bins`` equal-width bins."""
        confidence, correct = as_top_label(confidence, correct)
        n_bins = check_positive_int("n_bins", n_bins)
        index = equal_width_index(confidence, n_bins)
        counts = np.bincount(index, minlength=n_bins)
        hits = np.bincount(index, correct, minlength=n_bins)
        centres = (np.arange(n_bins) + 0.5) / n_bins
        values = np.where(counts > 0, hits / np.maximum(counts, 1), centres)
        values.flags.writeable = False
        return cls(values=values)

    def apply(self, confidence: ArrayLike) -> np.ndarray:
        """Recalibrated confidences."""
        confidence = np.asarray(confidence, dtype=np.float64)
        return self.values[equal_width_index(confidence, self.values.size)]


@dataclass(frozen=True)
class IsotonicCalibration:
    """A non-decreasing step function of confidence fitted by pool-adjacent-violators.

    >>> IsotonicCalibration.fit([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1]).apply([0.05, 0.25, 0.9])
    array([0. , 0.5, 1. ])
    """

    starts: np.ndarray  # (m,): the smallest training confidence of each block, increasing
    values: np.ndarray  # (m,): each block's mean correctness, non-decreasing

    @classmethod
    def fit(cls, confidence: ArrayLike, correct: ArrayLike) -> IsotonicCalibration:
        """The least-squares non-decreasing fit of correctness on confidence."""
        confidence, correct = as_top_label(confidence, correct)
        x, inverse = np.unique(confidence, return_inverse=True)
        weight = np.bincount(inverse).astype(np.float64)
        total = np.bincount(inverse, correct)
        starts: list[float] = []
        sums: list[float] = []
        weights: list[float] = []
        for xi, si, wi in zip(x.tolist(), total.tolist(), weight.tolist(), strict=True):
            starts.append(xi)
            sums.append(si)
            weights.append(wi)
            while len(sums) > 1 and sums[-2] * weights[-1] > sums[-1] * weights[-2]:
                pooled_sum, pooled_weight = sums.pop(), weights.pop()
                starts.pop()
                sums[-1] += pooled_sum
                weights[-1] += pooled_weight
        values = np.asarray(sums) / np.asarray(weights)
        return cls(starts=np.asarray(starts), values=values)

    def apply(self, confidence: ArrayLike) -> np.ndarray:
        """The value of the block a confidence falls in (the first block below the first)."""
        confidence = np.asarray(confidence, dtype=np.float64)
        block = np.searchsorted(self.starts, confidence, side="right") - 1
        return self.values[np.clip(block, 0, self.values.size - 1)]


def cross_fit(
    fit: Callable[[Any, Any], Any],
    inputs: ArrayLike,
    targets: ArrayLike,
    *,
    groups: ArrayLike | None = None,
    n_folds: int = 5,
    seed: int = DEFAULT_SEED,
) -> np.ndarray:
    """Out-of-fold recalibrated predictions: ``fit(inputs[train], targets[train]).apply(
    inputs[held_out])`` for each of ``n_folds`` folds, in the items' order.

    Items (or, with ``groups``, whole groups) are shuffled with ``numpy.random.Generator(PCG64(
    seed))`` and dealt to the folds in turn, so fold sizes differ by at most one item (group).

    >>> import numpy as np
    >>> c = np.linspace(0.05, 0.95, 20); y = (np.arange(20) % 2).astype(float)
    >>> cross_fit(HistogramBinning.fit, c, y, n_folds=4).shape
    (20,)
    """
    inputs = np.asarray(inputs)
    targets = np.asarray(targets)
    n = inputs.shape[0]
    n_folds = check_positive_int("n_folds", n_folds)
    rng = np.random.Generator(np.random.PCG64(seed))
    if groups is None:
        fold = np.empty(n, dtype=np.intp)
        fold[rng.permutation(n)] = np.arange(n) % n_folds
    else:
        codes = np.unique(np.asarray(groups), return_inverse=True)[1].reshape(n)
        n_groups = int(codes.max()) + 1
        group_fold = np.empty(n_groups, dtype=np.intp)
        group_fold[rng.permutation(n_groups)] = np.arange(n_groups) % n_folds
        fold = group_fold[codes]
    order = np.argsort(fold, kind="stable")  # the folds as contiguous slices of `order`
    bounds = np.searchsorted(fold[order], np.arange(n_folds + 1))
    if np.count_nonzero(np.diff(bounds)) < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds with items, got {n_folds}")
    inputs, targets = inputs[order], targets[order]
    out: np.ndarray | None = None
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        if start == stop:
            continue
        train = np.r_[0:start, stop:n]
        predicted = np.asarray(fit(inputs[train], targets[train]).apply(inputs[start:stop]))
        if out is None:
            out = np.empty((n, *predicted.shape[1:]), dtype=np.float64)
        out[order[start:stop]] = predicted
    assert out is not None
    return out
