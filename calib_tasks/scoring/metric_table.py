"""The calibration metrics a calib task reports: one row per metric, the single source of truth.

A row names the key the metric has in results and samples, whether higher is better, and how it
is computed from a task's pooled records for each kind of record it applies to
(``calib_tasks.scoring.records``). From the table come the aggregations registered in the harness
(``calib_<key>``), each task's ``metric_list`` and the keys its ``process_results`` returns
(every row that applies to the task's record kind), and README's metric list. Adding a metric is
adding a row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import calib_metrics as cm
from calib_metrics.classwise import classwise_ece, static_calibration_error
from calib_metrics.helm import helm_ece_equal_mass, helm_selective_accuracy
from calib_tasks.scoring.confidence_rules import RULES, SUM, Rule
from calib_tasks.scoring.recalibrators import RECALIBRATORS, Recalibrator, out_of_fold_top_label
from calib_tasks.scoring.records import (
    HISTOGRAM,
    MULTICLASS,
    TOP_LABEL,
    PooledRecords,
    RecordKind,
    share_record,
)
from calib_tasks.scoring.settings import DEFAULT_SETTINGS, TaskSettings

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
    #: The confidence rule (``calib_tasks.scoring.confidence_rules``) whose probabilities the metric
    #: reads; a task reports the row only when it computes that rule.
    rule: Rule = SUM
    #: The recalibrator (``calib_tasks.scoring.recalibrators``) the metric is computed after; a task
    #: reports the row only when it fits that recalibrator.
    recalibrator: Recalibrator | None = None

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


def _rule_top_label(fn: Callable[[Any, Any], float], rule: Rule) -> dict[RecordKind, Compute]:
    """``fn(confidence, correct)`` of ``rule``'s prediction on multiclass records."""
    return {MULTICLASS: lambda pool: fn(*pool.rule_top_label(rule))}


def _rule_options(fn: Callable[[Any, Any], float], rule: Rule) -> dict[RecordKind, Compute]:
    """``fn(probs, labels)`` on ``rule``'s option probabilities of multiclass records."""
    return {MULTICLASS: lambda pool: fn(pool.rule_probs(rule), pool.top_label.labels)}


def _per_rule() -> tuple[CalibMetric, ...]:
    """The metrics computed under every confidence rule; the ``sum`` rule's ``ece`` and
    ``brier`` are rows of their own (they apply to every record kind)."""
    rows = []
    for rule in RULES:
        if rule is not SUM:
            rows.append(
                CalibMetric(
                    rule.key("ece"),
                    False,
                    _rule_top_label(cm.ece, rule),
                    f"ECE under the {rule.name} rule",
                    rule,
                )
            )
        if rule.normalised:
            if rule is not SUM:
                rows.append(
                    CalibMetric(
                        rule.key("brier"),
                        False,
                        _rule_options(cm.brier_multiclass, rule),
                        f"multiclass Brier score under the {rule.name} rule",
                        rule,
                    )
                )
            rows += [
                CalibMetric(
                    rule.key("classwise_ece"),
                    False,
                    _rule_options(classwise_ece, rule),
                    f"ECE of every option's probability against whether it is the gold one "
                    f"({rule.name} rule; the GPT-4 report's convention)",
                    rule,
                ),
                CalibMetric(
                    rule.key("sce"),
                    False,
                    _rule_options(static_calibration_error, rule),
                    f"static calibration error: mean over options of each option's ECE "
                    f"({rule.name} rule; Nixon et al. 2019)",
                    rule,
                ),
            ]
        helm = _items if rule is SUM else lambda fn, rule=rule: _rule_top_label(fn, rule)
        rows += [
            CalibMetric(
                rule.key("helm_ece_10_bin"),
                False,
                helm(helm_ece_equal_mass),
                f"HELM's ece_10_bin: 10 equal-mass bins, midpoint edges ({rule.name} rule)",
                rule,
            ),
            CalibMetric(
                rule.key("helm_selective_acc_10"),
                True,
                helm(helm_selective_accuracy),
                f"HELM's selective_acc@10: accuracy of the 10% most confident ({rule.name} rule)",
                rule,
            ),
        ]
    return tuple(rows)


def _recalibrated() -> tuple[CalibMetric, ...]:
    """The ECE after each recalibrator, cross-fitted."""
    return tuple(
        CalibMetric(
            f"ece_recal_{r.name}",
            False,
            {kind: lambda pool, r=r: cm.ece(*out_of_fold_top_label(pool, r)) for kind in r.kinds},
            f"ECE after cross-fitted {r.name} recalibration ({r.description})",
            recalibrator=r,
        )
        for r in RECALIBRATORS
    )


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
    *_per_rule(),
    *_recalibrated(),
)


def metrics_for(
    kind: RecordKind, settings: TaskSettings = DEFAULT_SETTINGS
) -> tuple[CalibMetric, ...]:
    """The rows of ``METRICS`` that apply to records of ``kind`` under ``settings``, in table
    order."""
    return tuple(
        m
        for m in METRICS
        if kind in m.compute
        and m.rule in settings.rules
        and (m.recalibrator is None or m.recalibrator in settings.recalibrators)
    )


def metric_list(
    kind: RecordKind, settings: TaskSettings = DEFAULT_SETTINGS
) -> list[dict[str, Any]]:
    """The harness ``metric_list`` entries of a task whose records are of ``kind``, under
    ``settings``."""
    return [
        {
            "metric": metric.key,
            "aggregation": metric.aggregation,
            "higher_is_better": metric.higher_is_better,
        }
        for metric in metrics_for(kind, settings)
    ]


def metric_values(
    record: dict[str, Any], kind: RecordKind, settings: TaskSettings = DEFAULT_SETTINGS
) -> dict[str, Any]:
    """A document's values of every metric of ``kind`` under ``settings``: ``record`` under
    ``RECORD_KEY`` and a ``SharedRecord`` reference to it under every other key (see
    ``calib_tasks.scoring.records``)."""
    return share_record(record, [metric.key for metric in metrics_for(kind, settings)])
