"""A group's tasks pooled into one entry: one ECE over all of their samples, where the harness's
own group numbers are means over the tasks (``mmlu``: 57 subjects, one pooled ECE).

The entries of a group's tasks (its member groups' included) that hold one-prediction records
are pooled per rule: a calib task's entries together, a plain multiple-choice task's ``[sum]``
entries together and its ``[norm]`` ones together (``logged_choices``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from calib_tasks.report.entries import Entry, ReportOptions
from calib_tasks.report.notes import Notes
from calib_tasks.report.numbers import top_label_numbers
from calib_tasks.report.runs import Run

_SUFFIX = re.compile(r"^(?P<task>.*?)(?P<suffix> \[[^\]]+\])?$")


def pooled_group_entries(
    run: Run, entries: Sequence[Entry], options: ReportOptions, notes: Notes
) -> list[Entry]:
    """For every group of ``run``, one pooled entry per kind of its tasks' ``entries`` (those of
    ``run``), named ``<group> (pooled)`` or ``<group> [sum] (pooled)``; a group with fewer than
    two such tasks gets none, and one that pools only some of its tasks says so. The pooled
    entry expects the documents its tasks' results files count (so it is INCOMPLETE when one of
    them is)."""
    pooled = []
    for group in sorted(run.group_subtasks):
        tasks = set(run.group_tasks(group))
        by_suffix: dict[str, list[Entry]] = {}
        for entry in entries:
            match = _SUFFIX.match(entry.task)
            if match and match["task"] in tasks and entry.records and _one_prediction(entry):
                by_suffix.setdefault(match["suffix"] or "", []).append(entry)
        for suffix, members in sorted(by_suffix.items()):
            if len(members) < 2:
                continue
            records = [r for member in members for r in member.records or []]
            numbers = top_label_numbers(
                records, n_bins=options.n_bins, strategy=options.binning, seed=options.seed
            )
            name = f"{group}{suffix} (pooled)"
            first = members[0]
            origin = f"the records of {len(members)} tasks pooled ({len(records)} documents)"
            counts = [m.expected_documents for m in members if m.expected_documents is not None]
            expected = sum(counts) if len(counts) == len(members) else None
            pooled.append(
                Entry(first.position, run, first.label, name, numbers, records, origin, expected)
            )
            if len(members) < len(tasks):
                notes.add(
                    f"{name} ({first.label}): pools {len(members)} of the group's "
                    f"{len(tasks)} tasks (the others have no usable samples)"
                )
    return pooled


def _one_prediction(entry: Entry) -> bool:
    return all("confidence" in r and "correct" in r for r in entry.records or [])
