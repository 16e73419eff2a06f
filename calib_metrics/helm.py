"""HELM's calibration numbers, under names that say what they are.

HELM (Liang et al., 2022) reports ``ece_10_bin`` and ``selective_acc@10`` computed by the
``uncertainty-calibration`` package (Kumar et al., 2019) on the top-label confidence:

* ``helm_ece_equal_mass``: equal-mass bins whose edges are the midpoints between the sorted
  confidences where ``numpy.array_split`` cuts them into ``n_bins`` chunks (edges deduplicated,
  the last one 1); a confidence goes to the first bin whose edge is >= it; then
  ``sum_b n_b / n * |conf_b - acc_b|``. Not the same bins as ``ece(..., strategy="equal_mass")``.
* ``helm_selective_accuracy``: the accuracy of the ``floor(coverage * n) + 1`` most confident
  predictions (HELM's "accuracy at 10% coverage"; ties in confidence are taken in a stable
  order, where HELM's sort leaves their order unspecified).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from calib_metrics.validation import as_top_label, check_positive_int

HELM_N_BINS = 10
HELM_COVERAGE = 0.1


def helm_ece_equal_mass(
    confidence: ArrayLike, correct: ArrayLike, *, n_bins: int = HELM_N_BINS
) -> float:
    """HELM's ``ece_10_bin`` (equal-mass bins, see the module docstring).

    >>> round(helm_ece_equal_mass([0.2, 0.4, 0.6, 0.9], [0, 1, 1, 1], n_bins=2), 6)  # .2/2+.25/2
    0.225
    """
    confidence, correct = as_top_label(confidence, correct)
    n_bins = min(check_positive_int("n_bins", n_bins), confidence.size)
    ordered = np.sort(confidence)
    chunks = np.array_split(ordered, n_bins)
    cuts = [(a[-1] + b[0]) / 2.0 for a, b in zip(chunks[:-1], chunks[1:], strict=True)]
    edges = np.unique(np.append(cuts, 1.0))
    index = np.searchsorted(edges, confidence, side="left")
    counts = np.bincount(index, minlength=edges.size)
    gaps = np.bincount(index, confidence - correct, minlength=edges.size)
    return float(np.abs(gaps[counts > 0]).sum() / confidence.size)


def helm_selective_accuracy(
    confidence: ArrayLike, correct: ArrayLike, *, coverage: float = HELM_COVERAGE
) -> float:
    """HELM's ``selective_acc@10``: accuracy of the ``floor(coverage * n) + 1`` most confident.

    >>> helm_selective_accuracy([0.9, 0.8, 0.3, 0.2, 0.1, 0.5, 0.4, 0.6, 0.7, 0.95], [1] + [0] * 9)
    0.5
    """
    confidence, correct = as_top_label(confidence, correct)
    if not 0.0 <= coverage < 1.0:
        raise ValueError(f"coverage must lie in [0, 1), got {coverage!r}")
    k = int(coverage * confidence.size) + 1
    top = np.argsort(-confidence, kind="stable")[:k]
    return float(correct[top].mean())
