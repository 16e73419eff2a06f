"""Reading the calib records of one ``samples_<task>_<date>.jsonl`` file, line by line.

Each line is one document; its ``ece`` value is the task's record (``calib_tasks.records``):
top-label (``confidence``, ``correct`` and extras) or histogram (``histogram`` plus ``n_tokens``,
``n_bytes``). Unusable lines (truncated or corrupt JSON, a record that breaks its contract) are
skipped and described with file and line number; the other lines are still reported.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from calib_metrics import ConfidenceHistogram

RECORD_KEY = "ece"
Kind = Literal["top-label", "histogram"]


@dataclass
class TaskSamples:
    """The usable records of a samples file, and what was wrong with the rest.

    ``kind`` is None when no line holds a calib record (not a calib task, or nothing readable);
    then ``records``/``histograms`` are empty. ``problems`` are ``"<file>:<line>: <what>"``.
    """

    path: Path
    n_lines: int = 0
    kind: Kind | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    histograms: list[ConfidenceHistogram] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def n_documents(self) -> int:
        """How many documents (lines) were usable."""
        return len(self.histograms) if self.kind == "histogram" else len(self.records)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def top_label_problem(record: dict[str, Any]) -> str | None:
    """None for a usable top-label record, else what breaks its contract."""
    confidence = record.get("confidence")
    if not _is_number(confidence) or not 0.0 <= confidence <= 1.0:
        return f"confidence must be a number in [0, 1], got {confidence!r}"
    if record.get("correct") not in (0, 1) or isinstance(record.get("correct"), float):
        return f"correct must be 0 or 1, got {record.get('correct')!r}"
    return None


def _record_kind(record: Any) -> Kind | None:
    if isinstance(record, dict) and "histogram" in record:
        return "histogram"
    if isinstance(record, dict) and "confidence" in record:
        return "top-label"
    return None


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
        problems += [(n, f"no calib record under {RECORD_KEY!r}") for n in lines_without_record]
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
    record = sample.get(RECORD_KEY) if isinstance(sample, dict) else None
    kind = _record_kind(record)
    if kind is None:
        lines_without_record.append(number)
        return None
    samples.kind = samples.kind or kind
    if kind != samples.kind:
        return f"a {kind} record in a file of {samples.kind} records"
    if kind == "histogram":
        try:
            samples.histograms.append(ConfidenceHistogram.from_dict(record["histogram"]))
        except (TypeError, ValueError, KeyError, AttributeError) as error:
            return f"unusable histogram record ({error})"
        return None
    problem = top_label_problem(record)
    if problem is None:
        samples.records.append(record)
    return problem
