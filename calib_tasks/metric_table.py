"""The calibration metrics a calib task reports: one row per metric, the single source of truth.

A row names the key the metric has in results and samples, whether higher is better, and how it
is computed from a task's pooled records for each kind of record it applies to
(``calib_tasks.records``). From the table come the aggregations registered in the harness
(``calib_<key>``), each task's ``metric_list`` and the keys its ``process_results`` returns
(every row that applies to the task's record kind), and README's metric list. Adding a metric is
adding a row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import calib_metrics as cm
from calib_tasks.records import (
    HISTOGRAM,
    MULTICLASS,
    TOP_LABEL,
    PooledRecords,
    RecordKind,
    share_record,
)

Compute = Callable[[PooledRecords], float]

#: Prefix of this package's names in the harness's process-wide aggregation registry, where a
#: plain name (``ece``) could already be taken by the harness or another plugin.
AGGREGATION_PREFIX = "calib_"


@dataclass(frozen=True)
class CalibMetric:
    """One calibration metric: ``key`` in results and samples, and per record kind the function
    of a task's ``PooledRecords`` that computes it (kinds without an entry do not report it)."""

    key: str
    higher_is_better: bool
    compute: Mapping[RecordKind, Compute]
    description: str

    @property
    def aggregation(self) -> str:
        """The metric's name in the harness's aggregation registry."""
        return AGGREGATION_PREFIX + self.key


def _items(fn: Callable[[Any, Any], float]) -> dict[RecordKind, Compute]:
    """``fn(confidence, correct)`` on the pooled predictions of top-label or multiclass tasks."""

    def compute(pool: PooledRecords) -> float:
        return fn(pool.top_label.confidence, pool.top_label.correct)

    return {TOP_LABEL: compute, MULTICLASS: compute}


def _options(fn: Callable[[Any, Any], float]) -> dict[RecordKind, Compute]:
    """``fn(probs, labels)`` on the pooled option probabilities of multiclass tasks."""
    return {MULTICLASS: lambda pool: fn(pool.top_label.probs, pool.top_label.labels)}


def _tokens(key: str) -> dict[RecordKind, Compute]:
    """``calib_metrics.histogram_metrics()[key]`` of a token task's merged document histograms."""
    return {HISTOGRAM: lambda pool: pool.histogram_metrics[key]}


def _every_kind(compute: Compute) -> dict[RecordKind, Compute]:
    return {TOP_LABEL: compute, MULTICLASS: compute, HISTOGRAM: compute}


METRICS: tuple[CalibMetric, ...] = (
    CalibMetric(
        "acc", True, _tokens("acc"), "accuracy of the pooled token predictions (token tasks)"
    ),
    CalibMetric(
        "ece",
        False,
        {**_items(cm.ece), **_tokens("ece")},
        f"expected calibration error, {cm.DEFAULT_N_BINS} equal-width bins",
    ),
    CalibMetric(
        "ece_ci_low",
        False,
        _every_kind(lambda pool: pool.ece_interval.low),
        f"lower end of the ECE's {cm.DEFAULT_LEVEL:.0%} bootstrap interval "
        f"({cm.DEFAULT_N_RESAMPLES} resamples, seed {cm.DEFAULT_SEED}; documents for token tasks)",
    ),
    CalibMetric(
        "ece_ci_high",
        False,
        _every_kind(lambda pool: pool.ece_interval.high),
        "upper end of that interval",
    ),
    CalibMetric(
        "mce",
        False,
        {**_items(cm.mce), **_tokens("mce")},
        "maximum calibration error over the occupied bins",
    ),
    CalibMetric(
        "brier",
        False,
        {
            TOP_LABEL: _items(cm.brier_top_label)[TOP_LABEL],
            **_options(cm.brier_multiclass),
            **_tokens("brier_top_label"),
        },
        "Brier score: over all options for multiple choice, of the top label otherwise",
    ),
    CalibMetric(
        "nll",
        False,
        _options(cm.nll),
        "negative log-likelihood of the gold option (multiple choice)",
    ),
    CalibMetric(
        "ece_norm",
        False,
        {MULTICLASS: lambda pool: cm.ece(*pool.norm_top_label)},
        "ECE under the length-normalised rule (softmax of log-likelihood / option length, the "
        "rule of acc_norm)",
    ),
    CalibMetric(
        "brier_norm",
        False,
        {MULTICLASS: lambda pool: cm.brier_multiclass(pool.norm_probs, pool.top_label.labels)},
        "multiclass Brier score under the length-normalised rule",
    ),
    CalibMetric(
        "auroc",
        True,
        _items(cm.auroc),
        "AUROC of confidence separating right from wrong predictions",
    ),
    CalibMetric(
        "uninformative_scores",
        False,
        _every_kind(lambda pool: float(pool.uninformative_reason is not None)),
        "1 when the scores carry no information (all confidences equal, or every option tied): "
        "the calibration numbers are then no measurement",
    ),
)


def metrics_for(kind: RecordKind) -> tuple[CalibMetric, ...]:
    """The rows of ``METRICS`` that apply to records of ``kind``, in table order."""
    return tuple(metric for metric in METRICS if kind in metric.compute)


def metric_list(kind: RecordKind) -> list[dict[str, Any]]:
    """The harness ``metric_list`` entries of a task whose records are of ``kind``."""
    return [
        {
            "metric": metric.key,
            "aggregation": metric.aggregation,
            "higher_is_better": metric.higher_is_better,
        }
        for metric in metrics_for(kind)
    ]


def metric_values(record: dict[str, Any], kind: RecordKind) -> dict[str, Any]:
    """A document's values of every metric of ``kind``: ``record`` under ``RECORD_KEY`` and a
    ``SharedRecord`` reference to it under every other key (see ``calib_tasks.records``)."""
    return share_record(record, [metric.key for metric in metrics_for(kind)])
