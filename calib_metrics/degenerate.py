"""Scores that carry no information: calibration cannot be measured from them.

A backend that returns no usable log-probabilities (every option tied, every log-probability 0)
gives confidences that are all equal; ECE is then |accuracy - that value| and can come out near
0, a "perfect calibration" that was never measured. These checks name the situation so that a
caller can refuse to present such a number as a measurement.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from calib_metrics.histogram import ConfidenceHistogram

#: Confidences (or one document's option probabilities) closer together than this, relative to
#: the largest of them, are equal (relative: a generated text's joint probabilities, 1e-11 and
#: 1e-27, are no tie).
TIE_TOLERANCE = 1e-9


def _tied(values: np.ndarray) -> bool:
    """Whether ``values`` are all equal: ``max - min <= TIE_TOLERANCE * max |value|``."""
    return bool(np.ptp(values) <= TIE_TOLERANCE * np.max(np.abs(values)))


def uninformative_reason(
    confidence: ArrayLike, *, option_probs: Sequence[ArrayLike] | None = None
) -> str | None:
    """Why the scores carry no information about correctness, or None when they do.

    Uninformative: (a) every confidence is the same value (``max - min <= TIE_TOLERANCE`` times
    the largest), e.g.
    all 1/k because every option got the same log-likelihood, or all 1 because every
    log-probability was 0; or (b) ``option_probs`` is given (one probability vector per document,
    any number of options each) and in every document all options are tied.

    >>> uninformative_reason([0.25, 0.25, 0.25])
    'all 3 confidences equal 0.25'
    >>> uninformative_reason([0.5, 1/3], option_probs=[[0.5, 0.5], [1/3, 1/3, 1/3]])
    'every option tied in all 2 documents'
    >>> uninformative_reason([0.3, 0.9]) is None
    True
    >>> uninformative_reason([2.2e-11, 1.9e-27]) is None
    True
    """
    confidence = np.asarray(confidence, dtype=np.float64).ravel()
    if confidence.size and _tied(confidence):
        return f"all {confidence.size} confidences equal {confidence[0]:.4g}"
    if (
        option_probs is not None
        and len(option_probs)
        and all(_tied(np.asarray(p, dtype=np.float64)) for p in option_probs)
    ):
        return f"every option tied in all {len(option_probs)} documents"
    return None


def histogram_uninformative_reason(hist: ConfidenceHistogram) -> str | None:
    """``uninformative_reason`` for the predictions summarised by a histogram: all confidences
    equal, decided from the exact per-cell sums (variance ``E[c^2] - E[c]^2`` within
    ``TIE_TOLERANCE``).

    >>> h = ConfidenceHistogram.from_samples([1.0] * 4, [1, 0, 1, 1], resolution=100)
    >>> histogram_uninformative_reason(h)
    'all 4 confidences equal 1'
    """
    n = hist.n
    if n == 0:
        return None
    mean = float(hist.sum_confidence.sum()) / n
    variance = float(hist.sum_sq_confidence.sum()) / n - mean * mean
    if variance <= TIE_TOLERANCE * max(1.0, mean):
        return f"all {n} confidences equal {mean:.4g}"
    return None
