"""ConfidenceHistogram: its cells, exactness of histogram metrics, serialisation, merging."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import calib_metrics as cm
from calib_metrics.histogram import reliability_bins_from_histogram

EDGE_VALUES = sorted(
    {
        float(np.nextafter(i / b, direction))
        for b in (10, 60, 100, 1000)
        for i in range(b + 1)
        for direction in (-1.0, 0.0, 2.0)
    }
    - {float(np.nextafter(0.0, -1.0)), float(np.nextafter(1.0, 2.0))}
)
confidences = st.one_of(st.floats(0.0, 1.0), st.sampled_from(EDGE_VALUES))
# (resolution, n_bins) with n_bins dividing the resolution
grids = st.sampled_from([10, 60, 100, 1000]).flatmap(
    lambda r: st.tuples(st.just(r), st.sampled_from([b for b in range(1, r + 1) if r % b == 0]))
)


@st.composite
def top_label(draw, min_size: int = 1, max_size: int = 150) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(min_size, max_size))
    return draw(arrays(np.float64, n, elements=confidences)), draw(arrays(np.bool_, n))


def histogram_of(seed: int, n: int = 500, resolution: int = 100) -> cm.ConfidenceHistogram:
    rng = np.random.default_rng(seed)
    confidence = rng.random(n)
    return cm.ConfidenceHistogram.from_samples(
        confidence, rng.random(n) < confidence, resolution=resolution
    )


def test_from_samples_equals_reference_entries():
    rng = np.random.default_rng(0)
    confidence = np.concatenate((rng.random(300), EDGE_VALUES))
    correct = rng.random(confidence.size) < 0.6
    resolution = 60
    entries: dict[tuple[int, int], list[float]] = {}
    for c, y in zip(confidence.tolist(), correct.tolist(), strict=True):
        cell = min(math.floor(Fraction(c) * resolution), resolution - 1)
        entries.setdefault((cell, int(y)), []).append(c)
    keys = sorted(entries)

    hist = cm.ConfidenceHistogram.from_samples(confidence, correct, resolution=resolution)
    assert hist.resolution == resolution and hist.n == confidence.size
    assert list(zip(hist.cell.tolist(), hist.correct.tolist(), strict=True)) == keys
    assert hist.count.tolist() == [len(entries[key]) for key in keys]
    np.testing.assert_allclose(hist.sum_confidence, [sum(entries[key]) for key in keys])
    expected_squares = [sum(c * c for c in entries[key]) for key in keys]
    np.testing.assert_allclose(hist.sum_sq_confidence, expected_squares)


@settings(max_examples=150, deadline=None)
@given(top_label(), grids)
def test_histogram_metrics_equal_array_metrics(data, grid):
    confidence, correct = data
    resolution, n_bins = grid
    hist = cm.ConfidenceHistogram.from_samples(confidence, correct, resolution=resolution)
    metrics = cm.histogram_metrics(hist, n_bins=n_bins)
    assert metrics["n"] == confidence.size
    expected = {
        "acc": correct.mean(),
        "mean_confidence": confidence.mean(),
        "ece": cm.ece(confidence, correct, n_bins=n_bins),
        "mce": cm.mce(confidence, correct, n_bins=n_bins),
        "rms_calibration_error": cm.rms_calibration_error(confidence, correct, n_bins=n_bins),
        "ece_one_bin": cm.ece_one_bin(confidence, correct),
        "brier_top_label": cm.brier_top_label(confidence, correct),
    }
    assert set(metrics) == {"n", *expected}
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key

    bins = reliability_bins_from_histogram(hist, n_bins=n_bins)
    array_bins = cm.reliability_bins(confidence, correct, n_bins=n_bins)
    np.testing.assert_array_equal(bins.count, array_bins.count)
    np.testing.assert_array_equal(bins.edges, array_bins.edges)
    np.testing.assert_allclose(bins.sum_confidence, array_bins.sum_confidence, atol=1e-12)
    np.testing.assert_allclose(bins.sum_correct, array_bins.sum_correct, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(top_label(min_size=0), st.sampled_from([1, 7, 100, 1000]))
def test_dict_round_trip_through_json(data, resolution):
    hist = cm.ConfidenceHistogram.from_samples(*data, resolution=resolution)
    as_dict = hist.to_dict()
    assert as_dict["resolution"] == resolution
    assert len(as_dict["cell"]) == np.count_nonzero(hist.count)  # sparse: non-empty only
    assert all(type(v) is int for key in ("cell", "correct", "count") for v in as_dict[key])
    assert all(type(v) is float for v in as_dict["sum_confidence"] + as_dict["sum_sq_confidence"])
    back = cm.ConfidenceHistogram.from_dict(json.loads(json.dumps(as_dict)))
    assert back.to_dict() == as_dict
    assert back.n == hist.n


@settings(max_examples=100, deadline=None)
@given(top_label(min_size=0), st.data())
def test_merge_of_two_halves_equals_histogram_of_the_whole(data, draw):
    confidence, correct = data
    split = draw.draw(st.integers(0, confidence.size))
    whole = cm.ConfidenceHistogram.from_samples(confidence, correct, resolution=100)
    first = cm.ConfidenceHistogram.from_samples(confidence[:split], correct[:split], resolution=100)
    second = cm.ConfidenceHistogram.from_samples(
        confidence[split:], correct[split:], resolution=100
    )
    for merged in (
        cm.ConfidenceHistogram.merge([first, second]),
        second + first,
        cm.ConfidenceHistogram.merge([cm.ConfidenceHistogram.empty(100), first, second]),
    ):
        np.testing.assert_array_equal(merged.cell, whole.cell)
        np.testing.assert_array_equal(merged.correct, whole.correct)
        np.testing.assert_array_equal(merged.count, whole.count)
        np.testing.assert_allclose(merged.sum_confidence, whole.sum_confidence, rtol=1e-12)
        np.testing.assert_allclose(merged.sum_sq_confidence, whole.sum_sq_confidence, rtol=1e-12)


def test_empty_histogram():
    empty = cm.ConfidenceHistogram.empty(50)
    assert empty.n == 0 and empty.resolution == 50 and empty.cell.size == 0
    from_nothing = cm.ConfidenceHistogram.from_samples([], [], resolution=50)
    assert from_nothing.to_dict() == empty.to_dict()
    hist = histogram_of(0, resolution=50)
    assert (hist + empty).to_dict() == hist.to_dict()
    with pytest.raises(ValueError, match="no samples"):
        cm.histogram_metrics(empty)


def test_histogram_is_immutable():
    hist = histogram_of(1)
    with pytest.raises(ValueError, match="read-only"):
        hist.count[0] = 5
    with pytest.raises(AttributeError):
        hist.resolution = 10  # type: ignore[misc]


def test_histogram_metrics_need_bins_that_are_unions_of_cells():
    hist = histogram_of(2, resolution=100)
    with pytest.raises(ValueError, match="n_bins=15 must divide the histogram resolution 100"):
        cm.histogram_metrics(hist, n_bins=15)
    with pytest.raises(ValueError, match="n_bins=3 must divide"):
        reliability_bins_from_histogram(hist, n_bins=3)
    with pytest.raises(ValueError, match="n_bins must be a positive integer"):
        cm.histogram_metrics(hist, n_bins=0)


def test_merge_errors():
    with pytest.raises(ValueError, match="no histograms"):
        cm.ConfidenceHistogram.merge([])
    with pytest.raises(ValueError, match=r"different resolutions: \[10, 100\]"):
        histogram_of(3, resolution=10) + histogram_of(3, resolution=100)


VALID = {
    "resolution": 10,
    "cell": [2, 2, 9],
    "correct": [0, 1, 1],
    "count": [1, 2, 3],
    "sum_confidence": [0.25, 0.5, 2.9],
    "sum_sq_confidence": [0.0625, 0.125, 2.81],
}


def test_valid_dict_is_accepted():
    hist = cm.ConfidenceHistogram.from_dict(VALID)
    assert hist.n == 6 and hist.to_dict() == VALID


@pytest.mark.parametrize(
    "change, message",
    [
        ({"resolution": 0}, "resolution must be a positive integer, got 0"),
        ({"resolution": 10.0}, "resolution must be a positive integer, got 10.0"),
        ({"resolution": True}, "resolution must be a positive integer, got True"),
        ({"cell": [2, 2]}, "columns have different lengths"),
        ({"cell": [2, 2, 10]}, r"cell out of range \[0, 10\)"),
        ({"cell": [2, 2, -1]}, r"cell out of range \[0, 10\)"),
        ({"correct": [0, 2, 1]}, "correct must be 0 or 1"),
        ({"count": [1, 0, 3]}, "count must be >= 1"),
        ({"count": [1, 2.5, 3]}, "count must hold integers"),
        ({"cell": ["2", "2", "9"]}, "cell must hold integers"),
        ({"sum_confidence": [0.25, None, 2.9]}, "sum_confidence must hold numbers"),
        ({"sum_confidence": [0.25, float("nan"), 2.9]}, "NaN or inf"),
        ({"cell": [[2], [2], [9]]}, "cell must be a flat list"),
        ({"cell": [9, 2, 2], "correct": [1, 0, 1]}, r"sorted by \(cell, correct\)"),
        ({"correct": [1, 1, 1]}, r"sorted by \(cell, correct\), without repeats"),
        ({"sum_confidence": [0.35, 0.5, 2.9]}, "sum_confidence of entry 0 is inconsistent"),
        ({"sum_sq_confidence": [0.0625, 0.125, 0.1]}, "sum_sq_confidence of entry 2"),
    ],
)
def test_malformed_dict_is_refused(change, message):
    with pytest.raises(ValueError, match=message):
        cm.ConfidenceHistogram.from_dict(VALID | change)


def test_dict_with_wrong_keys_is_refused():
    with pytest.raises(ValueError, match="must be a mapping, got list"):
        cm.ConfidenceHistogram.from_dict([VALID])  # type: ignore[arg-type]
    missing = {k: v for k, v in VALID.items() if k != "count"}
    with pytest.raises(ValueError, match=r"missing keys \['count'\], unexpected keys \[\]"):
        cm.ConfidenceHistogram.from_dict(missing)
    with pytest.raises(ValueError, match=r"missing keys \[\], unexpected keys \['extra'\]"):
        cm.ConfidenceHistogram.from_dict(VALID | {"extra": 1})
