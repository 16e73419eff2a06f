"""How well confidence ranks correct predictions above wrong ones (selective prediction).

Tied confidences are handled permutation-invariantly: items of equal confidence are taken in a
uniformly random order and every quantity is its expected value under that order.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from numpy.typing import ArrayLike

from calib_metrics.validation import as_top_label


def auroc(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Area under the ROC curve of confidence as a score for correctness.

    The Mann-Whitney statistic with average ranks for ties: the probability that a random correct
    item has a higher confidence than a random wrong one, ties counting 1/2. With only one class
    present it is undefined; 0.5 (no discrimination shown) is returned so that aggregates over
    such a task stay finite.

    >>> auroc([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0])  # 3 of the 4 (correct, wrong) pairs ordered
    0.75
    """
    sizes, n_wrong = _tie_blocks(*as_top_label(confidence, correct))
    n_correct = sizes - n_wrong
    total_correct, total_wrong = n_correct.sum(), n_wrong.sum()
    if total_correct == 0 or total_wrong == 0:
        return 0.5
    wrong_below = np.cumsum(n_wrong) - n_wrong
    wins = np.sum(n_correct * (wrong_below + 0.5 * n_wrong))
    return float(wins / (total_correct * total_wrong))


def selective_risks(confidence: ArrayLike, correct: ArrayLike) -> np.ndarray:
    """The risk-coverage curve: for k = 1..n, ``E_k / k``, the expected error rate of the ``k``
    most confident items (random order within ties; coverage ``k / n``). Its mean is ``aurc``.

    >>> selective_risks([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]).round(4).tolist()
    [0.0, 0.5, 0.3333, 0.5]
    """
    errors = _cumulative_errors(*as_top_label(confidence, correct))
    return errors / np.arange(1, errors.size + 1)


def aurc(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Area under the risk-coverage curve: ``mean_{k=1..n} E_k / k``, where ``E_k`` is the number
    of errors among the ``k`` most confident items (expected over random order within ties, i.e.
    linearly interpolated inside a block of equal confidence). In [0, 1], lower is better.

    >>> round(aurc([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]), 6)  # (0/1 + 1/2 + 1/3 + 2/4) / 4
    0.333333
    """
    return float(np.mean(selective_risks(confidence, correct)))


def accuracy_at_coverage(confidence: ArrayLike, correct: ArrayLike, *, coverage: float) -> float:
    """Accuracy of the ``k = ceil(coverage * n)`` most confident items, ``1 - E_k / k`` with the
    tie rule of ``aurc``; ``coverage`` must lie in (0, 1]. ``k`` is computed exactly from the
    given float, so ``coverage=0.7`` with ``n=10`` keeps 7 items.

    >>> accuracy_at_coverage([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0], coverage=0.5)
    0.5
    """
    if not 0.0 < coverage <= 1.0:  # also refuses NaN
        raise ValueError(f"coverage must lie in (0, 1], got {coverage!r}")
    errors = _cumulative_errors(*as_top_label(confidence, correct))
    k = math.ceil(Fraction(coverage) * errors.size)
    return float(1.0 - errors[k - 1] / k)


def _tie_blocks(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Number of items and of wrong items at each distinct confidence, by increasing confidence."""
    # For doubles >= +0.0 the IEEE-754 bit pattern read as an integer increases with the value
    # (adding 0.0 turns -0.0 into +0.0), so one integer sort, about 3x faster than an argsort,
    # orders the items by confidence and carries each one's wrongness in the lowest bit.
    key = np.sort(((confidence + 0.0).view(np.int64) << 1) | (correct == 0))
    value = key >> 1
    starts = np.flatnonzero(np.concatenate(([True], value[1:] != value[:-1])))
    return np.diff(starts, append=key.size), np.add.reduceat(key & 1, starts)


def _cumulative_errors(confidence: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """``E_k`` for k = 1..n: expected errors among the k most confident items. Under a random
    order inside a tie block each of its positions is wrong with the block's error rate, so
    ``E`` is the cumulative sum of per-position rates (linear inside a block)."""
    sizes, n_wrong = _tie_blocks(confidence, correct)
    rate = n_wrong / sizes
    return np.cumsum(np.repeat(rate[::-1], sizes[::-1]))
