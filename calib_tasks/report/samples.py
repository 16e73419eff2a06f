"""Reading the calib records of one ``samples_<task>_<date>.jsonl`` file, line by line.

Each line is one document under one filter (``filter``, "none" when absent: the harness writes
every document once per filter of the task); its ``ece`` value is the task's record
(``calib_tasks.records``), or its ``bypass`` value in a run made with ``--predict_only`` (which
renames every metric ``bypass``): top-label (``confidence``, ``correct`` and extras such as
``probs`` and ``label``) or histogram (``histogram`` plus ``n_tokens``, ``n_bytes``). Unusable
lines (truncated or corrupt JSON, a record that breaks its contract) are skipped and described
with file and line number; the other lines are still reported.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from calib_metrics import ConfidenceHistogram
from calib_metrics.validation import ROW_SUM_TOLERANCE_PER_CLASS
from calib_tasks.records import PREDICT_ONLY_KEY, RECORD_KEY

FILTER_KEY = "filter"
DEFAULT_FILTER = "none"
Kind = Literal["top-label", "histogram"]


@dataclass
class FilterSamples:
    """The usable records of the lines of one filter; ``n_lines`` counts this filter's lines
    that hold a calib record, usable or not (every line of the file when it has one filter)."""

    key: str
    n_lines: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)
    histograms: list[ConfidenceHistogram] = field(default_factory=list)

    @property
    def n_documents(self) -> int:
        """How many documents (lines) of this filter were usable."""
        return len(self.histograms) or len(self.records)


@dataclass
class TaskSamples:
    """The usable records of a samples file, per filter, and what was wrong with the rest.

    ``kind`` is None when no line holds a calib record (not a calib task, or nothing readable);
    then ``filters`` holds no usable record. ``filters`` is in the order of the file.
    ``problems`` are ``"<file>:<line>: <what>"``.
    """

    path: Path
    n_lines: int = 0
    kind: Kind | None = None
    filters: dict[str, FilterSamples] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def n_documents(self) -> int:
        """How many lines were usable, over all filters."""
        return sum(f.n_documents for f in self.filters.values())


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_probability(value: Any) -> bool:
    return _is_number(value) and 0.0 <= value <= 1.0


def _probs_problem(probs: Any, label: Any) -> str | None:
    """None for usable option probabilities with their gold index, else what is wrong."""
    if not isinstance(probs, list) or not probs:
        return f"probs must be a non-empty list of option probabilities, got {probs!r}"
    for i, p in enumerate(probs):
        if not _is_probability(p):
            return f"probs[{i}] must be a number in [0, 1], got {p!r}"
    total = math.fsum(probs)
    if abs(total - 1.0) > ROW_SUM_TOLERANCE_PER_CLASS * len(probs):
        return f"probs must sum to 1, got {total!r}"
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(probs):
        return f"label must be an index into probs (0 to {len(probs) - 1}), got {label!r}"
    return None


def top_label_problem(record: dict[str, Any]) -> str | None:
    """None for a usable top-label record, else what breaks its contract: ``confidence`` a
    number in [0, 1], ``correct`` 0 or 1 and, when the record has ``probs``, those a list of
    numbers in [0, 1] summing to 1 with ``label`` an index into them."""
    confidence = record.get("confidence")
    if not _is_probability(confidence):
        return f"confidence must be a number in [0, 1], got {confidence!r}"
    if record.get("correct") not in (0, 1) or isinstance(record.get("correct"), float):
        return f"correct must be 0 or 1, got {record.get('correct')!r}"
    if "probs" in record:
        return _probs_problem(record["probs"], record.get("label"))
    return None


def _record_kind(record: Any) -> Kind | None:
    if isinstance(record, dict) and "histogram" in record:
        return "histogram"
    if isinstance(record, dict) and "confidence" in record:
        return "top-label"
    return None


def _record(sample: Any) -> Any:
    """The calib record of a parsed line: under ``ece``, else under ``bypass``."""
    if not isinstance(sample, dict):
        return None
    return sample[RECORD_KEY] if RECORD_KEY in sample else sample.get(PREDICT_ONLY_KEY)


def read_samples(path: Path) -> TaskSamples:
    """Every usable calib record of the samples file at ``path`` (see the module docstring).

    The file's kind is that of its first calib record; records of the other kind are problems.
    Lines without a calib record are problems only in a file that has calib records.
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
    return samples


def _read_line(
    samples: TaskSamples, line: str, lines_without_record: list[int], number: int
) -> str | None:
    """Add the line's record to ``samples``; return what is wrong with the line, if anything."""
    try:
        sample = json.loads(line)
    except json.JSONDecodeError as error:
        return f"not valid JSON ({error.msg} at column {error.colno}; truncated or corrupt)"
    record = _record(sample)
    kind = _record_kind(record)
    if kind is None:
        lines_without_record.append(number)
        return None
    key = str(sample.get(FILTER_KEY, DEFAULT_FILTER))
    of_filter = samples.filters.setdefault(key, FilterSamples(key))
    of_filter.n_lines += 1
    samples.kind = samples.kind or kind
    if kind != samples.kind:
        return f"a {kind} record in a file of {samples.kind} records"
    if kind == "histogram":
        try:
            of_filter.histograms.append(ConfidenceHistogram.from_dict(record["histogram"]))
        except (TypeError, ValueError, KeyError, AttributeError) as error:
            return f"unusable histogram record ({error})"
        return None
    problem = top_label_problem(record)
    if problem is None:
        of_filter.records.append(record)
    return problem
