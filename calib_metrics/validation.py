"""Input validation: every public function checks its inputs here and gets numpy arrays back.

Top-label form: ``confidence`` (n,) in [0, 1] and ``correct`` (n,) boolean or 0/1.
Multiclass form: ``probs`` (n, k), each row a probability vector, and ``labels`` (n,) integer gold
indices in [0, k). Every problem raises ``ValueError`` with a message naming it.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

_ONE_BITS = np.float64(1.0).view(np.uint64)

#: A row of ``probs`` may miss 1 by at most this much per class (float32 softmax outputs miss it
#: by about 1e-7 per class).
ROW_SUM_TOLERANCE_PER_CLASS = 1e-6


def as_top_label(
    confidence: ArrayLike, correct: ArrayLike, *, allow_empty: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Checked top-label arrays: ``(confidence, correct)`` as float64, ``correct`` in {0.0, 1.0}.

    Raises ``ValueError`` for: an array that is not 1-D or not numeric, different lengths, no
    samples (unless ``allow_empty``, used for the histogram of an empty document), NaN or inf, a
    confidence outside [0, 1], a correctness other than boolean or 0/1.

    >>> as_top_label([0.5, 1], [True, False])
    (array([0.5, 1. ]), array([1., 0.]))
    """
    confidence, correct = checked_top_label(confidence, correct, allow_empty=allow_empty)
    return confidence, correct.astype(np.float64, copy=False)


def checked_top_label(
    confidence: ArrayLike, correct: ArrayLike, *, allow_empty: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``as_top_label`` without converting ``correct``: it keeps its bool, integer or float dtype
    (values 0/1), which spares a copy of it in the hot paths that only sum it."""
    confidence = _vector("confidence", confidence, np.float64)
    correct = _vector("correct", correct)
    if confidence.size != correct.size:
        raise ValueError(
            f"confidence and correct have different lengths ({confidence.size} and {correct.size})"
        )
    if confidence.size == 0 and not allow_empty:
        raise ValueError("no samples: confidence and correct are empty")
    _check_unit_interval("confidence", confidence)
    _check_binary(correct)
    return confidence, correct


def as_multiclass(probs: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Checked multiclass arrays: ``(probs, labels)`` as float64 (n, k) and int64 (n,).

    Each row of ``probs`` must lie in [0, 1] and sum to 1 within
    ``ROW_SUM_TOLERANCE_PER_CLASS * k``; each label must be an integer in [0, k). Raises
    ``ValueError`` for: wrong ndim, no samples or no classes, NaN or inf, a probability outside
    [0, 1], a row not summing to 1, non-integer labels, different lengths, a label out of range.

    >>> as_multiclass([[0.25, 0.75]], [1])
    (array([[0.25, 0.75]]), array([1]))
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be a 2-D array (samples x classes), got shape {probs.shape}")
    n, k = probs.shape
    if n == 0 or k == 0:
        raise ValueError(f"no samples: probs has shape {probs.shape}")
    _check_unit_interval("probs", probs)
    row_error = np.abs(probs @ np.ones(k) - 1.0)  # row sums; BLAS beats sum(axis=1) for few k
    worst = int(np.argmax(row_error))
    if row_error[worst] > ROW_SUM_TOLERANCE_PER_CLASS * k:
        raise ValueError(
            f"rows of probs must sum to 1 (within {ROW_SUM_TOLERANCE_PER_CLASS:g} * {k} classes); "
            f"row {worst} sums to {float(probs[worst].sum())!r}"
        )
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.size != n:
        raise ValueError(f"probs and labels have different lengths ({n} and {labels.size})")
    if labels.min() < 0 or labels.max() >= k:
        bad = labels[(labels < 0) | (labels >= k)][0]
        raise ValueError(
            f"label out of range: labels must lie in [0, {k - 1}], found {bad.item()!r}"
        )
    return probs, labels.astype(np.int64)


def top_label_from_probs(probs: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Top-label view of multiclass predictions: ``confidence = max_k p_ik`` and
    ``correct = 1[argmax_k p_ik == label_i]`` (on a tie the first maximal class is predicted).

    >>> top_label_from_probs([[0.25, 0.75], [0.6, 0.4]], [1, 1])
    (array([0.75, 0.6 ]), array([1., 0.]))
    """
    probs, labels = as_multiclass(probs, labels)
    predicted = probs.argmax(axis=1)
    confidence = probs[np.arange(probs.shape[0]), predicted]
    return confidence, (predicted == labels).astype(np.float64)


def check_positive_int(name: str, value: object) -> int:
    """``value`` as an int if it is an integer >= 1 (bools are refused), else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_level(level: float) -> float:
    """``level`` as a float if 0 < level < 1, else ``ValueError``."""
    if not 0.0 < level < 1.0:  # also refuses NaN
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    return float(level)


def _vector(name: str, values: ArrayLike, dtype: type | None = None) -> np.ndarray:
    array = np.asarray(values, dtype=dtype)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric (bool, integer or float), got {array.dtype}")
    return array


def _check_unit_interval(name: str, values: np.ndarray) -> None:
    # Read as unsigned integers, the bits of the doubles in [+0, 1] are exactly those not above
    # the bits of 1.0 (negatives, -0.0 included, NaN and inf are above): one max() passes the
    # usual case; the rest, -0.0 included, gets the exact checks.
    if values.size == 0 or values.view(np.uint64).max() <= _ONE_BITS:
        return
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or inf")
    if values.min() >= 0.0 and values.max() <= 1.0:
        return
    raise ValueError(
        f"{name} must lie in [0, 1]; found values from {float(values.min())!r} "
        f"to {float(values.max())!r}"
    )


def _check_binary(correct: np.ndarray) -> None:
    if correct.dtype.kind == "b" or correct.size == 0:
        return
    if correct.dtype.kind in "iu":
        # as unsigned integers negative values are huge: one max() decides
        if correct.view(f"u{correct.itemsize}").max() <= 1:
            return
    elif np.count_nonzero(correct == 0) + np.count_nonzero(correct == 1) == correct.size:
        return
    bad = correct[(correct != 0) & (correct != 1)][0]
    if not np.isfinite(bad):
        raise ValueError("correct contains NaN or inf")
    raise ValueError(f"correct must be boolean or 0/1, found {bad.item()!r}")
