"""Per task: one table of confidence rules x metrics, and whether the runs' order flips.

The numbers come from the metric table's per-rule rows (``calib_tasks.scoring.metric_table``),
computed with the report's options, for every rule whose option probabilities the entry's
records hold, each on the records that hold them: a record whose part of a rule was unusable
lost it when it was read (``samples.PARTS``), so it leaves out only itself, and only from that
rule. With two or more runs of a task, the runs are ranked by ECE under each rule and by SCE;
when two of those rankings disagree, the conclusion depends on how confidence was read off the
model (the flip Oh & Hwang, 2024, found for the alignment question), and the report says so in
words.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

import calib_metrics as cm
from calib_tasks.report.entries import Entry, ReportOptions
from calib_tasks.scoring import metric_table
from calib_tasks.scoring.confidence_rules import RULES, SUM, Rule
from calib_tasks.scoring.records import MULTICLASS, Pool
from calib_tasks.scoring.settings import TaskSettings

#: The per-rule metrics shown, in column order (keys without the rule's suffix).
COLUMNS = ("ece", "sce", "classwise_ece", "brier", "helm_ece_10_bin", "helm_selective_acc_10")
#: How far a rule's option probabilities may be from the sum rule's to count as the same.
SAME_TOLERANCE = 1e-12
#: Why a rule gives the sum rule's probabilities in every record (``RuleRow.same_as_sum``).
WHY_SAME = {
    "norm": "every option is one character long (answer letters), and a log-likelihood "
    "divided by a length of 1 is itself",
    "min": "every option is one token long, and the smallest token log-probability of a "
    "one-token option is its log-likelihood",
    "letter": "the options' probabilities over the whole vocabulary already sum to 1",
}


@dataclass(frozen=True)
class RuleRow:
    """One run under one rule: accuracy of the rule's prediction, the ECE's bootstrap interval
    and every column's value (NaN where the rule does not define it), computed on ``n`` of the
    entry's ``of`` records (those holding the rule's probabilities); ``same_as_sum`` when the
    rule's option probabilities are the sum rule's in every one of them."""

    entry: Entry
    rule: Rule
    acc: float
    ece_interval: cm.ConfidenceInterval
    values: dict[str, float]
    n: int
    of: int
    same_as_sum: bool = False


def _same_as_sum(pool: Pool, rule: Rule) -> bool:
    """Whether ``rule`` (not ``sum``) gives the sum rule's option probabilities in every record
    of ``pool``."""
    return rule is not SUM and np.allclose(
        pool.part(rule.field), pool.probs, rtol=0.0, atol=SAME_TOLERANCE
    )


def rule_rows(entry: Entry, options: ReportOptions) -> list[RuleRow]:
    """The entry's rows, one per rule some of its records hold, in ``RULES`` order, computed
    with ``options`` (none for records without options)."""
    if entry.predictions is None:
        return []
    rows = []
    for rule in RULES:
        pool = entry.predictions.holding(SUM.field, rule.field)
        if pool is None:
            continue
        by_key = {m.key: m for m in metric_table.metrics_for(MULTICLASS, _settings(rule))}
        values = {}
        for column in COLUMNS:
            metric = by_key.get(rule.key(column))
            values[column] = metric.compute[MULTICLASS](pool, options) if metric else math.nan
        confidence, correct = pool.rule_top_label(rule)
        interval = cm.bootstrap_ci(
            confidence,
            correct,
            metric="ece",
            n_bins=options.n_bins,
            strategy=options.binning,
            seed=options.seed,
        )
        acc = float(np.mean(correct))
        same = _same_as_sum(pool, rule)
        rows.append(RuleRow(entry, rule, acc, interval, values, pool.n, entry.predictions.n, same))
    return rows


def _settings(rule: Rule) -> TaskSettings:
    return TaskSettings(rules=(SUM, rule))


def _ranking(values: Sequence[float]) -> tuple[int, ...]:
    """Positions ordered from lowest (best calibrated) to highest value."""
    return tuple(sorted(range(len(values)), key=lambda i: (values[i], i)))


def order_flips(runs: Sequence[str], scores: Mapping[str, Sequence[float]], by: str) -> str | None:
    """The flip notice of ``runs`` ranked by each of ``scores`` (ranking name -> one score per
    run, in the order of ``runs``, lower is better calibrated): a sentence naming every ranking
    when two of them disagree, ``by`` saying what they differ in ("the rule or the metric"),
    else None."""
    rankings = {name: _ranking(values) for name, values in scores.items()}
    if len(set(rankings.values())) < 2:
        return None
    orders = "; ".join(
        f"by {name}: {', '.join(runs[i] for i in order)}" for name, order in rankings.items()
    )
    return (
        "THE ORDER OF THE RUNS FLIPS with how confidence is read off the model: which run is "
        f"better calibrated depends on {by} (best calibrated first, {orders})"
    )


def flip_notice(rows: Sequence[RuleRow]) -> str | None:
    """A sentence naming the rankings of the task's runs that disagree (by ECE under each rule,
    and by SCE under the ``sum`` rule), or None when there are fewer than two runs or every
    ranking is the same (``order_flips``)."""
    runs = list(dict.fromkeys(row.entry.label for row in rows))
    if len(runs) < 2:
        return None
    scores: dict[str, list[float]] = {}
    for rule in dict.fromkeys(row.rule for row in rows):
        by_run = {row.entry.label: row.values["ece"] for row in rows if row.rule is rule}
        if len(by_run) == len(runs):
            scores[f"ECE under the {rule.name} rule"] = [by_run[r] for r in runs]
    sce = {row.entry.label: row.values["sce"] for row in rows if row.rule is SUM}
    if len(sce) == len(runs) and all(math.isfinite(v) for v in sce.values()):
        scores["SCE under the sum rule"] = [sce[r] for r in runs]
    return order_flips(runs, scores, "the rule or the metric")
