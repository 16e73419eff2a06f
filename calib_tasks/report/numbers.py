"""The headline numbers of one task in one run, recomputed from its records with calib_metrics,
or copied from the results file when the run has no usable samples."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import calib_metrics as cm

NAN = float("nan")
EQUAL_WIDTH = "equal_width"
EQUAL_MASS = "equal_mass"


@dataclass(frozen=True)
class TaskNumbers:
    """One task in one run. Floats are NaN where unknown; ``bins`` is None without samples.

    ``n`` counts predictions (questions, facts or tokens); ``documents`` counts sample lines.
    ``brier_kind`` is "multiclass" (all options scored), "top-label" or "" (as reported).
    ``observed`` is the lowest and highest confidence, for equal-mass bins (whose outer edges
    are 0 and 1 by convention) to be drawn over the observed range only.
    """

    source: str
    n: int | None
    documents: int | None
    acc: float
    mean_confidence: float
    ece: float
    ece_low: float
    ece_high: float
    mce: float
    brier: float
    brier_kind: str
    auroc: float
    bins: cm.ReliabilityBins | None
    binning: str
    observed: tuple[float, float] | None = None


def binning_text(n_bins: int, strategy: str) -> str:
    """``"10 equal-width bins"`` and the like."""
    return f"{n_bins} {strategy.replace('_', '-')} bin{'s' if n_bins != 1 else ''}"


def _probabilities(records: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray] | None:
    """Option probabilities and gold labels when every record has valid ones, else None."""
    try:
        return cm.as_multiclass([r["probs"] for r in records], [r["label"] for r in records])
    except (KeyError, TypeError, ValueError):
        return None


def ece_interval(
    confidence: np.ndarray, correct: np.ndarray, *, n_bins: int, strategy: str, seed: int
) -> cm.ConfidenceInterval:
    """95% bootstrap interval of the ECE with the given binning: the histogram-speed item
    bootstrap for equal-width bins (what the tasks report), exact item resampling otherwise."""
    if strategy == EQUAL_WIDTH:
        return cm.binned_bootstrap_ci(confidence, correct, n_bins=n_bins, seed=seed)["ece"]
    return cm.bootstrap_ci(
        lambda c, y: cm.ece(c, y, n_bins, strategy), confidence, correct, seed=seed
    )


def top_label_numbers(
    records: Sequence[Mapping[str, Any]], *, n_bins: int, strategy: str, seed: int
) -> TaskNumbers:
    """Numbers of validated top-label records (see ``samples.top_label_problem``); the interval
    is the item bootstrap of calib_metrics with ``seed``."""
    confidence = np.fromiter((r["confidence"] for r in records), float, len(records))
    correct = np.fromiter((r["correct"] for r in records), float, len(records))
    bins = cm.reliability_bins(confidence, correct, n_bins=n_bins, strategy=strategy)
    interval = ece_interval(confidence, correct, n_bins=n_bins, strategy=strategy, seed=seed)
    probabilities = _probabilities(records)
    if probabilities is not None:
        brier, brier_kind = cm.brier_multiclass(*probabilities), "multiclass"
    else:
        brier, brier_kind = cm.brier_top_label(confidence, correct), "top-label"
    return TaskNumbers(
        source="samples",
        n=len(records),
        documents=len(records),
        acc=float(correct.mean()),
        mean_confidence=float(confidence.mean()),
        ece=cm.ece(confidence, correct, n_bins, strategy),
        ece_low=interval.low,
        ece_high=interval.high,
        mce=cm.mce(confidence, correct, n_bins, strategy),
        brier=float(brier),
        brier_kind=brier_kind,
        auroc=cm.auroc(confidence, correct),
        bins=bins,
        binning=binning_text(n_bins, strategy),
        observed=(float(confidence.min()), float(confidence.max()))
        if strategy == EQUAL_MASS
        else None,
    )


def histogram_numbers(
    histograms: Sequence[cm.ConfidenceHistogram], *, n_bins: int, seed: int
) -> TaskNumbers:
    """Numbers of per-document token histograms: metrics of the merged histogram (equal-width
    bins only), interval from resampling documents with ``seed``."""
    merged = cm.ConfidenceHistogram.merge(histograms)
    metrics = cm.histogram_metrics(merged, n_bins=n_bins)
    interval = cm.histogram_bootstrap_ci(list(histograms), n_bins=n_bins, seed=seed)["ece"]
    return TaskNumbers(
        source="samples",
        n=int(metrics["n"]),
        documents=len(histograms),
        acc=float(metrics["acc"]),
        mean_confidence=float(metrics["mean_confidence"]),
        ece=float(metrics["ece"]),
        ece_low=interval.low,
        ece_high=interval.high,
        mce=float(metrics["mce"]),
        brier=float(metrics["brier_top_label"]),
        brier_kind="top-label",
        auroc=NAN,
        bins=cm.reliability_bins_from_histogram(merged, n_bins=n_bins),
        binning=binning_text(n_bins, EQUAL_WIDTH),
    )


def _metric(metrics: Mapping[str, Any], name: str) -> float:
    value = metrics.get(f"{name},none")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return NAN


def results_numbers(metrics: Mapping[str, Any], documents: int | None) -> TaskNumbers:
    """The task's numbers as its results file reports them (the task's own defaults: 10
    equal-width bins, seed 0); ``documents`` from the file's ``n-samples``."""
    return TaskNumbers(
        source="results",
        n=None,
        documents=documents,
        acc=_metric(metrics, "acc"),
        mean_confidence=_metric(metrics, "mean_confidence"),
        ece=_metric(metrics, "ece"),
        ece_low=_metric(metrics, "ece_ci_low"),
        ece_high=_metric(metrics, "ece_ci_high"),
        mce=_metric(metrics, "mce"),
        brier=_metric(metrics, "brier"),
        brier_kind="",
        auroc=_metric(metrics, "auroc"),
        bins=None,
        binning=binning_text(10, EQUAL_WIDTH),
    )


def is_calib_result(metrics: Mapping[str, Any]) -> bool:
    """Whether a task's results entry looks like a calib task's (it reports an ECE)."""
    return "ece,none" in metrics
