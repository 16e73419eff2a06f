"""Recalibration maps, cross-fitting, classwise calibration and HELM's numbers in calib_metrics:
against brute-force references (scipy), independent peers (scikit-learn, HELM's
uncertainty-calibration package) and the property that matters most (an in-sample fit flatters,
a cross-fitted one does not)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize, minimize_scalar

import calib_metrics as cm
from calib_metrics.classwise import classwise_ece, static_calibration_error
from calib_metrics.helm import helm_ece_equal_mass, helm_selective_accuracy
from calib_metrics.recalibration import (
    HistogramBinning,
    IsotonicCalibration,
    PlattScaling,
    TemperatureScaling,
    cross_fit,
)


def _multiple_choice(seed: int, n: int, k: int = 4, temperature: float = 2.0):
    """Scores whose softmax at ``temperature`` is the distribution the labels are drawn from."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(0.0, 3.0, size=(n, k))
    p = np.exp(scores / temperature)
    p /= p.sum(axis=1, keepdims=True)
    labels = np.minimum((rng.random(n)[:, None] > p.cumsum(axis=1)).sum(axis=1), k - 1)
    return scores, labels


def _nll(scores, labels, temperature):
    z = scores / temperature
    z = z - z.max(axis=1, keepdims=True)
    return np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(labels)), labels])


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_temperature_minimises_the_nll(temperature):
    scores, labels = _multiple_choice(1, 5000, temperature=temperature)
    fitted = TemperatureScaling.fit(scores, labels).temperature
    best = minimize_scalar(
        lambda log_t: _nll(scores, labels, np.exp(log_t)), bounds=(-5, 5), method="bounded",
        options={"xatol": 1e-10},
    )  # fmt: skip
    assert fitted == pytest.approx(np.exp(best.x), rel=1e-4)
    assert fitted == pytest.approx(temperature, rel=0.1)
    probs = TemperatureScaling(fitted).apply(scores)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert _nll(scores, labels, fitted) <= _nll(scores, labels, 1.0)


def test_temperature_bad_input_is_named():
    with pytest.raises(ValueError, match="tied"):
        TemperatureScaling.fit(np.zeros((5, 4)), np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="finite"):
        TemperatureScaling.fit([[0.0, -np.inf]], [0])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        TemperatureScaling.fit([[0.0, 1.0]], [2])
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError, match="no information about the gold option"):
        TemperatureScaling.fit(rng.normal(size=(400, 4)), np.argmin(rng.normal(size=(400, 4)), 1))


def test_platt_maximises_the_smoothed_likelihood():
    rng = np.random.default_rng(3)
    confidence = rng.uniform(0.3, 0.99, 3000)
    correct = (rng.random(3000) < confidence**3).astype(float)  # overconfident
    fitted = PlattScaling.fit(confidence, correct)
    x = np.log(confidence) - np.log1p(-confidence)
    pos, neg = correct.sum(), (1 - correct).sum()
    target = np.where(correct > 0, (pos + 1) / (pos + 2), 1 / (neg + 2))

    def loss(theta):
        z = theta[0] * x + theta[1]
        return np.mean(np.logaddexp(0, z) - target * z)

    best = minimize(loss, [1.0, 0.0], method="BFGS", options={"gtol": 1e-12}).x
    np.testing.assert_allclose([fitted.slope, fitted.intercept], best, rtol=1e-4, atol=1e-6)
    recalibrated = fitted.apply(confidence)
    assert cm.ece(recalibrated, correct) < cm.ece(confidence, correct) / 3


def test_histogram_binning_is_the_training_accuracy_per_bin():
    rng = np.random.default_rng(4)
    confidence, correct = rng.random(500), (rng.random(500) < 0.5).astype(float)
    fitted = HistogramBinning.fit(confidence, correct, n_bins=5)
    for b in range(5):
        inside = (confidence >= b / 5) & (confidence < (b + 1) / 5)
        assert fitted.values[b] == pytest.approx(correct[inside].mean())
    assert cm.ece(fitted.apply(confidence), correct) == pytest.approx(0.0, abs=1e-12)


def test_isotonic_equals_scikit_learn_and_is_monotone():
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(5)
    confidence = np.round(rng.random(3000), 3)  # ties included
    correct = (rng.random(3000) < confidence**2).astype(float)
    fitted = IsotonicCalibration.fit(confidence, correct)
    reference = IsotonicRegression(out_of_bounds="clip").fit(confidence, correct)
    np.testing.assert_allclose(fitted.apply(confidence), reference.predict(confidence), atol=1e-12)
    grid = np.linspace(0, 1, 1001)
    assert np.all(np.diff(fitted.apply(grid)) >= 0)


def test_cross_fit_keeps_groups_together_and_is_seeded():
    seen: list[set] = []

    class Recorder:
        @classmethod
        def fit(cls, inputs, targets):
            seen.append(set(targets.tolist()))
            return cls()

        def apply(self, inputs):
            return inputs

    groups = np.repeat(np.arange(10), 7)
    inputs = np.arange(70.0)
    out = cross_fit(Recorder.fit, inputs, groups, groups=groups, n_folds=5)
    np.testing.assert_array_equal(out, inputs)  # every item predicted once, in order
    held_out = [set(range(10)) - training for training in seen]
    assert sorted(len(h) for h in held_out) == [2] * 5
    assert set().union(*held_out) == set(range(10))
    seen.clear()
    cross_fit(Recorder.fit, inputs, groups, groups=groups, n_folds=5)
    assert [set(range(10)) - training for training in seen] == held_out
    with pytest.raises(ValueError, match="at least 2 folds"):
        cross_fit(Recorder.fit, inputs, groups, n_folds=1)


@pytest.mark.parametrize(
    "fit", [HistogramBinning.fit, IsotonicCalibration.fit], ids=["histogram", "isotonic"]
)
def test_in_sample_fit_flatters_cross_fitted_does_not(fit):
    """Random data: correctness is a coin flip whatever the confidence. A map fitted on the
    items it is scored on claims near-perfect calibration; the cross-fitted score agrees with
    the map's calibration on new data from the same source."""
    rng = np.random.default_rng(6)

    def draw(n):
        return rng.random(n), (rng.random(n) < 0.5).astype(float)

    confidence, correct = draw(400)
    in_sample = cm.ece(fit(confidence, correct).apply(confidence), correct)
    crossed = cm.ece(cross_fit(fit, confidence, correct, n_folds=5), correct)
    fresh_c, fresh_y = draw(200_000)
    on_new_data = cm.ece(fit(confidence, correct).apply(fresh_c), fresh_y)
    assert in_sample < 0.5 * on_new_data
    assert crossed > 0.7 * on_new_data


def _brute_force_classwise(probs, labels, n_bins):
    rows = zip(probs, labels, strict=True)
    pairs = [(p, int(j == y)) for row, y in rows for j, p in enumerate(row)]
    total = 0.0
    for b in range(n_bins):
        inside = [(p, hit) for p, hit in pairs if min(int(p * n_bins), n_bins - 1) == b]
        if inside:
            gap = np.mean([hit for _, hit in inside]) - np.mean([p for p, _ in inside])
            total += len(inside) / len(pairs) * abs(gap)
    return total


def test_classwise_ece_equals_brute_force():
    rng = np.random.default_rng(7)
    probs = rng.dirichlet(np.ones(4), size=300)
    labels = rng.integers(0, 4, size=300)
    assert classwise_ece(probs, labels) == pytest.approx(_brute_force_classwise(probs, labels, 10))


def test_static_calibration_error_equals_helms_marginal_ece():
    calibration = pytest.importorskip("calibration")  # uncertainty-calibration, HELM's package
    rng = np.random.default_rng(8)
    probs = rng.dirichlet(np.ones(5), size=2000)
    labels = rng.integers(0, 5, size=2000)
    peer = calibration.get_ece(probs, labels, num_bins=10, mode="marginal")
    assert static_calibration_error(probs, labels) == pytest.approx(peer, rel=1e-12)


@pytest.mark.parametrize("n", [7, 50, 1234])
def test_helm_numbers_equal_helms_package(n):
    calibration = pytest.importorskip("calibration")
    rng = np.random.default_rng(n)
    confidence = rng.random(n)
    correct = (rng.random(n) < confidence).astype(int)
    assert helm_ece_equal_mass(confidence, correct) == pytest.approx(
        calibration.get_ece_em(confidence, correct, num_bins=10), rel=1e-12
    )
    _, at_10 = calibration.get_selective_stats(confidence, correct)
    assert helm_selective_accuracy(confidence, correct) == pytest.approx(at_10)
