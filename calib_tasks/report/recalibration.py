"""Per task: calibration after each recalibrator, cross-fitted
(``calib_tasks.scoring.recalibrators``), with bootstrap intervals, and the fitted temperature with
its interval.

The intervals resample the items of the out-of-fold predictions (the maps stay as fitted, so the
refitting's own variance is not in them); the temperature's interval refits the temperature on
each resample of the documents. Both use calib_metrics' level and resamples and the report's
seed; the ECE and SCE the report's bins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import calib_metrics as cm
from calib_metrics.bootstrap import index_bootstrap_ci
from calib_metrics.classwise import static_calibration_error
from calib_tasks.report.entries import Entry, ReportOptions
from calib_tasks.report.numbers import generation_methods
from calib_tasks.scoring.confidence_rules import SUM
from calib_tasks.scoring.recalibrators import (
    RECALIBRATORS,
    Recalibrator,
    cross_fit_folds,
    fit_temperature,
    fitted_temperature,
    option_scores,
    out_of_fold_probs,
    out_of_fold_top_label,
)
from calib_tasks.scoring.records import (
    GENERATION,
    LOGLIKELIHOODS,
    MULTICLASS,
    TOP_LABEL,
    Pool,
)

#: The recalibrator whose result the report draws beside the original diagram, per record kind.
DRAWN = {MULTICLASS: "temperature", TOP_LABEL: "platt"}


@dataclass(frozen=True)
class RecalibratedRow:
    """One entry after one recalibrator (``None``: as measured): ECE, SCE (multiple choice) and
    Brier score, each with its bootstrap interval, and the recalibrated top-label predictions."""

    recalibrator: Recalibrator | None
    ece: cm.ConfidenceInterval
    sce: cm.ConfidenceInterval | None
    brier: cm.ConfidenceInterval
    confidence: np.ndarray
    correct: np.ndarray


@dataclass(frozen=True)
class Recalibration:
    """An entry's rows (as measured first), the temperature fitted on all its documents (None
    for tasks without option scores; ``inf`` where the scores say nothing of the gold option)
    with its interval (None when a resample's temperature is infinite too), why
    recalibrators could not be fitted (``skipped``), and how the items were dealt to the
    cross-fitting folds (``folds``, in words)."""

    rows: list[RecalibratedRow]
    temperature: float | None
    temperature_interval: cm.ConfidenceInterval | None
    skipped: list[str]
    folds: str


def _row(
    recalibrator: Recalibrator | None,
    confidence: np.ndarray,
    correct: np.ndarray,
    probs: np.ndarray | None,
    labels: np.ndarray | None,
    options: ReportOptions,
) -> RecalibratedRow:
    """The row of one set of predictions, its intervals with ``options``."""
    bins = {"n_bins": options.n_bins, "strategy": options.binning, "seed": options.seed}
    ece = cm.bootstrap_ci(confidence, correct, metric="ece", **bins)
    brier = cm.bootstrap_ci(confidence, correct, metric=cm.brier_top_label, seed=options.seed)
    sce = None
    if probs is not None and labels is not None:
        sce = index_bootstrap_ci(
            lambda i: static_calibration_error(probs[i], labels[i], n_bins=options.n_bins),
            labels.size,
            seed=options.seed,
        )
    return RecalibratedRow(recalibrator, ece, sce, brier, confidence, correct)


def _temperature_interval(pool: Pool, seed: int) -> cm.ConfidenceInterval | None:
    """The fitted temperature with an interval from refitting it on resampled documents (drawn
    with ``seed``); None when it or a resample's is infinite (scores that say nothing of the
    gold option)."""
    scores, labels = option_scores(pool), pool.labels

    def temperature(items: np.ndarray) -> float:
        return fit_temperature(scores[items], labels[items]).temperature

    try:
        return index_bootstrap_ci(temperature, labels.size, seed=seed)
    except ValueError:  # an infinite temperature, fitted or resampled
        return None


def _options_gap(pool: Pool) -> str | None:
    """Why the option scores of the pool's records cannot be recalibrated when some of them
    lack what others carry (option probabilities, usable log-likelihoods: ``samples.PARTS``),
    else None."""
    for part, what in ((SUM.field, "option probabilities"), (LOGLIKELIHOODS, "log-likelihoods")):
        held = int(pool.holders(part).sum())
        if 0 < held < pool.n:
            return f"only {held} of {pool.n} records carry usable {what} (the notes say which)"
    return None


def recalibration(entry: Entry, options: ReportOptions) -> Recalibration | None:
    """The entry's recalibration with ``options`` (``pool_recalibration``), or None for records
    that are not one prediction each."""
    pool = entry.predictions
    return None if pool is None else pool_recalibration(pool, options)


def method_recalibrations(entry: Entry, options: ReportOptions) -> dict[str, Recalibration]:
    """Per confidence method of a generation entry's records, in their order, the recalibration
    of the answers it scored (``pool_recalibration`` of ``Pool.method``: the recalibrators of the
    top-label confidence); empty for other entries. A method that scored no answer has none."""
    pool = entry.pool
    if pool is None or pool.kind != GENERATION:
        return {}
    recalibrations = {}
    for method in generation_methods(pool):
        scored = pool.method(method)
        if scored is not None:
            recalibrations[method] = pool_recalibration(scored, options)
    return recalibrations


def pool_recalibration(pool: Pool, options: ReportOptions) -> Recalibration:
    """The recalibration of the one-prediction records of ``pool`` with ``options``. When some
    records lack what others carry (``_options_gap``), the recalibrators of option scores are
    not fitted, and when it is option probabilities the others use the top label alone (the
    pool is then top-label)."""
    gap = _options_gap(pool)
    multiclass = pool.kind == MULTICLASS
    labels = pool.labels if multiclass else None
    probs = pool.probs if multiclass else None
    rows = [_row(None, pool.confidence, pool.correct, probs, labels, options)]
    skipped: list[str] = []
    temperature, interval = None, None
    for recalibrator in RECALIBRATORS:
        if recalibrator.on_options and gap is not None:
            skipped.append(f"{recalibrator.name}: {gap}")
            continue
        if pool.kind not in recalibrator.kinds:
            continue
        recalibrated = None
        try:
            if recalibrator.on_options:
                recalibrated = out_of_fold_probs(pool)
                confidence, correct = recalibrated.max(axis=1), pool.correct
                temperature = fitted_temperature(pool)
                interval = _temperature_interval(pool, options.seed)
            else:
                confidence, correct = out_of_fold_top_label(pool, recalibrator)
        except ValueError as error:
            skipped.append(f"{recalibrator.name}: {error}")
            continue
        rows.append(_row(recalibrator, confidence, correct, recalibrated, labels, options))
    return Recalibration(rows, temperature, interval, skipped, cross_fit_folds(pool))
