"""Reading the calib records of one ``samples_<task>_<date>.jsonl`` file, line by line.

Each line is one document under one filter (``filter``, "none" when absent: the harness writes
every document once per filter of the task); its ``ece`` value is the task's record, or its
``bypass`` value in a run made with ``--predict_only`` (which renames every metric ``bypass``).
The record's schema is ``calib_tasks.scoring.records``' (``parse_record``); read leniently here:
unusable lines (truncated or corrupt JSON, a record that breaks its contract) are skipped and
described with file and line number; the other lines are still reported.

A record's option parts that only some numbers use (``PARTS``: each confidence rule's option
probabilities, the log-likelihoods of temperature scaling, and ``probs`` where other records of
its filter carry them) are checked on their own: a record whose part is unusable, or that lacks
a part other records of its filter carry, keeps its other numbers and is left out of those that
use the part, a problem line naming the file, the line and what leaves it out
(``TaskSamples.left_out``); an unusable part is not among the record's parts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calib_tasks.scoring.confidence_rules import RULES, SUM
from calib_tasks.scoring.records import (
    KIND_TEXT,
    LOGLIKELIHOODS,
    PREDICT_ONLY_KEY,
    RECORD_KEY,
    Prediction,
    Record,
    RecordKind,
    parse_record,
    pool_kind,
    record_kind,
)

FILTER_KEY = "filter"
DEFAULT_FILTER = "none"
#: The option parts of a record (``records.OPTION_PARTS``), each with the numbers that use it.
PARTS: dict[str, str] = {
    SUM.field: "the confidence rules, temperature scaling and the multiclass Brier score",
    **{rule.field: f"the {rule.name} rule" for rule in RULES if rule is not SUM},
    LOGLIKELIHOODS: "temperature scaling",
}


@dataclass
class FilterSamples:
    """The usable records of the lines of one filter; ``n_lines`` counts this filter's lines
    that hold a calib record, usable or not (every line of the file when it has one filter);
    ``lines`` is the line number of each of ``records``."""

    key: str
    n_lines: int = 0
    records: list[Record] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)

    @property
    def n_documents(self) -> int:
        """How many documents (lines) of this filter were usable."""
        return len(self.records)


@dataclass
class TaskSamples:
    """The usable records of a samples file, per filter, and what was wrong with the rest.

    ``kind`` is the kind of the file's first calib record, None when no line holds one (not a
    calib task, or nothing readable); then ``filters`` holds no usable record. ``filters`` is in
    the order of the file. ``problems`` are ``"<file>:<line>: <what>"`` of the unusable lines;
    ``left_out`` those of usable records left out of some numbers, ``"<file>:<line>: <what>;
    left out of <numbers>"``.
    """

    path: Path
    n_lines: int = 0
    kind: RecordKind | None = None
    filters: dict[str, FilterSamples] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)

    @property
    def n_documents(self) -> int:
        """How many lines were usable, over all filters."""
        return sum(f.n_documents for f in self.filters.values())


def _record(sample: Any) -> Any:
    """The calib record of a parsed line: under ``ece``, else under ``bypass``."""
    if not isinstance(sample, dict):
        return None
    return sample[RECORD_KEY] if RECORD_KEY in sample else sample.get(PREDICT_ONLY_KEY)


def read_samples(path: Path) -> TaskSamples:
    """Every usable calib record of the samples file at ``path`` (see the module docstring).

    The file's kind is that of its first calib record; records that cannot be pooled with it
    are problems. Lines without a calib record are problems only in a file that has calib
    records.
    """
    samples = TaskSamples(path)
    problems: list[tuple[int, str]] = []
    lines_without_record: list[int] = []
    try:
        with path.open(encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, start=1):
                samples.n_lines = number
                if line.strip():
                    problem = _read_line(samples, line, lines_without_record, number)
                    if problem is not None:
                        problems.append((number, problem))
    except OSError as error:
        problems.append((0, f"cannot be read ({error.strerror})"))
    if samples.kind is not None:
        problems += [
            (n, f"no calib record under {RECORD_KEY!r} (nor {PREDICT_ONLY_KEY!r})")
            for n in lines_without_record
        ]
    if len(samples.filters) == 1:
        (only,) = samples.filters.values()
        only.n_lines = samples.n_lines
    samples.problems = [
        f"{path}:{number}: {problem}" if number else f"{path}: {problem}"
        for number, problem in sorted(problems)
    ]
    left_out = [item for f in samples.filters.values() for item in _left_out(f)]
    samples.left_out = [
        f"{path}:{number}: {what}; left out of {PARTS[part]}"
        for number, part, what in sorted(left_out)
    ]
    return samples


def _left_out(of_filter: FilterSamples) -> list[tuple[int, str, str]]:
    """(line number, part, what) of each record of ``of_filter`` left out of what uses one of
    its option parts: the part is unusable, or it lacks a part which other records of the
    filter carry (among the records with ``probs``, for a part other than ``probs``)."""
    left_out = []
    numbered = [
        (number, record)
        for number, record in zip(of_filter.lines, of_filter.records, strict=True)
        if isinstance(record, Prediction)
    ]
    for part in PARTS:
        holders = [
            (number, record)
            for number, record in numbered
            if part == SUM.field or SUM.field in record.parts
        ]
        carried = any(part in record.parts for _, record in holders)
        for number, record in holders:
            if part in record.unusable:
                left_out.append((number, part, record.unusable[part]))
            elif carried and part not in record.parts:
                left_out.append((number, part, f"no {part!r}, which other records carry"))
    return left_out


def _read_line(
    samples: TaskSamples, line: str, lines_without_record: list[int], number: int
) -> str | None:
    """Add the line's record to ``samples``; return what is wrong with the line, if anything."""
    try:
        sample = json.loads(line)
    except json.JSONDecodeError as error:
        return f"not valid JSON ({error.msg} at column {error.colno}; truncated or corrupt)"
    value = _record(sample)
    kind = record_kind(value)
    if kind is None:
        lines_without_record.append(number)
        return None
    key = str(sample.get(FILTER_KEY, DEFAULT_FILTER))
    of_filter = samples.filters.setdefault(key, FilterSamples(key))
    of_filter.n_lines += 1
    samples.kind = samples.kind or kind
    if pool_kind([samples.kind, kind]) is None:
        return f"a {KIND_TEXT[kind]} record in a file of {KIND_TEXT[samples.kind]} records"
    try:
        record = parse_record(value)
    except ValueError as error:
        return str(error)
    of_filter.records.append(record)
    of_filter.lines.append(number)
    return None
