"""Speed of calib_metrics (a script, not a test).

Run ``python benchmarks/bench_metrics.py`` with the package importable (installed, as by
``make test``, or with ``PYTHONPATH=.`` from the repository root).

1. Every metric on 1M random predictions, plus a 1,000-resample ``bootstrap_ci`` of the ECE
   (its vectorised binned path): the whole must take at most 1 s.
2. ``ece`` against torchmetrics' ``binary_calibration_error`` (10 bins, L1) on the same 10M
   predictions: ours must be at least 10x faster, and the two values must agree.

Times are the best of a few repeats (3, and 7 for our ``ece``, whose run takes a few tens of
milliseconds), on whatever machine runs the script.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torchmetrics.functional.classification import binary_calibration_error

import calib_metrics as cm

REPEATS = 3


def best_time(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def multiclass_sample(n: int, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Overconfident softmax predictions: labels drawn from the probabilities at temperature 2."""
    logits = 2.0 * rng.standard_normal((n, k))
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    tempered = np.sqrt(probs)
    tempered /= tempered.sum(axis=1, keepdims=True)
    labels = (rng.random((n, 1)) > np.cumsum(tempered, axis=1)).sum(axis=1)
    return probs, np.minimum(labels, k - 1)


def all_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, Callable[[], object]]:
    confidence, correct = cm.top_label_from_probs(probs, labels)
    return {
        "top_label_from_probs": lambda: cm.top_label_from_probs(probs, labels),
        "reliability_bins equal_width": lambda: cm.reliability_bins(confidence, correct),
        "reliability_bins equal_mass": lambda: cm.reliability_bins(
            confidence, correct, strategy="equal_mass"
        ),
        "ece": lambda: cm.ece(confidence, correct),
        "ece equal_mass": lambda: cm.ece(confidence, correct, strategy="equal_mass"),
        "mce": lambda: cm.mce(confidence, correct),
        "rms_calibration_error": lambda: cm.rms_calibration_error(confidence, correct),
        "ece_one_bin": lambda: cm.ece_one_bin(confidence, correct),
        "debiased_l2_calibration_error": lambda: cm.debiased_l2_calibration_error(
            confidence, correct
        ),
        "smooth_ece": lambda: cm.smooth_ece(confidence, correct),
        "brier_top_label": lambda: cm.brier_top_label(confidence, correct),
        "brier_multiclass": lambda: cm.brier_multiclass(probs, labels),
        "nll": lambda: cm.nll(probs, labels),
        "auroc": lambda: cm.auroc(confidence, correct),
        "aurc": lambda: cm.aurc(confidence, correct),
        "accuracy_at_coverage 0.8": lambda: cm.accuracy_at_coverage(
            confidence, correct, coverage=0.8
        ),
        "histogram + histogram_metrics": lambda: cm.histogram_metrics(
            cm.ConfidenceHistogram.from_samples(confidence, correct)
        ),
        "bootstrap_ci ece (1,000 resamples)": lambda: cm.bootstrap_ci(
            confidence, correct, metric="ece"
        ),
    }


def bench_all_metrics(n: int = 1_000_000, k: int = 4) -> None:
    probs, labels = multiclass_sample(n, k, np.random.default_rng(0))
    metrics = all_metrics(probs, labels)
    print(f"== all metrics on {n:,} predictions ({k} classes), best of {REPEATS} ==")
    total = 0.0
    for name, fn in metrics.items():
        seconds = best_time(fn)
        total += seconds
        print(f"{name:<40} {seconds * 1e3:8.1f} ms")
    verdict = "OK" if total <= 1.0 else "TOO SLOW"
    print(f"{'total':<40} {total * 1e3:8.1f} ms = {total:.3f} x the 1 s bar ({verdict})")


def bench_ece_vs_torchmetrics(n: int = 10_000_000, n_bins: int = 10) -> None:
    rng = np.random.default_rng(1)
    confidence = rng.random(n)
    correct = (rng.random(n) < confidence**1.2).astype(np.int64)
    preds, target = torch.from_numpy(confidence), torch.from_numpy(correct)  # same memory
    print(f"== ece vs torchmetrics binary_calibration_error, {n:,} predictions, {n_bins} bins ==")
    ours = best_time(lambda: cm.ece(confidence, correct, n_bins=n_bins), repeats=7)
    theirs = best_time(lambda: binary_calibration_error(preds, target, n_bins=n_bins, norm="l1"))
    value = cm.ece(confidence, correct, n_bins=n_bins)
    reference = float(binary_calibration_error(preds, target, n_bins=n_bins, norm="l1"))
    speedup = theirs / ours
    print(f"calib_metrics.ece        {ours * 1e3:8.1f} ms  value {value:.12f}")
    print(f"torchmetrics             {theirs * 1e3:8.1f} ms  value {reference:.12f}")
    verdict = "OK" if speedup >= 10 else "BELOW the 10x bar"
    print(f"speed-up {speedup:.1f}x ({verdict}); |difference| {abs(value - reference):.1e}")


if __name__ == "__main__":
    bench_all_metrics()
    print()
    bench_ece_vs_torchmetrics()
