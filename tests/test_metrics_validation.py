"""Bad inputs raise ValueError with a message naming the problem, at every entry point."""

from __future__ import annotations

import numpy as np
import pytest

import calib_metrics as cm
from calib_metrics.validation import as_top_label

TOP_LABEL_FUNCTIONS = {
    "as_top_label": as_top_label,
    "reliability_bins": cm.reliability_bins,
    "ece": cm.ece,
    "ece equal_mass": lambda c, y: cm.ece(c, y, strategy="equal_mass"),
    "mce": cm.mce,
    "rms_calibration_error": cm.rms_calibration_error,
    "ece_one_bin": cm.ece_one_bin,
    "debiased_l2_calibration_error": cm.debiased_l2_calibration_error,
    "smooth_ece": cm.smooth_ece,
    "brier_top_label": cm.brier_top_label,
    "auroc": cm.auroc,
    "aurc": cm.aurc,
    "accuracy_at_coverage": lambda c, y: cm.accuracy_at_coverage(c, y, coverage=0.5),
    "histogram": cm.ConfidenceHistogram.from_samples,
    "bootstrap_ci callable": lambda c, y: cm.bootstrap_ci(c, y, metric=cm.ece, n_resamples=2),
    "bootstrap_ci named": lambda c, y: cm.bootstrap_ci(c, y, n_resamples=2),
}

BAD_TOP_LABEL = {
    "nan confidence": ([0.5, np.nan, 0.2], [1, 0, 1], "confidence contains NaN or inf"),
    "inf confidence": ([0.5, np.inf, 0.2], [1, 0, 1], "confidence contains NaN or inf"),
    "None confidence": ([0.5, None, 0.2], [1, 0, 1], "confidence contains NaN or inf"),
    "confidence above 1": (
        [0.5, 1.5, 0.2],
        [1, 0, 1],
        r"confidence must lie in \[0, 1\]; found values from 0.2 to 1.5",
    ),
    "negative confidence": ([0.5, -0.1, 0.2], [1, 0, 1], r"confidence must lie in \[0, 1\]"),
    "lengths": ([0.5, 0.1, 0.2], [1, 0], r"different lengths \(3 and 2\)"),
    "2-D confidence": ([[0.5, 0.1]], [1, 0], r"confidence must be a 1-D array, got shape \(1, 2\)"),
    "scalar confidence": (0.5, [1], r"confidence must be a 1-D array, got shape \(\)"),
    "2-D correct": ([0.5, 0.1], [[1, 0]], r"correct must be a 1-D array, got shape \(1, 2\)"),
    "fractional correct": ([0.5, 0.1], [1, 0.5], "correct must be boolean or 0/1, found 0.5"),
    "integer 2 correct": ([0.5, 0.1], [1, 2], "correct must be boolean or 0/1, found 2"),
    "integer -1 correct": ([0.5, 0.1], [-1, 0], "correct must be boolean or 0/1, found -1"),
    "nan correct": ([0.5, 0.1], [1.0, np.nan], "correct contains NaN or inf"),
    "string correct": ([0.5, 0.1], ["yes", "no"], r"correct must be numeric .* got <U3"),
}


@pytest.mark.parametrize("bad", BAD_TOP_LABEL.values(), ids=list(BAD_TOP_LABEL))
@pytest.mark.parametrize("function", TOP_LABEL_FUNCTIONS.values(), ids=list(TOP_LABEL_FUNCTIONS))
def test_bad_top_label_input(function, bad):
    confidence, correct, message = bad
    with pytest.raises(ValueError, match=message):
        function(confidence, correct)


@pytest.mark.parametrize(
    "function",
    [f for name, f in TOP_LABEL_FUNCTIONS.items() if name != "histogram"],
    ids=[name for name in TOP_LABEL_FUNCTIONS if name != "histogram"],
)
def test_empty_top_label_input(function):
    with pytest.raises(ValueError, match="no samples: confidence and correct are empty"):
        function([], [])


def test_histogram_of_no_samples_is_the_empty_histogram():
    assert cm.ConfidenceHistogram.from_samples([], [], resolution=20).to_dict() == (
        cm.ConfidenceHistogram.empty(20).to_dict()
    )


def test_as_top_label_returns_float_zero_one_arrays():
    confidence, correct = as_top_label([0.25, 1], np.array([True, False]))
    assert confidence.dtype == correct.dtype == np.float64
    assert correct.tolist() == [1.0, 0.0] and confidence.tolist() == [0.25, 1.0]


PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
BAD_MULTICLASS = {
    "1-D probs": ([0.7, 0.3], [0], r"probs must be a 2-D array .* got shape \(2,\)"),
    "no rows": (np.zeros((0, 3)), [], r"no samples: probs has shape \(0, 3\)"),
    "nan probs": ([[0.7, np.nan, 0.3], [0.1, 0.1, 0.8]], [0, 1], "probs contains NaN or inf"),
    "negative probs": ([[1.1, -0.1, 0.0], [0.1, 0.1, 0.8]], [0, 1], r"probs must lie in \[0, 1\]"),
    "row sum": (
        [[0.7, 0.2, 0.1], [0.1, 0.1, 0.7]],
        [0, 1],
        r"rows of probs must sum to 1 \(within 1e-06 \* 3 classes\); row 1 sums to 0.8999",
    ),
    "float labels": (PROBS, [0.0, 1.0], "labels must be integer class indices, got dtype float64"),
    "bool labels": (PROBS, [True, False], "labels must be integer class indices, got dtype bool"),
    "2-D labels": (PROBS, [[0, 1]], r"labels must be a 1-D array, got shape \(1, 2\)"),
    "lengths": (PROBS, [0, 1, 2], r"probs and labels have different lengths \(2 and 3\)"),
    "label too large": (PROBS, [0, 3], r"label out of range: labels must lie in \[0, 2\], found 3"),
    "negative label": (PROBS, [-1, 0], r"label out of range: .* found -1"),
}


@pytest.mark.parametrize("bad", BAD_MULTICLASS.values(), ids=list(BAD_MULTICLASS))
@pytest.mark.parametrize(
    "function",
    [cm.as_multiclass, cm.top_label_from_probs, cm.brier_multiclass, cm.nll],
    ids=["as_multiclass", "top_label_from_probs", "brier_multiclass", "nll"],
)
def test_bad_multiclass_input(function, bad):
    probs, labels, message = bad
    with pytest.raises(ValueError, match=message):
        function(probs, labels)


def test_row_sum_tolerance_is_1e6_per_class():
    k = 4
    probs = np.full((1, k), 0.25)
    probs[0, 0] += 0.9e-6 * k
    cm.as_multiclass(probs, [0])
    probs[0, 0] += 0.2e-6 * k
    with pytest.raises(ValueError, match="rows of probs must sum to 1"):
        cm.as_multiclass(probs, [0])


BINNED_FUNCTIONS = [
    cm.reliability_bins,
    cm.ece,
    cm.mce,
    cm.rms_calibration_error,
    cm.debiased_l2_calibration_error,
]


@pytest.mark.parametrize("n_bins", [0, -3, 2.5, True, "10", None])
@pytest.mark.parametrize("function", BINNED_FUNCTIONS)
def test_bad_bin_count(function, n_bins):
    with pytest.raises(ValueError, match=f"n_bins must be a positive integer, got {n_bins!r}"):
        function([0.5, 0.2], [1, 0], n_bins=n_bins)


@pytest.mark.parametrize("function", BINNED_FUNCTIONS)
def test_unknown_strategy(function):
    message = r"strategy must be one of \('equal_width', 'equal_mass'\), got 'quantile'"
    with pytest.raises(ValueError, match=message):
        function([0.5, 0.2], [1, 0], n_bins=10, strategy="quantile")


@pytest.mark.parametrize("coverage", [0.0, -0.5, 1.5, float("nan")])
def test_bad_coverage(coverage):
    with pytest.raises(ValueError, match=r"coverage must lie in \(0, 1\]"):
        cm.accuracy_at_coverage([0.5, 0.2], [1, 0], coverage=coverage)


@pytest.mark.parametrize("resolution", [0, 2.0, False])
def test_bad_histogram_resolution(resolution):
    with pytest.raises(ValueError, match="resolution must be a positive integer"):
        cm.ConfidenceHistogram.from_samples([0.5], [1], resolution=resolution)
