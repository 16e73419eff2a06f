"""The calibration metrics a calib task reports: one row per metric, the single source of truth.

A row names the key the metric has in results and samples, whether higher is better, and how it
is computed from a pool of records (``calib_tasks.scoring.records.Pool``) for each kind of record
it applies to, with the binning and bootstrap seed of ``MetricOptions``. From the table come the
aggregations registered in the harness (``calib_<key>``, computed with ``DEFAULT_OPTIONS``),
each task's ``metric_list`` and the keys its ``process_results`` returns (every row that applies
to the task's record kind), calib-report's numbers (computed with the report's options) and
README's metric list. Adding a metric is adding a row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

import calib_metrics as cm
from calib_metrics.classwise import classwise_ece, static_calibration_error
from calib_metrics.helm import helm_ece_equal_mass, helm_selective_accuracy
from calib_tasks.scoring.confidence_methods import (
    ANSWER,
    METHODS,
    VERBALIZED,
    Method,
    method_named,
)
from calib_tasks.scoring.confidence_rules import RULES, SUM, Rule
from calib_tasks.scoring.recalibrators import RECALIBRATORS, Recalibrator, out_of_fold_top_label
from calib_tasks.scoring.records import (
    GENERATION,
    HISTOGRAM,
    MULTICLASS,
    TOP_LABEL,
    Answer,
    Pool,
    RecordKind,
    share_record,
)
from calib_tasks.scoring.settings import DEFAULT_SETTINGS, TaskSettings

#: Prefix of this package's names in the harness's process-wide aggregation registry, where a
#: plain name (``ece``) could already be taken by the harness or another plugin.
AGGREGATION_PREFIX = "calib_"
EQUAL_WIDTH = "equal_width"
EQUAL_MASS = "equal_mass"
eval_logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class MetricOptions:
    """How the binned metrics bin (``binning``: ``equal_width`` or ``equal_mass``, ``n_bins``)
    and the bootstrap draws (``seed``); by default calib_metrics' own, with which every task
    computes its results. A metric defined with fixed bins keeps them (HELM's 10 equal-mass
    bins), the static calibration error is equal-width by definition (it takes ``n_bins``
    only), and token histograms have equal-width bins only."""

    binning: str = cm.DEFAULT_STRATEGY
    n_bins: int = cm.DEFAULT_N_BINS
    seed: int = cm.DEFAULT_SEED


#: The options of the aggregations: calib_metrics' defaults.
DEFAULT_OPTIONS = MetricOptions()

#: A metric of a pool: a number, or None when the pool holds nothing it applies to (a confidence
#: method under which no generated answer has a confidence).
Compute = Callable[[Pool, MetricOptions], float | None]
#: A metric of two arrays (confidence and correctness, or option probabilities and labels).
ArrayMetric = Callable[[np.ndarray, np.ndarray, MetricOptions], float]


@dataclass(frozen=True, kw_only=True)
class CalibMetric:
    """One calibration metric: ``key`` in results and samples, and per record kind the function
    of a pool of records and the options that computes it (kinds without an entry do not report
    it)."""

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
    #: The confidence method (``calib_tasks.scoring.confidence_methods``) of a generative task
    #: whose confidences the metric reads; a task reports the row only when it computes it.
    method: Method | None = None

    @property
    def aggregation(self) -> str:
        """The metric's name in the harness's aggregation registry."""
        return AGGREGATION_PREFIX + self.key


def _binned(fn: Callable[..., float]) -> ArrayMetric:
    """``fn(a, b)`` with the options' bins (``n_bins``, ``strategy``)."""
    return lambda a, b, options: fn(a, b, n_bins=options.n_bins, strategy=options.binning)


def _fixed(fn: Callable[[Any, Any], float]) -> ArrayMetric:
    """``fn(a, b)``, whatever the options (no bins, or bins of its own)."""
    return lambda a, b, options: fn(a, b)


def _sce(probs: np.ndarray, labels: np.ndarray, options: MetricOptions) -> float:
    """The static calibration error with the options' number of (equal-width) bins."""
    return static_calibration_error(probs, labels, n_bins=options.n_bins)


def _item_compute(fn: ArrayMetric) -> Compute:
    """``fn(confidence, correct, options)`` on a pool of predictions."""
    return lambda pool, options: fn(pool.confidence, pool.correct, options)


def _items(fn: ArrayMetric) -> dict[RecordKind, Compute]:
    """``fn(confidence, correct, options)`` on the pooled predictions of top-label or
    multiclass records."""
    compute = _item_compute(fn)
    return {TOP_LABEL: compute, MULTICLASS: compute}


def _options(fn: ArrayMetric) -> dict[RecordKind, Compute]:
    """``fn(probs, labels, options)`` on the pooled option probabilities of multiclass
    records."""
    return {MULTICLASS: lambda pool, options: fn(pool.probs, pool.labels, options)}


def _tokens(key: str) -> dict[RecordKind, Compute]:
    """``calib_metrics.histogram_metrics()[key]`` of a token pool's merged document histograms,
    with the options' number of bins (equal-width: ``ValueError`` for other binning)."""

    def compute(pool: Pool, options: MetricOptions) -> float:
        if options.binning != EQUAL_WIDTH:
            raise ValueError(f"token histograms have equal-width bins only, not {options.binning}")
        return pool.histogram_metrics(options.n_bins)[key]

    return {HISTOGRAM: compute}


def _every_kind(compute: Compute) -> dict[RecordKind, Compute]:
    return {TOP_LABEL: compute, MULTICLASS: compute, HISTOGRAM: compute}


def _rule_top_label(fn: ArrayMetric, rule: Rule) -> dict[RecordKind, Compute]:
    """``fn(confidence, correct, options)`` of ``rule``'s prediction on multiclass records."""
    return {MULTICLASS: lambda pool, options: fn(*pool.rule_top_label(rule), options)}


def _rule_options(fn: ArrayMetric, rule: Rule) -> dict[RecordKind, Compute]:
    """``fn(probs, labels, options)`` on ``rule``'s option probabilities of multiclass
    records."""
    return {MULTICLASS: lambda pool, options: fn(pool.part(rule.field), pool.labels, options)}


def _ece_interval(pool: Pool, options: MetricOptions) -> cm.ConfidenceInterval:
    """The pool's ECE bootstrap interval with the options' bins and seed."""
    return pool.ece_interval(n_bins=options.n_bins, strategy=options.binning, seed=options.seed)


def _uninformative(pool: Pool, options: MetricOptions) -> float:
    """1.0 when the pool's scores carry no information (logged as a warning naming the task,
    the one time the harness aggregates the row), else 0.0."""
    reason = pool.uninformative_reason
    if reason is not None:
        eval_logger.warning(
            "%s: THE SCORES CARRY NO INFORMATION (%s): the backend returned no usable "
            "log-probabilities, so the task's ECE and other calibration numbers are not "
            "measurements; its results mark it with uninformative_scores = 1.",
            pool.task or "a calib task",
            reason,
        )
    return float(reason is not None)


def _uninformative_method(method: Method) -> Compute:
    """``_uninformative`` of one confidence method's pool, its warning naming the method."""

    def compute(pool: Pool, options: MetricOptions) -> float:
        reason = pool.uninformative_reason
        if reason is not None:
            eval_logger.warning(
                "%s: THE %s CONFIDENCES CARRY NO INFORMATION (%s), so its ECE and other "
                "calibration numbers are not measurements; its results mark it with %s = 1.",
                pool.task or "a calib task",
                method.name.upper(),
                reason,
                method.key("uninformative_scores"),
            )
        return float(reason is not None)

    return compute


def _scored(pool: Pool, method: Method) -> Pool | None:
    """The pool of the answers with a confidence under ``method``; None (logged as a warning
    naming task and method, whose count row says how many) when no answer has one."""
    scored = pool.method(method.name)
    if scored is None and method.name not in pool.warned:
        pool.warned.add(method.name)
        eval_logger.warning(
            "%s: no generated answer has a %s confidence (%d of %d without one): its metrics "
            "are null, no measurement",
            pool.task or "a calib task",
            method.name,
            pool.n,
            pool.n,
        )
    return scored


def _method(compute: Compute, method: Method) -> dict[RecordKind, Compute]:
    """``compute`` on the top-label pool of ``method``'s confidences of generation records (None
    when no answer has one, see ``_scored``)."""

    def of_method(pool: Pool, options: MetricOptions) -> float | None:
        scored = _scored(pool, method)
        return None if scored is None else compute(scored, options)

    return {GENERATION: of_method}


def _first_method_ece(pool: Pool, options: MetricOptions) -> float | None:
    """The ECE under the first method of the records (the task's first ``calib_confidence``),
    the generative task's plain ``ece``."""
    first = next(iter(cast(Answer, pool.records[0]).confidences))
    return _method(_item_compute(_binned(cm.ece)), method_named(first))[GENERATION](pool, options)


def _per_method() -> tuple[CalibMetric, ...]:
    """The metrics of generated answers under every confidence method, and the counts of the
    answers two methods could not score."""
    rows = []
    for method in METHODS:
        for key, higher, compute, what in (
            ("ece", False, _item_compute(_binned(cm.ece)), "ECE"),
            (
                "ece_ci_low",
                False,
                lambda p, o: _ece_interval(p, o).low,
                "lower end of its ECE's bootstrap interval",
            ),
            (
                "ece_ci_high",
                False,
                lambda p, o: _ece_interval(p, o).high,
                "upper end of that interval",
            ),
            ("brier", False, _item_compute(_fixed(cm.brier_top_label)), "Brier score"),
            ("auroc", True, _item_compute(_fixed(cm.auroc)), "AUROC (right vs wrong)"),
            ("aurc", False, _item_compute(_fixed(cm.aurc)), "area under the risk-coverage curve"),
            (
                "helm_ece_10_bin",
                False,
                _item_compute(_fixed(helm_ece_equal_mass)),
                "HELM's ece_10_bin",
            ),
            (
                "helm_selective_acc_10",
                True,
                _item_compute(_fixed(helm_selective_accuracy)),
                "HELM's selective_acc@10",
            ),
            (
                "uninformative_scores",
                False,
                _uninformative_method(method),
                "1 when its confidences carry no information",
            ),
        ):
            rows.append(
                CalibMetric(
                    key=method.key(key),
                    higher_is_better=higher,
                    compute=_method(compute, method),
                    description=f"{what} under the {method.name} confidence method",
                    method=method,
                )
            )
        for r in RECALIBRATORS:
            if GENERATION in r.kinds:
                rows.append(
                    CalibMetric(
                        key=method.key(f"ece_recal_{r.name}"),
                        higher_is_better=False,
                        compute=_method(
                            lambda p, o, r=r: _binned(cm.ece)(*out_of_fold_top_label(p, r), o),
                            method,
                        ),
                        description=f"ECE after cross-fitted {r.name} recalibration "
                        f"({method.name} method)",
                        method=method,
                        recalibrator=r,
                    )
                )
    for method, key, what in (
        (ANSWER, "answer_not_found", "answers whose filtered answer is no span of the text"),
        (VERBALIZED, "verbalized_unparsed", "verbalized replies that hold no confidence"),
    ):
        rows.append(
            CalibMetric(
                key=key,
                higher_is_better=False,
                compute={GENERATION: lambda p, o, m=method: float(p.without_confidence(m.name))},
                description=f"how many {what} (left out of that method's metrics)",
                method=method,
            )
        )
    return tuple(rows)


def _per_rule() -> tuple[CalibMetric, ...]:
    """The metrics computed under every confidence rule; the ``sum`` rule's ``ece`` and
    ``brier`` are rows of their own (they apply to every record kind)."""
    rows = []
    for rule in RULES:
        if rule is not SUM:
            rows.append(
                CalibMetric(
                    key=rule.key("ece"),
                    higher_is_better=False,
                    compute=_rule_top_label(_binned(cm.ece), rule),
                    description=f"ECE under the {rule.name} rule",
                    rule=rule,
                )
            )
        if rule.normalised:
            if rule is not SUM:
                rows.append(
                    CalibMetric(
                        key=rule.key("brier"),
                        higher_is_better=False,
                        compute=_rule_options(_fixed(cm.brier_multiclass), rule),
                        description=f"multiclass Brier score under the {rule.name} rule",
                        rule=rule,
                    )
                )
            rows += [
                CalibMetric(
                    key=rule.key("classwise_ece"),
                    higher_is_better=False,
                    compute=_rule_options(_binned(classwise_ece), rule),
                    description="ECE of every option's probability against whether it is the "
                    f"gold one ({rule.name} rule; the GPT-4 report's convention)",
                    rule=rule,
                ),
                CalibMetric(
                    key=rule.key("sce"),
                    higher_is_better=False,
                    compute=_rule_options(_sce, rule),
                    description="static calibration error: mean over options of each option's "
                    f"ECE ({rule.name} rule; Nixon et al. 2019)",
                    rule=rule,
                ),
            ]
        helm = _items if rule is SUM else lambda fn, rule=rule: _rule_top_label(fn, rule)
        rows += [
            CalibMetric(
                key=rule.key("helm_ece_10_bin"),
                higher_is_better=False,
                compute=helm(_fixed(helm_ece_equal_mass)),
                description=f"HELM's ece_10_bin: 10 equal-mass bins, midpoint edges "
                f"({rule.name} rule)",
                rule=rule,
            ),
            CalibMetric(
                key=rule.key("helm_selective_acc_10"),
                higher_is_better=True,
                compute=helm(_fixed(helm_selective_accuracy)),
                description=f"HELM's selective_acc@10: accuracy of the 10% most confident "
                f"({rule.name} rule)",
                rule=rule,
            ),
        ]
    return tuple(rows)


def _recalibrated() -> tuple[CalibMetric, ...]:
    """The ECE after each recalibrator, cross-fitted."""
    return tuple(
        CalibMetric(
            key=f"ece_recal_{r.name}",
            higher_is_better=False,
            compute={
                kind: lambda pool, options, r=r: _binned(cm.ece)(
                    *out_of_fold_top_label(pool, r), options
                )
                for kind in r.kinds
                if kind != GENERATION  # per method (_per_method)
            },
            description=f"ECE after cross-fitted {r.name} recalibration ({r.description})",
            recalibrator=r,
        )
        for r in RECALIBRATORS
    )


METRICS: tuple[CalibMetric, ...] = (
    CalibMetric(
        key="acc",
        higher_is_better=True,
        compute={**_tokens("acc"), GENERATION: lambda pool, options: float(pool.correct.mean())},
        description="accuracy of the pooled token predictions (token tasks), of the generated "
        "answers by the task's calib_correct (generative tasks)",
    ),
    CalibMetric(
        key="ece",
        higher_is_better=False,
        compute={
            **_items(_binned(cm.ece)),
            **_tokens("ece"),
            GENERATION: _first_method_ece,
        },
        description=f"expected calibration error, {cm.DEFAULT_N_BINS} equal-width bins "
        "(generative tasks: under their first confidence method)",
    ),
    CalibMetric(
        key="ece_ci_low",
        higher_is_better=False,
        compute=_every_kind(lambda pool, options: _ece_interval(pool, options).low),
        description=f"lower end of the ECE's {cm.DEFAULT_LEVEL:.0%} bootstrap interval "
        f"({cm.DEFAULT_N_RESAMPLES} resamples, seed {cm.DEFAULT_SEED}; documents for token tasks)",
    ),
    CalibMetric(
        key="ece_ci_high",
        higher_is_better=False,
        compute=_every_kind(lambda pool, options: _ece_interval(pool, options).high),
        description="upper end of that interval",
    ),
    CalibMetric(
        key="mce",
        higher_is_better=False,
        compute={**_items(_binned(cm.mce)), **_tokens("mce")},
        description="maximum calibration error over the occupied bins",
    ),
    CalibMetric(
        key="brier",
        higher_is_better=False,
        compute={
            TOP_LABEL: _items(_fixed(cm.brier_top_label))[TOP_LABEL],
            **_options(_fixed(cm.brier_multiclass)),
            **_tokens("brier_top_label"),
        },
        description="Brier score: over all options for multiple choice, of the top label otherwise",
    ),
    CalibMetric(
        key="nll",
        higher_is_better=False,
        compute=_options(_fixed(cm.nll)),
        description="negative log-likelihood of the gold option (multiple choice)",
    ),
    CalibMetric(
        key="auroc",
        higher_is_better=True,
        compute=_items(_fixed(cm.auroc)),
        description="AUROC of confidence separating right from wrong predictions",
    ),
    CalibMetric(
        key="uninformative_scores",
        higher_is_better=False,
        compute=_every_kind(_uninformative),
        description="1 when the scores carry no information (all confidences equal, or every "
        "option tied): the calibration numbers are then no measurement",
    ),
    *_per_rule(),
    *_recalibrated(),
    *_per_method(),
)
_BY_KEY = {metric.key: metric for metric in METRICS}


def metric_named(key: str) -> CalibMetric:
    """The row of ``METRICS`` whose key is ``key``."""
    return _BY_KEY[key]


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
        and (m.method is None or m.method in settings.methods)
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
