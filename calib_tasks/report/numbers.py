"""The headline numbers of one task in one run, recomputed from its records with calib_metrics,
or copied from the results file when the run has no usable samples."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import calib_metrics as cm
from calib_tasks.render.text import binning_text
from calib_tasks.report.samples import DEFAULT_FILTER
from calib_tasks.scoring.records import PREDICT_ONLY_KEY

NAN = float("nan")
EQUAL_WIDTH = "equal_width"
EQUAL_MASS = "equal_mass"


@dataclass(frozen=True)
class TaskNumbers:
    """One task in one run. Floats are NaN where unknown; ``bins`` is None without samples.

    ``n`` counts predictions (questions, facts or tokens); ``documents`` counts sample lines.
    ``brier_kind`` is "multiclass" (all options scored), "top-label" or "" (as reported).
    ``observed`` is the lowest and highest confidence, for equal-mass bins (whose outer edges
    are 0 and 1 by convention) to be drawn over the observed range only. ``uninformative`` says
    why the scores carry no information (``calib_metrics.uninformative_reason``: then the
    calibration errors are no measurement); None when they do, or when unknown (results file).
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
    uninformative: str | None = None


def _probabilities(records: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray] | None:
    """Option probabilities and gold labels when every record has valid ones, else None."""
    try:
        return cm.as_multiclass([r["probs"] for r in records], [r["label"] for r in records])
    except (KeyError, TypeError, ValueError):
        return None


def ece_interval(
    confidence: np.ndarray, correct: np.ndarray, *, n_bins: int, strategy: str, seed: int
) -> cm.ConfidenceInterval:
    """Bootstrap interval of the ECE with the given binning (calib_metrics' default level and
    resamples): the histogram-speed item bootstrap for equal-width bins (what the tasks
    report), exact item resampling otherwise."""
    return cm.bootstrap_ci(
        confidence, correct, metric="ece", n_bins=n_bins, strategy=strategy, seed=seed
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
    option_probs = [r["probs"] for r in records] if all("probs" in r for r in records) else None
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
        ece=cm.ece(confidence, correct, n_bins=n_bins, strategy=strategy),
        ece_low=interval.low,
        ece_high=interval.high,
        mce=cm.mce(confidence, correct, n_bins=n_bins, strategy=strategy),
        brier=float(brier),
        brier_kind=brier_kind,
        auroc=cm.auroc(confidence, correct),
        bins=bins,
        binning=binning_text(n_bins, strategy),
        observed=(float(confidence.min()), float(confidence.max()))
        if strategy == EQUAL_MASS
        else None,
        uninformative=cm.uninformative_reason(confidence, option_probs=option_probs),
    )


def histogram_numbers(
    histograms: Sequence[cm.ConfidenceHistogram], *, n_bins: int, seed: int
) -> TaskNumbers:
    """Numbers of per-document token histograms: metrics of the merged histogram (equal-width
    bins only), interval from resampling documents with ``seed``."""
    merged = cm.ConfidenceHistogram.merge(histograms)
    metrics = cm.histogram_metrics(merged, n_bins=n_bins)
    interval = cm.bootstrap_ci(
        histograms=cm.canonical_order(histograms), metric="ece", n_bins=n_bins, seed=seed
    )
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
        uninformative=cm.histogram_uninformative_reason(merged),
    )


def _metric(metrics: Mapping[str, Any], name: str, filter_key: str) -> float:
    value = metrics.get(f"{name},{filter_key}")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return NAN


def results_numbers(
    metrics: Mapping[str, Any], documents: int | None, filter_key: str = DEFAULT_FILTER
) -> TaskNumbers:
    """The task's numbers under ``filter_key`` as its results file reports them (computed with
    calib_metrics' defaults, as every task computes them); ``documents`` from the file's
    ``n-samples``."""

    def metric(name: str) -> float:
        return _metric(metrics, name, filter_key)

    return TaskNumbers(
        source="results",
        n=None,
        documents=documents,
        acc=metric("acc"),
        mean_confidence=metric("mean_confidence"),
        ece=metric("ece"),
        ece_low=metric("ece_ci_low"),
        ece_high=metric("ece_ci_high"),
        mce=metric("mce"),
        brier=metric("brier"),
        brier_kind="",
        auroc=metric("auroc"),
        bins=None,
        binning=binning_text(cm.DEFAULT_N_BINS, cm.DEFAULT_STRATEGY),
    )


def _filters_of(metrics: Mapping[str, Any], name: str) -> list[str]:
    prefix = f"{name},"
    return [key[len(prefix) :] for key in metrics if key.startswith(prefix)]


def result_filters(metrics: Mapping[str, Any]) -> list[str]:
    """The filters under which a task's results entry reports an ECE, in the file's order
    (empty for a task that is not a calib task, or ran with ``--predict_only``)."""
    return _filters_of(metrics, "ece")


def is_calib_result(metrics: Mapping[str, Any]) -> bool:
    """Whether a task's results entry looks like a calib task's (it reports an ECE)."""
    return bool(result_filters(metrics))


def is_predict_only_result(metrics: Mapping[str, Any]) -> bool:
    """Whether a task's results entry is that of a ``--predict_only`` run: ``bypass`` (999)
    under some filter and no ECE; such a file holds no numbers, only its samples do."""
    return bool(_filters_of(metrics, PREDICT_ONLY_KEY)) and not is_calib_result(metrics)
