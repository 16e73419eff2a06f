"""Per task: one table of confidence rules x metrics, and whether the runs' order flips.

The numbers come from the metric table's per-rule rows (``calib_tasks.metric_table``), computed
on each entry's records as the task computes them (its defaults), for every rule whose option
probabilities the records hold. With two or more runs of a task, the runs are ranked by ECE
under each rule and by SCE; when two of those rankings disagree, the conclusion depends on how
confidence was read off the model (the flip Oh & Hwang, 2024, found for the alignment question),
and the report says so in words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

import calib_metrics as cm
from calib_tasks import metric_table
from calib_tasks.confidence_rules import RULES, SUM, Rule
from calib_tasks.records import MULTICLASS, PooledRecords
from calib_tasks.report.entries import Entry

#: The per-rule metrics shown, in column order (keys without the rule's suffix).
COLUMNS = ("ece", "sce", "classwise_ece", "brier", "helm_ece_10_bin", "helm_selective_acc_10")


@dataclass(frozen=True)
class RuleRow:
    """One run under one rule: accuracy of the rule's prediction, the ECE's bootstrap interval
    and every column's value (NaN where the rule does not define it)."""

    entry: Entry
    rule: Rule
    acc: float
    ece_interval: cm.ConfidenceInterval
    values: dict[str, float]


def _pool(entry: Entry) -> PooledRecords | None:
    records = entry.records
    if not records or not all("probs" in r and "label" in r for r in records):
        return None
    return PooledRecords(records, entry.task)


def rules_in(pool: PooledRecords) -> list[Rule]:
    """The rules whose option probabilities every record holds, in ``RULES`` order."""
    return [rule for rule in RULES if all(rule.field in r for r in pool.records)]


def rule_rows(entry: Entry) -> list[RuleRow]:
    """The entry's rows, one per rule its records hold (none for records without options)."""
    pool = _pool(entry)
    if pool is None:
        return []
    rows = []
    for rule in rules_in(pool):
        by_key = {m.key: m for m in metric_table.metrics_for(MULTICLASS, _settings(rule))}
        values = {}
        for column in COLUMNS:
            metric = by_key.get(rule.key(column))
            values[column] = metric.compute[MULTICLASS](pool) if metric else math.nan
        confidence, correct = pool.rule_top_label(rule)
        interval = cm.bootstrap_ci(confidence, correct, metric="ece")
        rows.append(RuleRow(entry, rule, float(np.mean(correct)), interval, values))
    return rows


def _settings(rule: Rule) -> metric_table.TaskSettings:
    return metric_table.TaskSettings(rules=(SUM, rule))


def _ranking(values: Sequence[float]) -> tuple[int, ...]:
    """Positions ordered from lowest (best calibrated) to highest value."""
    return tuple(sorted(range(len(values)), key=lambda i: (values[i], i)))


def flip_notice(rows: Sequence[RuleRow]) -> str | None:
    """A sentence naming the rankings of the task's runs that disagree (by ECE under each rule,
    and by SCE under the ``sum`` rule), or None when there are fewer than two runs or every
    ranking is the same."""
    runs = list(dict.fromkeys(row.entry.label for row in rows))
    if len(runs) < 2:
        return None
    rankings: dict[str, tuple[int, ...]] = {}
    for rule in dict.fromkeys(row.rule for row in rows):
        by_run = {row.entry.label: row.values["ece"] for row in rows if row.rule is rule}
        if len(by_run) == len(runs):
            rankings[f"ECE under the {rule.name} rule"] = _ranking([by_run[r] for r in runs])
    sce = {row.entry.label: row.values["sce"] for row in rows if row.rule is SUM}
    if len(sce) == len(runs) and all(math.isfinite(v) for v in sce.values()):
        rankings["SCE under the sum rule"] = _ranking([sce[r] for r in runs])
    if len(set(rankings.values())) < 2:
        return None
    orders = "; ".join(
        f"by {name}: {', '.join(runs[i] for i in order)}" for name, order in rankings.items()
    )
    return (
        "THE ORDER OF THE RUNS FLIPS with how confidence is read off the model: which run is "
        f"better calibrated depends on the rule or the metric (best calibrated first, {orders})"
    )
