"""Bootstrap intervals: containment, determinism, and exact agreement between the generic
resampling bootstrap (a callable metric) and the fast binned/histogram paths of a named metric
that must reproduce it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import calib_metrics as cm
from calib_metrics.bootstrap import index_bootstrap_ci

# the array version of each named metric of bootstrap_ci, as a metric(confidence, correct)
ARRAY_METRICS = {
    "acc": lambda c, y: float(np.mean(y)),
    "mean_confidence": lambda c, y: float(np.mean(c)),
    "ece": cm.ece,
    "mce": cm.mce,
    "rms_calibration_error": cm.rms_calibration_error,
    "ece_one_bin": cm.ece_one_bin,
    "brier_top_label": cm.brier_top_label,
}


def binned(confidence, correct, **knobs) -> dict[str, cm.ConfidenceInterval]:
    """The interval of every named metric: bootstrap_ci's fast binned path."""
    return {key: cm.bootstrap_ci(confidence, correct, metric=key, **knobs) for key in ARRAY_METRICS}


def from_histograms(histograms, **knobs) -> dict[str, cm.ConfidenceInterval]:
    """The interval of every named metric from histograms."""
    return {
        key: cm.bootstrap_ci(histograms=histograms, metric=key, **knobs) for key in ARRAY_METRICS
    }


def sample(seed: int, n: int, exponent: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    confidence = rng.random(n)
    return confidence, rng.random(n) < confidence**exponent


def assert_same_interval(a: cm.ConfidenceInterval, b: cm.ConfidenceInterval) -> None:
    assert (a.level, a.n_resamples) == (b.level, b.n_resamples)
    for field in ("estimate", "low", "high"):
        assert getattr(a, field) == pytest.approx(getattr(b, field), rel=1e-9, abs=1e-14), field


@st.composite
def top_label(draw, max_size: int = 60) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(1, max_size))
    return draw(arrays(np.float64, n, elements=st.floats(0, 1))), draw(arrays(np.bool_, n))


@settings(max_examples=40, deadline=None)
@given(top_label(), st.integers(0, 5), st.floats(0.5, 0.99))
def test_every_interval_contains_its_estimate(data, n_groups, level):
    confidence, correct = data
    groups = None if n_groups == 0 else np.arange(confidence.size) % n_groups
    intervals = binned(confidence, correct, groups=groups, n_resamples=30, level=level)
    intervals["generic ece"] = cm.bootstrap_ci(
        confidence, correct, metric=cm.ece, groups=groups, n_resamples=30, level=level
    )
    for key, ci in intervals.items():
        assert ci.low <= ci.estimate <= ci.high, key
        assert ci.level == level and ci.n_resamples == 30


def test_interval_is_widened_to_the_estimate_when_the_percentiles_lie_above_it():
    """Calibrated data: the resampled ECEs are biased upwards like the estimate, and here even
    their 2.5% quantile exceeds the estimate. Resampling reproduced by hand (documented draw)."""
    confidence, correct = sample(1, 300, exponent=1.0)
    rng = np.random.Generator(np.random.PCG64(0))
    values = []
    for _ in range(1000):
        index = rng.integers(0, 300, size=300)
        values.append(cm.ece(confidence[index], correct[index]))
    raw_low, raw_high = np.quantile(values, [0.025, 0.975])
    ci = cm.bootstrap_ci(confidence, correct, metric=cm.ece)
    assert raw_low > ci.estimate == cm.ece(confidence, correct)
    assert ci.low == ci.estimate and ci.high == raw_high


def test_estimates_are_the_exact_array_metrics():
    confidence, correct = sample(2, 1000)
    for groups in (None, np.arange(1000) // 7):
        intervals = binned(confidence, correct, groups=groups, n_resamples=20)
        assert set(intervals) == set(ARRAY_METRICS)
        for key, metric in ARRAY_METRICS.items():
            assert intervals[key].estimate == metric(confidence, correct), key  # bitwise


def test_same_seed_same_interval_different_seed_different_interval():
    confidence, correct = sample(3, 400)
    groups = np.arange(400) // 4
    hist = cm.ConfidenceHistogram.from_samples(confidence, correct)
    runs = {
        "generic": lambda seed: cm.bootstrap_ci(
            confidence, correct, metric=cm.ece, n_resamples=200, seed=seed
        ),
        "generic groups": lambda seed: cm.bootstrap_ci(
            confidence, correct, metric=cm.ece, groups=groups, n_resamples=200, seed=seed
        ),
        "binned": lambda seed: cm.bootstrap_ci(confidence, correct, metric="ece", seed=seed),
        "binned groups": lambda seed: cm.bootstrap_ci(
            confidence, correct, metric="ece", groups=groups, seed=seed
        ),
        "histogram": lambda seed: cm.bootstrap_ci(histograms=hist, metric="ece", seed=seed),
    }
    for name, run in runs.items():
        assert run(0) == run(0), name
        assert run(0) == run(cm.DEFAULT_SEED), name
        first, other = run(0), run(1)
        assert (first.low, first.high) != (other.low, other.high), name


def test_one_item_per_group_is_the_item_bootstrap():
    confidence, correct = sample(4, 300)
    for key, metric in ARRAY_METRICS.items():
        items = cm.bootstrap_ci(confidence, correct, metric=metric, n_resamples=100)
        groups = cm.bootstrap_ci(
            confidence, correct, metric=metric, groups=np.arange(300), n_resamples=100
        )
        assert items == groups, key  # the same draws
        fast = cm.bootstrap_ci(
            confidence, correct, metric=key, groups=np.arange(300), n_resamples=100
        )
        assert_same_interval(fast, items)


def test_binned_group_bootstrap_is_the_exact_group_bootstrap():
    """W @ per-group bin statistics reproduces each resample's metrics exactly, so the fast
    path gives the intervals of the generic bootstrap that recomputes every metric."""
    confidence, correct = sample(5, 600)
    rng = np.random.default_rng(5)
    groups = np.array([f"doc{g:03d}" for g in rng.integers(0, 45, size=600)])  # unequal sizes
    fast = binned(confidence, correct, groups=groups, n_resamples=150)
    for key, metric in ARRAY_METRICS.items():
        exact = cm.bootstrap_ci(confidence, correct, metric=metric, groups=groups, n_resamples=150)
        assert_same_interval(fast[key], exact)


def test_histogram_bootstraps_equal_the_binned_bootstraps_they_stand_for():
    confidence, correct = sample(6, 2000)
    groups = np.random.default_rng(6).integers(0, 60, size=2000)
    per_group = [
        cm.ConfidenceHistogram.from_samples(confidence[groups == g], correct[groups == g])
        for g in range(60)
    ]
    from_groups = from_histograms(per_group + [cm.ConfidenceHistogram.empty()])
    from_arrays = binned(confidence, correct, groups=groups)
    pooled = cm.ConfidenceHistogram.from_samples(confidence, correct)
    from_histogram = from_histograms(pooled)
    from_items = binned(confidence, correct)
    for key in ARRAY_METRICS:
        assert_same_interval(from_groups[key], from_arrays[key])
        assert_same_interval(from_histogram[key], from_items[key])


def test_item_bootstrap_from_a_histogram_approximates_the_exact_one():
    """Counts per bin are resampled exactly; confidences move by < 1/resolution per item."""
    confidence, correct = sample(7, 2000)
    approximate = binned(confidence, correct, n_resamples=2000, seed=1)
    for key in ("ece", "mce", "brier_top_label", "acc"):
        exact = cm.bootstrap_ci(
            confidence, correct, metric=ARRAY_METRICS[key], n_resamples=2000, seed=2
        )
        tolerance = 0.1 * (exact.high - exact.low) + 1 / cm.DEFAULT_RESOLUTION
        assert approximate[key].low == pytest.approx(exact.low, abs=tolerance), key
        assert approximate[key].high == pytest.approx(exact.high, abs=tolerance), key


def test_groups_are_resampled_whole():
    # item j of group g has confidence g/10 + j/1000: every value identifies its item
    sizes = [1, 2, 3, 4, 5]
    confidence = np.array([g / 10 + j / 1000 for g, size in enumerate(sizes) for j in range(size)])
    groups = np.repeat(np.arange(5), sizes)
    resamples: list[np.ndarray] = []

    def record(c: np.ndarray, y: np.ndarray) -> float:
        resamples.append(c.copy())
        return float(c.size)

    cm.bootstrap_ci(
        confidence, np.ones(confidence.size), metric=record, groups=groups, n_resamples=50
    )
    assert len(resamples) == 51  # 50 resamples, then the estimate
    for c in resamples[:50]:
        drawn = np.round(c * 10 - 0.45).astype(int)  # the group of each item
        counts = np.bincount(drawn, minlength=5) / np.array(sizes)
        assert np.all(counts == np.round(counts))  # whole groups only
        assert counts.sum() == 5  # as many groups as there are


def test_the_bootstrap_of_a_metric_is_the_index_bootstrap_of_its_items():
    """bootstrap_ci of a callable is index_bootstrap_ci of the metric of the items drawn: the
    same draws, the same interval, with and without groups."""
    confidence, correct = sample(10, 200)
    for groups in (None, np.arange(200) // 7):
        by_metric = cm.bootstrap_ci(
            confidence, correct, metric=cm.ece, groups=groups, n_resamples=100, seed=3
        )
        by_index = index_bootstrap_ci(
            lambda i: cm.ece(confidence[i], correct[i]), 200, groups=groups, n_resamples=100, seed=3
        )
        assert by_metric == by_index


def test_the_index_bootstrap_draws_uniform_positions_then_takes_the_estimate():
    """Resampling reproduced by hand (documented draw): n positions per resample from
    ``Generator(PCG64(seed))``, then the statistic of every position in order."""
    values = np.random.default_rng(11).random(50)
    calls: list[np.ndarray] = []

    def mean(index: np.ndarray) -> float:
        calls.append(index.copy())
        return float(values[index].mean())

    ci = index_bootstrap_ci(mean, 50, n_resamples=20, seed=5)
    rng = np.random.Generator(np.random.PCG64(5))
    assert len(calls) == 21
    for drawn in calls[:20]:
        assert np.array_equal(drawn, rng.integers(0, 50, size=50))
    assert np.array_equal(calls[20], np.arange(50)) and ci.estimate == float(values.mean())
    resampled = [float(values[drawn].mean()) for drawn in calls[:20]]
    low, high = np.quantile(resampled, [0.025, 0.975])
    assert (ci.low, ci.high) == (min(low, ci.estimate), max(high, ci.estimate))
    assert (ci.level, ci.n_resamples) == (cm.DEFAULT_LEVEL, 20)


@pytest.mark.parametrize(
    ("n", "keywords", "message"),
    [
        (0, {}, "n must be a positive integer"),
        (5, {"n_resamples": 0}, "n_resamples must be a positive integer"),
        (5, {"level": 1.0}, r"level must lie in \(0, 1\)"),
        (5, {"groups": [0, 1]}, r"groups must have shape \(5,\)"),
    ],
)
def test_the_index_bootstrap_refuses_bad_arguments(n, keywords, message):
    with pytest.raises(ValueError, match=message):
        index_bootstrap_ci(lambda i: float(i.size), n, **keywords)


def test_the_index_bootstrap_refuses_a_statistic_that_is_not_finite():
    with pytest.raises(ValueError, match="the metric returned NaN or inf on a bootstrap resample"):
        index_bootstrap_ci(lambda i: float("nan"), 5)


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda c, y: cm.bootstrap_ci(c, y, metric=cm.ece, level=1.0),
            r"level must lie in \(0, 1\)",
        ),
        (
            lambda c, y: cm.bootstrap_ci(c, y, metric=cm.ece, level=0.0),
            r"level must lie in \(0, 1\)",
        ),
        (lambda c, y: cm.bootstrap_ci(c, y, level=float("nan")), "level must lie"),
        (
            lambda c, y: cm.bootstrap_ci(c, y, metric=cm.ece, n_resamples=0),
            "n_resamples must be a",
        ),
        (lambda c, y: cm.bootstrap_ci(c, y, n_resamples=2.5), "n_resamples must be a"),
        (lambda c, y: cm.bootstrap_ci(c, y, n_bins=0), "n_bins must be a positive"),
        (
            lambda c, y: cm.bootstrap_ci(c, y, metric=cm.ece, groups=[1, 2]),
            r"groups must have shape \(10,\)",
        ),
        (
            lambda c, y: cm.bootstrap_ci(c, y, groups=np.zeros((10, 1))),
            r"groups must have shape \(10,\)",
        ),
        (
            lambda c, y: cm.bootstrap_ci(c, y, metric=lambda a, b: float("nan")),
            "the metric returned NaN or inf on a bootstrap resample",
        ),
        (lambda c, y: cm.bootstrap_ci(c[:3], y), "different lengths"),
        (lambda c, y: cm.bootstrap_ci(histograms=[]), "no histograms given"),
        (
            lambda c, y: cm.bootstrap_ci(histograms=[cm.ConfidenceHistogram.empty()] * 3),
            "no samples",
        ),
        (lambda c, y: cm.bootstrap_ci(histograms=cm.ConfidenceHistogram.empty()), "no samples"),
        (
            lambda c, y: cm.bootstrap_ci(
                histograms=cm.ConfidenceHistogram.from_samples(c, y, resolution=100), n_bins=30
            ),
            "n_bins=30 must divide the histogram resolution 100",
        ),
        (lambda c, y: cm.bootstrap_ci(c, y, metric="auroc"), "metric must be a callable or one"),
        (lambda c, y: cm.bootstrap_ci(c, y, strategy="quantile"), "strategy must be one of"),
        (lambda c, y: cm.bootstrap_ci(c), "give confidence and correct, or histograms"),
        (
            lambda c, y: cm.bootstrap_ci(c, y, histograms=cm.ConfidenceHistogram.empty()),
            "not both",
        ),
        (
            lambda c, y: cm.bootstrap_ci(
                histograms=cm.ConfidenceHistogram.from_samples(c, y), metric=cm.ece
            ),
            "a metric of histograms must be named",
        ),
        (
            lambda c, y: cm.bootstrap_ci(
                histograms=cm.ConfidenceHistogram.from_samples(c, y), strategy="equal_mass"
            ),
            "histograms have equal-width bins only",
        ),
    ],
)
def test_bad_arguments_are_refused(call, message):
    confidence, correct = sample(8, 10)
    with pytest.raises(ValueError, match=message):
        call(confidence, correct)


def test_any_bin_count_works_without_histogram_resolution_constraints():
    confidence, correct = sample(9, 500)
    intervals = binned(confidence, correct, n_bins=15, n_resamples=50)
    assert intervals["ece"].estimate == cm.ece(confidence, correct, n_bins=15)
    assert intervals["ece"].low <= intervals["ece"].estimate <= intervals["ece"].high
