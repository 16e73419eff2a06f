"""The headline numbers of one task in one run: the metric table's rows computed on its pooled
records with the report's options, or copied from the results file when the run has no usable
samples."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import calib_metrics as cm
from calib_metrics.histogram import reliability_bins_from_histogram
from calib_tasks.render.text import binning_text
from calib_tasks.report.samples import DEFAULT_FILTER
from calib_tasks.scoring.confidence_methods import METHODS, method_named
from calib_tasks.scoring.metric_table import EQUAL_MASS, MetricOptions, metric_named
from calib_tasks.scoring.records import (
    GENERATION,
    HISTOGRAM,
    MULTICLASS,
    TOP_LABEL,
    Answer,
    Pool,
    RecordKind,
)

NAN = float("nan")
_KNOWN_METHODS = frozenset(method.name for method in METHODS)


@dataclass(frozen=True)
class TaskNumbers:
    """One task in one run. Floats are NaN where unknown; ``bins`` is None without samples.

    ``n`` counts predictions (questions, facts or tokens); ``documents`` counts sample lines.
    ``brier_kind`` is "multiclass" (all options scored), "top-label" or "" (as reported).
    ``observed`` is the lowest and highest confidence, for equal-mass bins (whose outer edges
    are 0 and 1 by convention) to be drawn over the observed range only. ``uninformative`` says
    why the scores carry no information (``calib_metrics.degenerate``: then the calibration
    errors are no measurement); None when they do, or when unknown (results file).
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
    #: Generated answers: the confidence method of the headline numbers (the records' first),
    #: and how many answers it scored (its ECE, MCE, Brier, AUROC and bins are of those; ``n``,
    #: ``documents`` and ``acc`` count every answer). None for other records.
    method: str | None = None
    scored: int | None = None


def _row(key: str, pool: Pool, options: MetricOptions, kind: RecordKind | None = None) -> float:
    """The metric table's row ``key`` computed on ``pool`` with ``options``, as for records of
    ``kind`` (by default the pool's); NaN where the row does not apply to that kind, or gives
    no number (a confidence method that scored no answer)."""
    compute = metric_named(key).compute.get(kind or pool.kind)
    value = None if compute is None else compute(pool, options)
    return NAN if value is None else float(value)


def _named_methods(pool: Pool) -> list[str]:
    """Every confidence method the records of a pool of generated answers name, in order."""
    methods: dict[str, None] = {}
    for record in cast(tuple[Answer, ...], pool.records):
        methods.update(dict.fromkeys(record.confidences))
    return list(methods)


def generation_methods(pool: Pool) -> list[str]:
    """The confidence methods of a pool of generated answers, in the order their records name
    them (the task's ``calib_confidence``: the first is the one of its plain ``ece``), those
    unknown to ``confidence_methods`` left out (``unknown_methods``)."""
    return [name for name in _named_methods(pool) if name in _KNOWN_METHODS]


def unknown_methods(pool: Pool) -> list[str]:
    """The confidence methods the records name that ``confidence_methods`` does not know (no
    metric row computes them: a newer package wrote them, or a hand-written record)."""
    return [name for name in _named_methods(pool) if name not in _KNOWN_METHODS]


def _generation_numbers(pool: Pool, options: MetricOptions) -> TaskNumbers:
    """The headline numbers of generated answers: accuracy over all of them (the metric table's
    ``acc``), and the calibration of the first confidence method (the table's ``ece`` and that
    method's rows) on the answers it scored, with its reliability bins; NaN, and no bins, when it
    scored none. ``ValueError`` when the records name no known method."""
    methods = generation_methods(pool)
    if not methods:
        raise ValueError(
            f"the records name no known confidence method ({', '.join(unknown_methods(pool))}; "
            f"the methods are {', '.join(sorted(_KNOWN_METHODS))})"
        )
    method = method_named(methods[0])
    scored = pool.method(method.name)

    def row(metric: str) -> float:  # the method's row (not called on no answers: it warns)
        return NAN if scored is None else _row(method.key(metric), pool, options)

    bins, observed = None, None
    if scored is not None:
        confidence = scored.confidence
        bins = cm.reliability_bins(
            confidence, scored.correct, n_bins=options.n_bins, strategy=options.binning
        )
        if options.binning == EQUAL_MASS:
            observed = (float(confidence.min()), float(confidence.max()))
    return TaskNumbers(
        source="samples",
        n=pool.n,
        documents=pool.n,
        acc=_row("acc", pool, options),
        mean_confidence=NAN if scored is None else float(scored.confidence.mean()),
        ece=row("ece"),
        ece_low=row("ece_ci_low"),
        ece_high=row("ece_ci_high"),
        mce=NAN if scored is None else _row("mce", scored, options),
        brier=row("brier"),
        brier_kind="top-label",
        auroc=row("auroc"),
        bins=bins,
        binning=binning_text(options.n_bins, options.binning),
        observed=observed,
        uninformative=None if scored is None else scored.uninformative_reason,
        method=method.name,
        scored=0 if scored is None else scored.n,
    )


def _brier_kind(pool: Pool) -> RecordKind:
    """The kind whose Brier row the headline shows: multiclass when every document carries its
    options' probabilities and all have the same number of options, else top-label (a note
    says why, ``entries``)."""
    if pool.kind == MULTICLASS and len(set(pool.option_counts.tolist())) == 1:
        return MULTICLASS
    return TOP_LABEL


def pool_numbers(pool: Pool, options: MetricOptions) -> TaskNumbers:
    """The numbers of the records of ``pool``: the metric table's rows (ECE with its interval,
    MCE, Brier, AUROC; accuracy of token histograms) computed with ``options``, reliability bins
    with its binning, and whether the scores carry information. Token histograms have
    equal-width bins only (``ValueError`` otherwise) and resample whole documents. Generated
    answers: ``_generation_numbers``."""
    if pool.kind == GENERATION:
        return _generation_numbers(pool, options)
    interval = (_row("ece_ci_low", pool, options), _row("ece_ci_high", pool, options))
    if pool.kind == HISTOGRAM:
        metrics = pool.histogram_metrics(options.n_bins)
        return TaskNumbers(
            source="samples",
            n=int(metrics["n"]),
            documents=pool.n,
            acc=_row("acc", pool, options),
            mean_confidence=float(metrics["mean_confidence"]),
            ece=_row("ece", pool, options),
            ece_low=interval[0],
            ece_high=interval[1],
            mce=_row("mce", pool, options),
            brier=_row("brier", pool, options),
            brier_kind="top-label",
            auroc=_row("auroc", pool, options),
            bins=reliability_bins_from_histogram(pool.merged, n_bins=options.n_bins),
            binning=binning_text(options.n_bins, options.binning),
            uninformative=pool.uninformative_reason,
        )
    confidence, correct = pool.confidence, pool.correct
    brier_kind = _brier_kind(pool)
    return TaskNumbers(
        source="samples",
        n=pool.n,
        documents=pool.n,
        acc=float(correct.mean()),
        mean_confidence=float(confidence.mean()),
        ece=_row("ece", pool, options),
        ece_low=interval[0],
        ece_high=interval[1],
        mce=_row("mce", pool, options),
        brier=_row("brier", pool, options, brier_kind),
        brier_kind="multiclass" if brier_kind == MULTICLASS else "top-label",
        auroc=_row("auroc", pool, options),
        bins=cm.reliability_bins(
            confidence, correct, n_bins=options.n_bins, strategy=options.binning
        ),
        binning=binning_text(options.n_bins, options.binning),
        observed=(float(confidence.min()), float(confidence.max()))
        if options.binning == EQUAL_MASS
        else None,
        uninformative=pool.uninformative_reason,
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
    ``n-samples``. A results file has no mean confidence (NaN)."""

    def metric(name: str) -> float:
        return _metric(metrics, name, filter_key)

    return TaskNumbers(
        source="results",
        n=None,
        documents=documents,
        acc=metric("acc"),
        mean_confidence=NAN,
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
