"""The calibration aggregations of ``calib_tasks.scoring.metric_table``, registered in lm-eval's
registry.

Each row of the table is registered as ``calib_<key>`` (``aggregation: calib_ece``); the
aggregation receives the list of the task's per-sample records (``calib_tasks.scoring.records``) and
returns a plain float computed on the pooled samples with the defaults of ``calib_metrics``.

How the harness calls them, which the pooling relies on (``lm_eval/evaluator_utils.py``, 0.4.13):
every metric key of a task is aggregated on its own list of that task's values, one task after
another, and a calib task puts the same record objects under every key (``share_record``). So
a task's records are pooled once (``pooled``), the pool is kept until records of another task
arrive, and the ECE bootstrap serves both interval ends. Token tasks resample whole documents.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import lm_eval.api.metrics  # noqa: F401  (fills the registry first; see get_aggregation)
from lm_eval.api.registry import register_aggregation

from calib_tasks.scoring.metric_table import DEFAULT_OPTIONS, METRICS, CalibMetric
from calib_tasks.scoring.records import (
    GENERATION,
    HISTOGRAM,
    MULTICLASS,
    TOP_LABEL,
    Records,
    pooled,
)

Aggregation = Callable[..., float | None]
_KIND_TEXT = {
    TOP_LABEL: "top-label records",
    MULTICLASS: "multiclass records",
    HISTOGRAM: "token histograms",
    GENERATION: "generation records",
}


def aggregation_of(metric: CalibMetric) -> Aggregation:
    """The harness aggregation of one table row: ``f(records, task="") -> float``, or None when
    the row has nothing to measure (a confidence method without any confidence: its keys are
    null in the results); a kind the row does not apply to, and a NaN or infinite value, are
    errors."""

    def aggregate(records: Records, task: str = "") -> float | None:
        pool = pooled(records, task)
        compute = metric.compute.get(pool.kind)
        if compute is None:
            raise ValueError(
                f"{metric.key} is not computable from {_KIND_TEXT[pool.kind]}; it applies to "
                f"{', '.join(_KIND_TEXT[kind] for kind in metric.compute)}"
            )
        value = compute(pool, DEFAULT_OPTIONS)
        if value is None:  # nothing to measure (logged by the metric, with its reason)
            return None
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"aggregation {metric.aggregation} produced {value}; refusing it")
        return value

    aggregate.__name__ = aggregate.__qualname__ = metric.aggregation
    aggregate.__doc__ = f"Pooled {metric.key} of a task's calib records: {metric.description}."
    return aggregate


def register(metric: CalibMetric) -> Aggregation:
    """Register ``metric``'s aggregation in the harness under ``metric.aggregation``.

    The function is named ``calib_tasks.harness.aggregations:<that name>``, the value of the
    package's
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
