"""Every metric of calib_metrics against a brute-force reference written here from its
definition: Python loops over items and bins, exact rational arithmetic where a bin edge is
decided. Random inputs, with and without tied confidences (ties include 0 and 1), both binning
strategies, several bin counts."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

import calib_metrics as cm

STRATEGIES = ("equal_width", "equal_mass")
BIN_COUNTS = (1, 3, 10, 15, 40)
# (seed, n, tied): tied data rounds confidences to one decimal, so ties and duplicate
# equal-mass edges occur and confidences sit exactly on equal-width edges, 0 and 1 included
CASES = [(0, 300, False), (1, 57, False), (2, 300, True), (3, 8, True)]


def top_label_data(seed: int, n: int, tied: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    confidence = rng.random(n)
    if tied:
        confidence = np.round(confidence, 1)
    return confidence, rng.random(n) < confidence**1.3  # miscalibrated: overconfident


# ---------------------------------------------------------------------------------------------
# references


def ref_edges(confidence: np.ndarray, n_bins: int, strategy: str) -> list[Fraction]:
    """Equal width: i/B exactly. Equal mass: the i/B quantiles, linear interpolation between
    the order statistics at position (n - 1) * i / B, with 0 and 1 as outer edges."""
    if strategy == "equal_width":
        return [Fraction(i, n_bins) for i in range(n_bins + 1)]
    ordered = sorted(float(c) for c in confidence)
    edges = [Fraction(0)]
    for i in range(1, n_bins):
        position = (len(ordered) - 1) * i / n_bins
        low = math.floor(position)
        high = min(low + 1, len(ordered) - 1)
        value = ordered[low] + (position - low) * (ordered[high] - ordered[low])
        edges.append(Fraction(value))
    return [*edges, Fraction(1)]


def ref_bin(c: float, edges: list[Fraction]) -> int:
    """Bin i = [e_i, e_{i+1}), the last closed: the highest bin whose left edge is <= c."""
    return max(i for i in range(len(edges) - 1) if edges[i] <= Fraction(float(c)))


def ref_members(confidence, correct, n_bins, strategy) -> list[list[tuple[float, float]]]:
    edges = ref_edges(confidence, n_bins, strategy)
    members: list[list[tuple[float, float]]] = [[] for _ in range(n_bins)]
    for c, y in zip(confidence, correct, strict=True):
        members[ref_bin(c, edges)].append((float(c), float(y)))
    return members


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def ref_gaps(members) -> list[tuple[int, float, float]]:
    """(n_b, acc_b, conf_b) of the non-empty bins."""
    return [(len(m), mean(y for _, y in m), mean(c for c, _ in m)) for m in members if m]


def ref_ece(members, n):
    return sum(n_b / n * abs(acc - conf) for n_b, acc, conf in ref_gaps(members))


def ref_mce(members, n):
    return max(abs(acc - conf) for _, acc, conf in ref_gaps(members))


def ref_rms(members, n):
    return math.sqrt(sum(n_b / n * (acc - conf) ** 2 for n_b, acc, conf in ref_gaps(members)))


def ref_debiased(members, n):
    total = 0.0
    for n_b, acc, conf in ref_gaps(members):
        if n_b >= 2:
            total += n_b / n * ((acc - conf) ** 2 - acc * (1 - acc) / (n_b - 1))
    return math.sqrt(max(total, 0.0))


def ref_auroc(confidence, correct):
    positives = [c for c, y in zip(confidence, correct, strict=True) if y]
    negatives = [c for c, y in zip(confidence, correct, strict=True) if not y]
    if not positives or not negatives:
        return 0.5
    wins = sum((p > q) + 0.5 * (p == q) for p in positives for q in negatives)
    return wins / (len(positives) * len(negatives))


def ref_expected_errors(confidence, correct, k):
    """Expected errors among the k most confident items when ties are ordered at random: all
    items above the k-th largest confidence v, and the rest drawn uniformly from those at v."""
    v = sorted(confidence, reverse=True)[k - 1]
    above = [y for c, y in zip(confidence, correct, strict=True) if c > v]
    at_v = [y for c, y in zip(confidence, correct, strict=True) if c == v]
    return sum(1 - y for y in above) + (k - len(above)) * sum(1 - y for y in at_v) / len(at_v)


def ref_aurc(confidence, correct):
    n = len(confidence)
    return mean(ref_expected_errors(confidence, correct, k) / k for k in range(1, n + 1))


def ref_smooth_ece_at(confidence, correct, sigma, grid=20001):
    """smECE_sigma straight from the definition: the reflected Gaussian kernel as a sum over
    the mirror images x + 2m and -x + 2m (|m| <= 3), integrated by the trapezoidal rule."""
    t = np.linspace(0.0, 1.0, grid)
    smoothed = np.zeros(grid)
    for c, y in zip(confidence, correct, strict=True):
        for m in range(-3, 4):
            for image in (c + 2 * m, -c + 2 * m):
                smoothed += (y - c) * np.exp(-0.5 * ((t - image) / sigma) ** 2)
    density = np.abs(smoothed / (len(confidence) * sigma * math.sqrt(2 * math.pi)))
    return (density.sum() - 0.5 * (density[0] + density[-1])) / (grid - 1)


# ---------------------------------------------------------------------------------------------
# tests


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("n_bins", BIN_COUNTS)
def test_binned_metrics_equal_reference(case, strategy, n_bins):
    confidence, correct = top_label_data(*case)
    n = confidence.size
    members = ref_members(confidence, correct, n_bins, strategy)

    bins = cm.reliability_bins(confidence, correct, n_bins=n_bins, strategy=strategy)
    assert bins.n == n
    np.testing.assert_array_equal(bins.count, [len(m) for m in members])
    np.testing.assert_allclose(bins.sum_confidence, [sum(c for c, _ in m) for m in members])
    np.testing.assert_allclose(bins.sum_correct, [sum(y for _, y in m) for m in members])
    expected_accuracy = [mean(y for _, y in m) if m else np.nan for m in members]
    np.testing.assert_allclose(bins.accuracy, expected_accuracy, equal_nan=True)
    expected_confidence = [mean(c for c, _ in m) if m else np.nan for m in members]
    np.testing.assert_allclose(bins.mean_confidence, expected_confidence, equal_nan=True)
    for stored, exact in zip(bins.edges, ref_edges(confidence, n_bins, strategy), strict=True):
        if strategy == "equal_width":  # the smallest double >= i/B
            assert Fraction(float(np.nextafter(stored, -1.0))) < exact <= Fraction(stored)
        else:  # numpy forms the position as (n - 1) * (i / B): rounding differs slightly
            assert stored == pytest.approx(float(exact), rel=0, abs=1e-12)

    args, bins_of = (confidence, correct), {"n_bins": n_bins, "strategy": strategy}
    assert cm.ece(*args, **bins_of) == pytest.approx(ref_ece(members, n), rel=1e-12, abs=1e-15)
    assert cm.mce(*args, **bins_of) == pytest.approx(ref_mce(members, n), rel=1e-12, abs=1e-15)
    assert cm.rms_calibration_error(*args, **bins_of) == pytest.approx(
        ref_rms(members, n), rel=1e-12
    )
    expected = ref_debiased(members, n)
    assert cm.debiased_l2_calibration_error(*args, **bins_of) == pytest.approx(
        expected, rel=1e-9, abs=1e-12
    )


@pytest.mark.parametrize("case", CASES)
def test_unbinned_top_label_metrics_equal_reference(case):
    confidence, correct = top_label_data(*case)
    pairs = list(zip(confidence.tolist(), correct.tolist(), strict=True))
    n = len(pairs)
    assert cm.ece_one_bin(confidence, correct) == pytest.approx(
        abs(mean(c for c, _ in pairs) - mean(y for _, y in pairs)), rel=1e-12, abs=1e-15
    )
    assert cm.brier_top_label(confidence, correct) == pytest.approx(
        mean((c - y) ** 2 for c, y in pairs), rel=1e-12
    )
    assert cm.auroc(confidence, correct) == pytest.approx(
        ref_auroc(confidence.tolist(), correct.tolist()), rel=1e-12
    )
    assert cm.aurc(confidence, correct) == pytest.approx(
        ref_aurc(confidence.tolist(), correct.tolist()), rel=1e-12
    )
    for coverage in (1e-9, 0.1, 0.35, 0.7, 1.0):
        k = math.ceil(Fraction(coverage) * n)
        errors = ref_expected_errors(confidence.tolist(), correct.tolist(), k)
        assert cm.accuracy_at_coverage(confidence, correct, coverage=coverage) == pytest.approx(
            1 - errors / k, rel=1e-12
        )


def test_accuracy_at_coverage_counts_items_exactly():
    # 0.7 * 10 is 7.000000000000001 in floating point: a naive ceil would keep 8 items
    confidence = np.linspace(1.0, 0.1, 10)
    correct = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    assert cm.accuracy_at_coverage(confidence, correct, coverage=0.7) == pytest.approx(6 / 7)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multiclass_metrics_equal_reference(seed):
    rng = np.random.default_rng(seed)
    n, k = 200, 5
    probs = rng.dirichlet(np.full(k, 0.7), size=n)
    probs[:3] = np.eye(k)[:3]  # one-hot rows: probability 0 of a wrong gold label below
    probs[5, :2] = 0.5  # a tie at the maximum: the first maximal class is the prediction
    probs[5, 2:] = 0.0
    labels = rng.integers(0, k, size=n)
    labels[0] = 1  # gold class given probability 0 -> the clipped term
    rows = [(probs[i].tolist(), int(labels[i])) for i in range(n)]

    brier = mean(sum((p - (j == y)) ** 2 for j, p in enumerate(row)) for row, y in rows)
    assert cm.brier_multiclass(probs, labels) == pytest.approx(brier, rel=1e-12)
    log_loss = mean(-math.log(max(row[y], 1e-12)) for row, y in rows)
    assert cm.nll(probs, labels) == pytest.approx(log_loss, rel=1e-12)

    confidence, correct = cm.top_label_from_probs(probs, labels)
    assert confidence.tolist() == [max(row) for row, _ in rows]
    assert correct.tolist() == [float(row.index(max(row)) == y) for row, y in rows]


@pytest.mark.parametrize(
    "exponent, n", [(1.0, 150), (1.8, 150), (4.0, 120)], ids=["calibrated", "over", "far"]
)
def test_smooth_ece_is_the_fixed_point_of_the_reference(exponent, n):
    """smECE_sigma - sigma decreases with slope <= -1, so |ref(s) - s| at our value s bounds
    the distance from s to the exact fixed point (and smooth ECE is that fixed point)."""
    rng = np.random.default_rng(int(exponent * 10))
    confidence = rng.beta(2.0, 1.0, size=n)
    correct = (rng.random(n) < confidence**exponent).astype(float)
    value = cm.smooth_ece(confidence, correct)
    assert 0.01 < value < 0.5
    assert ref_smooth_ece_at(confidence, correct, value) == pytest.approx(value, abs=1e-6)


def test_smooth_ece_of_exact_predictions_is_zero():
    confidence = np.array([0.0, 1.0, 1.0, 0.0])
    assert cm.smooth_ece(confidence, np.array([0, 1, 1, 0])) == 0.0


EDGE_NEIGHBOURS = sorted(
    {
        float(np.nextafter(i / b, direction))
        for b in (3, 7, 10, 20, 1000)
        for i in range(b + 1)
        for direction in (-1.0, 0.0, 2.0)
    }
    - {float(np.nextafter(0.0, -1.0)), float(np.nextafter(1.0, 2.0))}
)


@pytest.mark.parametrize("n_bins", [3, 7, 10, 20, 1000])
def test_equal_width_bin_is_exactly_floor_of_c_times_b(n_bins):
    """Doubles one ulp around every edge: float c * B rounds some of them onto the edge."""
    confidence = np.array(EDGE_NEIGHBOURS)
    bins = cm.reliability_bins(confidence, np.zeros(confidence.size), n_bins=n_bins)
    expected = np.zeros(n_bins, dtype=int)
    for c in EDGE_NEIGHBOURS:
        expected[min(math.floor(Fraction(c) * n_bins), n_bins - 1)] += 1
    np.testing.assert_array_equal(bins.count, expected)
    assert all(Fraction(float(e)) >= Fraction(i, n_bins) for i, e in enumerate(bins.edges))


def test_equal_mass_ties_never_split_and_duplicate_edges_leave_bins_empty():
    # quantile positions 1.8, 3.6, 5.4, 7.2 of the sorted values: edges 0.2, 0.2, 0.48, 0.9
    confidence = np.array([0.2] * 6 + [0.9] * 4)
    bins = cm.reliability_bins(confidence, np.ones(10), n_bins=5, strategy="equal_mass")
    np.testing.assert_allclose(bins.edges, [0.0, 0.2, 0.2, 0.48, 0.9, 1.0], rtol=1e-12)
    # all six 0.2s in bin 2, the highest bin whose left edge is 0.2; bin 1 is [0.2, 0.2)
    np.testing.assert_array_equal(bins.count, [0, 0, 6, 0, 4])
    np.testing.assert_array_equal(bins.accuracy, [np.nan, np.nan, 1.0, np.nan, 1.0])
