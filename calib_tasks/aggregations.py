"""The calibration aggregations of ``calib_tasks.metric_table``, registered in lm-eval's registry.

Each row of the table is registered as ``calib_<key>`` (``aggregation: calib_ece``); the
aggregation receives the list of the task's per-sample records (``calib_tasks.records``) and
returns a plain float computed on the pooled samples with the defaults of ``calib_metrics``.

How the harness calls them, which the pooling relies on (``lm_eval/evaluator_utils.py``, 0.4.13):
every metric key of a task is aggregated on its own list of that task's values, one task after
another, and a calib task puts the same record objects under every key (``share_record``). So
a task's records are pooled once (``pooled``), the pool is kept until records of another task
arrive, and the ECE bootstrap serves both interval ends. Token tasks resample whole documents.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import lm_eval.api.metrics  # noqa: F401  (fills the registry first; see get_aggregation)
from lm_eval.api.registry import register_aggregation

import calib_metrics as cm
from calib_tasks.metric_table import METRICS, CalibMetric
from calib_tasks.records import (
    HISTOGRAM,
    MULTICLASS,
    TOP_LABEL,
    PooledTopLabel,
    pool_histograms,
    pool_top_label,
    records_kind,
    unwrap_records,
)

Records = Sequence[dict[str, Any]]
Aggregation = Callable[..., float]
_KIND_TEXT = {
    TOP_LABEL: "top-label records",
    MULTICLASS: "multiclass records",
    HISTOGRAM: "token histograms",
}

eval_logger = logging.getLogger(__name__)


class PooledRecords:
    """A task's records pooled once for all of its aggregations (see the module docstring)."""

    def __init__(self, records: Records, task: str = "") -> None:
        self.records = unwrap_records(records)
        self.kind = records_kind(self.records)
        self.task = task

    def holds(self, records: list[Any]) -> bool:
        """Whether ``records`` (unwrapped) are exactly this pool's record objects, in order."""
        return len(records) == len(self.records) and all(
            a is b for a, b in zip(records, self.records, strict=True)
        )

    @functools.cached_property
    def top_label(self) -> PooledTopLabel:
        """The top-label (and multiclass) arrays (see ``pool_top_label``)."""
        return pool_top_label(self.records)

    @functools.cached_property
    def histograms(self) -> list[cm.ConfidenceHistogram]:
        """One histogram per document (see ``pool_histograms``)."""
        return pool_histograms(self.records)

    @functools.cached_property
    def histogram_metrics(self) -> dict[str, float]:
        """``calib_metrics.histogram_metrics`` of the merged document histograms."""
        return cm.histogram_metrics(cm.ConfidenceHistogram.merge(self.histograms))

    @functools.cached_property
    def ece_interval(self) -> cm.ConfidenceInterval:
        """95% bootstrap interval of the pooled ECE: documents resampled for token histograms
        (in their canonical order, so however a data-parallel run ordered them), items otherwise
        (seeded, so the same records give the same interval)."""
        if self.kind == HISTOGRAM:
            return cm.histogram_bootstrap_ci(cm.canonical_order(self.histograms))["ece"]
        return cm.binned_bootstrap_ci(self.top_label.confidence, self.top_label.correct)["ece"]

    @functools.cached_property
    def uninformative_reason(self) -> str | None:
        """Why the pooled scores carry no information (``calib_metrics.uninformative_reason``:
        all confidences equal, or every document's options tied), or None; logged as a warning
        naming the task, once."""
        if self.kind == HISTOGRAM:
            merged = cm.ConfidenceHistogram.merge(self.histograms)
            reason = cm.histogram_uninformative_reason(merged)
        else:
            pooled = self.top_label
            reason = cm.uninformative_reason(pooled.confidence, option_probs=pooled.probs)
        if reason is not None:
            eval_logger.warning(
                "%s: THE SCORES CARRY NO INFORMATION (%s): the backend returned no usable "
                "log-probabilities, so the task's ECE and other calibration numbers are not "
                "measurements; its results mark it with uninformative_scores = 1.",
                self.task or "a calib task",
                reason,
            )
        return reason


_last_pool: PooledRecords | None = None  # the harness aggregates one task at a time


def pooled(records: Records, task: str = "") -> PooledRecords:
    """The pool of ``records``: the previous call's when it holds the same record objects."""
    global _last_pool
    if _last_pool is None or not _last_pool.holds(unwrap_records(records)):
        _last_pool = PooledRecords(records, task)
    return _last_pool


def aggregation_of(metric: CalibMetric) -> Aggregation:
    """The harness aggregation of one table row: ``f(records, task="") -> float``; a kind the
    row does not apply to, and a NaN or infinite value, are errors."""

    def aggregate(records: Records, task: str = "") -> float:
        pool = pooled(records, task)
        compute = metric.compute.get(pool.kind)
        if compute is None:
            raise ValueError(
                f"{metric.key} is not computable from {_KIND_TEXT[pool.kind]}; it applies to "
                f"{', '.join(_KIND_TEXT[kind] for kind in metric.compute)}"
            )
        value = float(compute(pool))
        if not math.isfinite(value):
            raise ValueError(f"aggregation {metric.aggregation} produced {value}; refusing it")
        return value

    aggregate.__name__ = aggregate.__qualname__ = metric.aggregation
    aggregate.__doc__ = f"Pooled {metric.key} of a task's calib records: {metric.description}."
    return aggregate


def register(metric: CalibMetric) -> Aggregation:
    """Register ``metric``'s aggregation in the harness under ``metric.aggregation``.

    The function is named ``calib_tasks.aggregations:<that name>``, the value of the package's
    ``lm_eval.aggregations`` entry point, so that a harness that registered the entry point as a
    placeholder (lm-eval PR #4014) takes the function in its place."""
    aggregate = aggregation_of(metric)
    aggregate.calib_metric = metric.key  # type: ignore[attr-defined]
    return register_aggregation(metric.aggregation)(aggregate)


def is_calib_aggregation(fn: object) -> bool:
    """Whether ``fn`` is one of this package's registered aggregations."""
    return getattr(fn, "calib_metric", None) is not None


def for_task(task: str, aggregate: Aggregation) -> Callable[[Records], float]:
    """``aggregate`` (a calib aggregation) on the records of the task named ``task``: its
    warnings and errors name the task."""

    @functools.wraps(aggregate)
    def named(records: Records) -> float:
        try:
            return aggregate(records, task=task)
        except ValueError as error:
            raise ValueError(f"task {task!r}: {error}") from error

    return named


AGGREGATIONS: dict[str, Aggregation] = {metric.key: register(metric) for metric in METRICS}


def __getattr__(name: str) -> Aggregation:
    """``calib_<key>``: the aggregation of that table row (what the entry points name)."""
    for metric in METRICS:
        if metric.aggregation == name:
            return AGGREGATIONS[metric.key]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
