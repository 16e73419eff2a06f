"""Calibration aggregations registered in lm-eval's aggregation registry.

A task YAML names them in ``metric_list`` (``aggregation: ece``). Each receives the list of the
task's per-sample records (``calib_tasks.records``) and returns a plain float, computed on the
pooled samples with the defaults of ``calib_metrics`` (10 equal-width bins, 1,000 bootstrap
resamples, seed 0).

The harness bootstraps a stderr only for its own hard-coded aggregations, so the 95% bootstrap
interval of ECE is reported as two more metrics, ``ece_ci_low`` and ``ece_ci_high``. Token-level
tasks resample whole documents, not tokens.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import lm_eval.api.metrics  # noqa: F401  (fills the registry first; see get_aggregation)
from lm_eval.api.registry import register_aggregation

import calib_metrics as cm
from calib_tasks.records import (
    PooledTopLabel,
    is_histogram_list,
    pool_histograms,
    pool_top_label,
    unwrap_records,
)

Records = Sequence[dict[str, Any]]
TopLabelFn = Callable[[PooledTopLabel], float]


def _multiclass(fn: Callable[[Any, Any], float], name: str) -> TopLabelFn:
    def compute(pooled: PooledTopLabel) -> float:
        if pooled.probs is None or pooled.labels is None:
            raise ValueError(f"{name} needs records with 'probs' and 'label'")
        return fn(pooled.probs, pooled.labels)

    return compute


# name -> (from pooled top-label arrays, key of histogram_metrics or None if not exact there)
_METRICS: dict[str, tuple[TopLabelFn, str | None]] = {
    "pooled_acc": (lambda p: float(p.correct.mean()), "acc"),
    "mean_confidence": (lambda p: float(p.confidence.mean()), "mean_confidence"),
    "ece": (lambda p: cm.ece(p.confidence, p.correct), "ece"),
    "mce": (lambda p: cm.mce(p.confidence, p.correct), "mce"),
    "rms_ce": (
        lambda p: cm.rms_calibration_error(p.confidence, p.correct),
        "rms_calibration_error",
    ),
    "ece_one_bin": (lambda p: cm.ece_one_bin(p.confidence, p.correct), "ece_one_bin"),
    "brier_top_label": (lambda p: cm.brier_top_label(p.confidence, p.correct), "brier_top_label"),
    "debiased_l2_ce": (lambda p: cm.debiased_l2_calibration_error(p.confidence, p.correct), None),
    "smooth_ece": (lambda p: cm.smooth_ece(p.confidence, p.correct), None),
    "auroc": (lambda p: cm.auroc(p.confidence, p.correct), None),
    "aurc": (lambda p: cm.aurc(p.confidence, p.correct), None),
    "brier_multiclass": (_multiclass(cm.brier_multiclass, "brier_multiclass"), None),
    "nll": (_multiclass(cm.nll, "nll"), None),
}


def _finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"aggregation {name} produced {value}; refusing to report it")
    return value


class PooledRecords:
    """A task's records pooled once for all of its aggregations.

    The harness calls each aggregation of a task on its own list of values, but every calib
    metric key holds the same record objects (``calib_tasks.records.metric_values``), so the
    arrays, the merged histogram and the ECE bootstrap interval are computed on first use and
    shared by the task's other aggregations.
    """

    def __init__(self, records: Records) -> None:
        self.records = unwrap_records(records)
        self.is_histogram = is_histogram_list(self.records)

    def holds(self, records: list[Any]) -> bool:
        """Whether ``records`` (unwrapped) are exactly this pool's record objects, in order."""
        return len(records) == len(self.records) and all(
            a is b for a, b in zip(records, self.records, strict=True)
        )

    @functools.cached_property
    def top_label(self) -> PooledTopLabel:
        """The top-label arrays (see ``pool_top_label``)."""
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
        """95% bootstrap interval of the pooled ECE: documents resampled for token histograms,
        items otherwise (seeded, so the same records give the same interval)."""
        if self.is_histogram:
            return cm.histogram_bootstrap_ci(self.histograms)["ece"]
        return cm.binned_bootstrap_ci(self.top_label.confidence, self.top_label.correct)["ece"]


_last_pool: PooledRecords | None = None  # the harness aggregates one task at a time


def pooled(records: Records) -> PooledRecords:
    """The pool of ``records``: the previous call's when it holds the same record objects."""
    global _last_pool
    if _last_pool is None or not _last_pool.holds(unwrap_records(records)):
        _last_pool = PooledRecords(records)
    return _last_pool


def _make_metric(name: str, top_label: TopLabelFn, histogram_key: str | None):
    def aggregate(records: Records) -> float:
        pool = pooled(records)
        if pool.is_histogram:
            if histogram_key is None:
                raise ValueError(
                    f"{name} is not computable from token histograms; "
                    "use it on a task with per-prediction records"
                )
            return _finite(name, pool.histogram_metrics[histogram_key])
        return _finite(name, top_label(pool.top_label))

    aggregate.__name__ = f"calib_{name}"
    aggregate.__doc__ = f"Pooled {name} of a task's calib records (see calib_metrics)."
    return aggregate


def _ece_ci_low(records: Records) -> float:
    return _finite("ece_ci_low", pooled(records).ece_interval.low)


def _ece_ci_high(records: Records) -> float:
    return _finite("ece_ci_high", pooled(records).ece_interval.high)


AGGREGATIONS: dict[str, Callable[[Records], float]] = {
    **{name: _make_metric(name, *spec) for name, spec in _METRICS.items()},
    "ece_ci_low": _ece_ci_low,
    "ece_ci_high": _ece_ci_high,
}

for _name, _fn in AGGREGATIONS.items():
    register_aggregation(_name)(_fn)
