"""Per generative task: one table of confidence methods x metrics, and whether the runs' order
flips with the method.

A generation entry's records (``calib_tasks.scoring.records``, kind ``generation``) hold one
answer per document, right or wrong, and its confidence under every method the task computed
(``calib_tasks.scoring.confidence_methods``). Each method is scored on the answers it gave a
confidence (``Pool.method``: an answer that is no span of the text has no ``answer``
confidence, an unparsed reply no ``verbalized`` one), its numbers the metric table's per-method
rows (``ece_seq``, ``auroc_ptrue``, ...) computed with the report's options, and how many
answers it could not score the table's count rows (``answer_not_found``,
``verbalized_unparsed``). With two or more runs of a task the runs are ranked by ECE under each
method that measured something in all of them; when two rankings disagree the report says so
in the words of the confidence rules' notice (``rules.order_flips``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from calib_tasks.report.entries import Entry, ReportOptions
from calib_tasks.report.numbers import generation_methods
from calib_tasks.report.rules import order_flips
from calib_tasks.scoring import metric_table
from calib_tasks.scoring.confidence_methods import Method, method_named
from calib_tasks.scoring.records import GENERATION, Pool

#: The per-method metrics shown after the ECE, in column order (keys without the method's
#: suffix).
COLUMNS = ("brier", "auroc", "aurc", "helm_selective_acc_10", "helm_ece_10_bin")


@dataclass(frozen=True)
class MethodRow:
    """One run under one confidence method: the ECE with its interval and every column's value
    (NaN when the method scored no answer), computed on the ``n`` of the entry's ``of`` answers
    the method gave a confidence, their accuracy, why its confidences carry no information
    (None when they do), and the count row of the answers it could not score (``unscored_key``,
    e.g. ``answer_not_found``; None for a method without one) with its value."""

    entry: Entry
    method: Method
    n: int
    of: int
    acc: float
    ece: float
    ece_low: float
    ece_high: float
    values: dict[str, float]
    uninformative: str | None
    unscored_key: str | None
    unscored: int

    @property
    def scored(self) -> bool:
        """Whether the method gave some answer a confidence (else its numbers are NaN)."""
        return self.n > 0


def _count_row(method: Method) -> metric_table.CalibMetric | None:
    """The metric table's count of the answers ``method`` leaves without a confidence (a row of
    the method that is none of its per-method metrics), if it has one."""
    suffix = f"_{method.name}"
    return next(
        (
            m
            for m in metric_table.METRICS
            if m.method is method and GENERATION in m.compute and not m.key.endswith(suffix)
        ),
        None,
    )


def _row(key: str, pool: Pool, options: ReportOptions) -> float:
    """The metric table's row ``key`` of a generation pool, with ``options``."""
    value = metric_table.metric_named(key).compute[GENERATION](pool, options)
    return math.nan if value is None else float(value)


def method_rows(entry: Entry, options: ReportOptions) -> list[MethodRow]:
    """The entry's rows, one per confidence method its records hold (in their order), computed
    with ``options``; none for an entry that holds no generated answers."""
    pool = entry.pool
    if pool is None or pool.kind != GENERATION:
        return []
    rows = []
    for name in generation_methods(pool):
        method = method_named(name)
        scored = pool.method(name)
        count = _count_row(method)
        unscored = pool.without_confidence(name)
        if count is not None:
            unscored = int(_row(count.key, pool, options))
        nan = math.nan
        values = {column: nan for column in COLUMNS}
        ece = low = high = acc = nan
        uninformative = None
        if scored is not None:  # the rows are not asked of a method without answers: they warn
            values = {column: _row(method.key(column), pool, options) for column in COLUMNS}
            ece = _row(method.key("ece"), pool, options)
            low = _row(method.key("ece_ci_low"), pool, options)
            high = _row(method.key("ece_ci_high"), pool, options)
            acc = float(scored.correct.mean())
            uninformative = scored.uninformative_reason
        rows.append(
            MethodRow(
                entry,
                method,
                0 if scored is None else scored.n,
                pool.n,
                acc,
                ece,
                low,
                high,
                values,
                uninformative,
                None if count is None else count.key,
                unscored,
            )
        )
    return rows


def method_flip_notice(rows: Sequence[MethodRow]) -> str | None:
    """A sentence naming the rankings of a task's runs by ECE under each confidence method when
    two of them disagree, else None; a method is ranked when it measured something in every
    run (it scored answers, and its confidences carry information)."""
    runs = list(dict.fromkeys(row.entry.label for row in rows))
    if len(runs) < 2:
        return None
    scores: dict[str, list[float]] = {}
    for method in dict.fromkeys(row.method for row in rows):
        of_method = [row for row in rows if row.method is method]
        by_run = {row.entry.label: row.ece for row in of_method}
        measured = all(row.scored and row.uninformative is None for row in of_method)
        if len(by_run) == len(runs) and measured:
            scores[f"ECE under the {method.name} method"] = [by_run[r] for r in runs]
    return order_flips(runs, scores, "the confidence method")
