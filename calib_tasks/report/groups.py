"""A group's tasks pooled into one entry: one ECE over all of their samples, where the harness's
own group numbers are means over the tasks (``mmlu``: 57 subjects, one pooled ECE).

The entries of a group's tasks (its member groups' included) that hold one-prediction records
are pooled per rule: a calib task's entries together, a plain multiple-choice task's ``[sum]``
entries together and its ``[norm]`` ones together (``logged_choices``): entries of one
``Entry.rule``.
"""

from __future__ import annotations

from collections.abc import Sequence

from calib_tasks.report.entries import Entry, ReportOptions, logged_entry_name
from calib_tasks.report.notes import Notes
from calib_tasks.report.numbers import pool_numbers
from calib_tasks.report.runs import Run
from calib_tasks.scoring.confidence_rules import Rule
from calib_tasks.scoring.records import Pool


def pooled_group_entries(
    run: Run, entries: Sequence[Entry], options: ReportOptions, notes: Notes
) -> list[Entry]:
    """For every group of ``run``, one pooled entry per rule of its tasks' ``entries`` (those
    of ``run`` that hold all of one task's one-prediction records, ``Entry.harness_task``),
    named ``<group> (pooled)`` or ``<group> [sum] (pooled)``; a group with fewer than two such
    tasks gets none, and one that pools only some of its tasks says so. The pooled entry
    expects the documents its tasks' results files count (so it is INCOMPLETE when one of them
    is)."""
    pooled = []
    for group in sorted(run.group_subtasks):
        tasks = set(run.group_tasks(group))
        by_rule: dict[Rule | None, list[Entry]] = {}
        for entry in entries:
            if entry.harness_task in tasks and entry.predictions is not None:
                by_rule.setdefault(entry.rule, []).append(entry)
        for rule, members in sorted(by_rule.items(), key=lambda item: _rule_order(item[0])):
            if len(members) < 2:
                continue
            name = (group if rule is None else logged_entry_name(group, rule)) + " (pooled)"
            pool = Pool([r for m in members for r in m.predictions.records], name)  # type: ignore[union-attr]
            first = members[0]
            origin = f"the records of {len(members)} tasks pooled ({pool.n} documents)"
            counts = [m.expected_documents for m in members if m.expected_documents is not None]
            expected = sum(counts) if len(counts) == len(members) else None
            pooled.append(
                Entry(
                    first.position,
                    run,
                    first.label,
                    name,
                    pool_numbers(pool, options),
                    pool,
                    origin,
                    expected,
                    rule=rule,
                )
            )
            if len(members) < len(tasks):
                notes.add(
                    f"{name} ({first.label}): pools {len(members)} of the group's "
                    f"{len(tasks)} tasks (the others have no usable samples)"
                )
    return pooled


def _rule_order(rule: Rule | None) -> str:
    """The order of a group's pooled entries: a calib task's first, then by rule name."""
    return "" if rule is None else rule.name
