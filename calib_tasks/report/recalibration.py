"""Per task: calibration after each recalibrator, cross-fitted
(``calib_tasks.scoring.recalibrators``),
with bootstrap intervals, and the fitted temperature with its interval.

The intervals resample the items of the out-of-fold predictions (the maps stay as fitted, so the
refitting's own variance is not in them); the temperature's interval refits the temperature on
each resample of the documents. Both use calib_metrics' default level, resamples and seed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import calib_metrics as cm
from calib_tasks.report.entries import Entry
from calib_tasks.report.samples import LOGLIKELIHOODS
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
from calib_tasks.scoring.records import MULTICLASS, TOP_LABEL, PooledRecords

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


def _item_bootstrap(statistic: Callable[[np.ndarray], float], n: int) -> cm.ConfidenceInterval:
    """calib_metrics' bootstrap (its default resamples, level and seed) of ``statistic(items)``,
    ``items`` the positions of a resample's items: passed to ``bootstrap_ci`` encoded as the
    confidences ``(i + 0.5) / n``, which it resamples like any top-label items."""
    positions = (np.arange(n) + 0.5) / n
    return cm.bootstrap_ci(
        positions, np.zeros(n), metric=lambda c, _: statistic((c * n).astype(np.intp))
    )


def _row(
    recalibrator: Recalibrator | None,
    confidence: np.ndarray,
    correct: np.ndarray,
    probs: np.ndarray | None,
    labels: np.ndarray | None,
) -> RecalibratedRow:
    ece = cm.bootstrap_ci(confidence, correct, metric="ece")
    brier = cm.bootstrap_ci(confidence, correct, metric=cm.brier_top_label)
    sce = None
    if probs is not None and labels is not None:
        sce = _item_bootstrap(
            lambda i: cm.static_calibration_error(probs[i], labels[i]), labels.size
        )
    return RecalibratedRow(recalibrator, ece, sce, brier, confidence, correct)


def _temperature_interval(pool: PooledRecords) -> cm.ConfidenceInterval | None:
    """The fitted temperature with an interval from refitting it on resampled documents; None
    when it or a resample's is infinite (scores that say nothing of the gold option)."""
    scores, labels = option_scores(pool), pool.top_label.labels

    def temperature(items: np.ndarray) -> float:
        return fit_temperature(scores[items], labels[items]).temperature

    try:
        return _item_bootstrap(temperature, labels.size)
    except ValueError:  # an infinite temperature, fitted or resampled
        return None


def _options_gap(records: Sequence[Mapping[str, Any]]) -> str | None:
    """Why the option scores of ``records`` cannot be recalibrated when some of them lack what
    others carry (option probabilities, usable log-likelihoods: ``samples.PARTS``), else None."""
    for part, what in ((SUM.field, "option probabilities"), (LOGLIKELIHOODS, "log-likelihoods")):
        held = sum(part in r for r in records)
        if 0 < held < len(records):
            return (
                f"only {held} of {len(records)} records carry usable {what} (the notes say which)"
            )
    return None


def recalibration(entry: Entry) -> Recalibration | None:
    """The entry's recalibration, or None for records that are not one prediction each. When
    some records lack what others carry (``_options_gap``), the recalibrators of option scores
    are not fitted, and when it is option probabilities the others use the top label alone."""
    records = entry.records
    if not records or not all("confidence" in r and "correct" in r for r in records):
        return None
    gap = _options_gap(records)
    if not all(SUM.field in r for r in records):
        records = [{k: v for k, v in r.items() if k not in (SUM.field, "label")} for r in records]
    pool = PooledRecords(records, entry.task)
    multiclass = pool.kind == MULTICLASS
    labels = pool.top_label.labels if multiclass else None
    measured = pool.top_label
    rows = [_row(None, measured.confidence, measured.correct, measured.probs, labels)]
    skipped: list[str] = []
    temperature, interval = None, None
    for recalibrator in RECALIBRATORS:
        if recalibrator.on_options and gap is not None:
            skipped.append(f"{recalibrator.name}: {gap}")
            continue
        if pool.kind not in recalibrator.kinds:
            continue
        probs = None
        try:
            if recalibrator.on_options:
                probs = out_of_fold_probs(pool)
                confidence, correct = probs.max(axis=1), pool.top_label.correct
                temperature = fitted_temperature(pool)
                interval = _temperature_interval(pool)
            else:
                confidence, correct = out_of_fold_top_label(pool, recalibrator)
        except ValueError as error:
            skipped.append(f"{recalibrator.name}: {error}")
            continue
        rows.append(_row(recalibrator, confidence, correct, probs, labels))
    return Recalibration(rows, temperature, interval, skipped, cross_fit_folds(pool.records))
