"""Recalibration of a task's pooled records, fitted where it is honest: never on the items it
scores.

Each recalibrator of ``calib_metrics.recalibration`` is fitted by K-fold cross-fitting
(``calib_metrics.recalibration.cross_fit``, its default folds and seed): every item's
recalibrated confidence comes from a map fitted on the other folds, folds grouped by the
records' ``subject`` (MMLU) or ``relation`` (facts) when every record has one (and there are
two or more), so that a map is never fitted on the subject it is applied to. The prediction is
unchanged (temperature keeps the argmax, the others remap the top-label confidence), so
accuracy is too.

* ``temperature``: ``softmax(log-likelihoods / T)`` over each document's options (multiple
  choice, every document with the same number of options);
* ``platt``, ``isotonic``, ``histogram``: Platt scaling, isotonic regression and histogram
  binning of the top-label confidence (multiple choice and one-prediction tasks).

A task fits the recalibrators named in its ``calib_recalibration`` setting (task YAML
``metadata`` or ``--metadata``; a list or a comma-separated string) and reports the ECE after
each (``ece_recal_<name>``); calib-report adds the fitted temperature with its interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from calib_metrics.recalibration import (
    HistogramBinning,
    IsotonicCalibration,
    PlattScaling,
    TemperatureScaling,
    cross_fit,
)
from calib_tasks.scoring.metadata import setting_names
from calib_tasks.scoring.records import (
    GENERATION,
    HISTOGRAM,
    LOGLIKELIHOODS,
    MULTICLASS,
    TOP_LABEL,
    Pool,
    RecordKind,
)

#: The task setting (a key of the task's ``metadata``) naming the recalibrators to fit.
RECALIBRATION_SETTING = "calib_recalibration"
#: Record fields that group items for cross-fitting, the first one every record has.
GROUP_FIELDS = ("subject", "relation")


@dataclass(frozen=True)
class Recalibrator:
    """A recalibration map fitted by ``fit(inputs, targets)`` (an object with ``apply``): of the
    option log-likelihoods against the gold index when ``on_options``, else of the top-label
    confidence against correctness; the record kinds it applies to."""

    name: str
    fit: Callable[[Any, Any], Any]
    on_options: bool
    kinds: tuple[RecordKind, ...]
    description: str


RECALIBRATORS: tuple[Recalibrator, ...] = (
    Recalibrator(
        "temperature",
        TemperatureScaling.fit,
        True,
        (MULTICLASS,),
        "one temperature dividing every option log-likelihood",
    ),
    Recalibrator(
        "platt",
        PlattScaling.fit,
        False,
        (MULTICLASS, TOP_LABEL, GENERATION),
        "Platt scaling of the confidence",
    ),
    Recalibrator(
        "isotonic",
        IsotonicCalibration.fit,
        False,
        (MULTICLASS, TOP_LABEL, GENERATION),
        "isotonic regression of correctness on the confidence",
    ),
    Recalibrator(
        "histogram",
        HistogramBinning.fit,
        False,
        (MULTICLASS, TOP_LABEL, GENERATION),
        "histogram binning: each bin's confidence replaced by its accuracy",
    ),
)
_BY_NAME = {r.name: r for r in RECALIBRATORS}


def recalibration_setting(
    metadata: Mapping[str, Any] | None, task: str, kind: RecordKind
) -> tuple[Recalibrator, ...]:
    """The recalibrators a task with records of ``kind`` fits, from its ``metadata``'s
    ``calib_recalibration`` (none when absent); an unknown name, or one that does not apply to
    the task's records, is an error naming it and the task."""
    chosen = []
    for name in setting_names(metadata, RECALIBRATION_SETTING, (), task):
        if name not in _BY_NAME:
            raise ValueError(
                f"{task}: unknown recalibrator {name!r} in {RECALIBRATION_SETTING}; the "
                f"recalibrators are {list(_BY_NAME)}"
            )
        recalibrator = _BY_NAME[name]
        if kind not in recalibrator.kinds:
            what = "token-level" if kind == HISTOGRAM else kind
            raise ValueError(
                f"{task}: recalibrator {name!r} does not apply to a {what} task (it needs "
                f"{' or '.join(recalibrator.kinds)} records)"
            )
        chosen.append(recalibrator)
    return tuple(r for r in RECALIBRATORS if r in chosen)


def cross_fit_groups(pool: Pool) -> np.ndarray | None:
    """The cross-fitting groups of the pool's records: the first field of ``GROUP_FIELDS`` that
    every record has, with at least two values; else None (items are dealt to folds one by
    one)."""
    for field in GROUP_FIELDS:
        values = pool.field_values(field)
        if values is not None:
            groups = np.array([str(value) for value in values])
            if np.unique(groups).size >= 2:
                return groups
    return None


def cross_fit_folds(pool: Pool) -> str:
    """How ``cross_fit_groups`` deals the pool's records to folds, in words: by whole subjects
    or relations (naming how many), or one item at a time, saying why (a single value of the
    group field, or no group field)."""
    groups = cross_fit_groups(pool)
    for field in GROUP_FIELDS:
        found = pool.field_values(field)
        if found is not None:
            values = {str(value) for value in found}
            if groups is not None:
                return f"folds of whole {field}s ({len(values)} {field}s)"
            return (
                f"folds of single items: every record has the same {field} "
                f"({next(iter(values))!r}), so there is no other {field} to fit on"
            )
    return f"folds of single items: the records have no {' or '.join(GROUP_FIELDS)}"


def option_scores(pool: Pool) -> np.ndarray:
    """The (n, k) option log-likelihoods of a multiple-choice pool; ``ValueError`` naming the
    task when a record has none (or unusable ones) or documents differ in their number of
    options."""
    if not pool.holders(LOGLIKELIHOODS).any():
        raise ValueError(f"{pool.task}: the records carry no option log-likelihoods")
    scores = pool.part(LOGLIKELIHOODS)
    counts = np.unique(pool.option_counts)
    if counts.size != 1:
        raise ValueError(
            f"{pool.task}: temperature scaling needs the same number of options in every "
            f"document, found {counts.tolist()}"
        )
    return scores


def fit_temperature(scores: np.ndarray, labels: np.ndarray) -> TemperatureScaling:
    """``TemperatureScaling.fit``; where no finite temperature is best (every option tied, or
    scores that say nothing of the gold option: the objective falls all the way to ``T = inf``),
    the limit ``T = inf``, whose probabilities are uniform over the options."""
    try:
        return TemperatureScaling.fit(scores, labels)
    except ValueError:  # the scores were checked (option_scores): only the infinite optimum
        return TemperatureScaling(math.inf)


def out_of_fold_probs(pool: Pool) -> np.ndarray:
    """Every document's option probabilities after cross-fitted temperature scaling."""
    groups = cross_fit_groups(pool)
    scores, labels = option_scores(pool), pool.labels
    return cross_fit(fit_temperature, scores, labels, groups=groups)


def out_of_fold_top_label(pool: Pool, recalibrator: Recalibrator) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) of the task's predictions after ``recalibrator``, cross-fitted."""
    correct = pool.correct
    if recalibrator.on_options:
        probs = out_of_fold_probs(pool)
        return probs[np.arange(len(probs)), probs.argmax(axis=1)], correct
    groups = cross_fit_groups(pool)
    confidence = cross_fit(recalibrator.fit, pool.confidence, correct, groups=groups)
    return np.clip(confidence, 0.0, 1.0), correct


def fitted_temperature(pool: Pool) -> float:
    """The temperature fitted on all of the task's documents (a description of the model's
    miscalibration: > 1 overconfident, < 1 underconfident; ``inf``: see ``fit_temperature``)."""
    return fit_temperature(option_scores(pool), pool.labels).temperature
