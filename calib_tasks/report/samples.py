"""Reading the calib records of one ``samples_<task>_<date>.jsonl`` file, line by line.

Each line is one document under one filter (``filter``, "none" when absent: the harness writes
every document once per filter of the task); its ``ece`` value is the task's record
(``calib_tasks.scoring.records``), or its ``bypass`` value in a run made with ``--predict_only``
(which
renames every metric ``bypass``): top-label (``confidence``, ``correct`` and extras such as
``probs`` and ``label``) or histogram (``histogram`` plus ``n_tokens``, ``n_bytes``). Unusable
lines (truncated or corrupt JSON, a record that breaks its contract) are skipped and described
with file and line number; the other lines are still reported.

A record's parts that only some numbers use (``PARTS``: each confidence rule's option
probabilities, the log-likelihoods of temperature scaling, and ``probs`` where other records
of its filter carry them) are checked on their own: a record whose part is unusable, or that
lacks a part other records of its filter carry, keeps its other numbers and is left out of
those that use the part, a problem line naming the file, the line and what leaves it out
(``TaskSamples.left_out``); an unusable part is removed from the record.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from calib_metrics import ConfidenceHistogram
from calib_metrics.validation import ROW_SUM_TOLERANCE_PER_CLASS
from calib_tasks.scoring.confidence_rules import RULES, SUM
from calib_tasks.scoring.records import PREDICT_ONLY_KEY, RECORD_KEY

FILTER_KEY = "filter"
DEFAULT_FILTER = "none"
Kind = Literal["top-label", "histogram"]
LOGLIKELIHOODS = "loglikelihoods"
#: The parts of a record with option probabilities that only some numbers use, and those numbers.
PARTS: dict[str, str] = {
    SUM.field: "the confidence rules, temperature scaling and the multiclass Brier score",
    **{rule.field: f"the {rule.name} rule" for rule in RULES if rule is not SUM},
    LOGLIKELIHOODS: "temperature scaling",
}
_RULE_OF_FIELD = {rule.field: rule for rule in RULES}


@dataclass
class FilterSamples:
    """The usable records of the lines of one filter; ``n_lines`` counts this filter's lines
    that hold a calib record, usable or not (every line of the file when it has one filter);
    ``lines`` is the line number of each of ``records``."""

    key: str
    n_lines: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
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
    ``problems`` are ``"<file>:<line>: <what>"`` of the unusable lines; ``left_out`` those of
    usable records left out of some numbers, ``"<file>:<line>: <what>; left out of <numbers>"``.
    """

    path: Path
    n_lines: int = 0
    kind: Kind | None = None
    filters: dict[str, FilterSamples] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)

    @property
    def n_documents(self) -> int:
        """How many lines were usable, over all filters."""
        return sum(f.n_documents for f in self.filters.values())


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_probability(value: Any) -> bool:
    return _is_number(value) and 0.0 <= value <= 1.0


_PLURAL = {LOGLIKELIHOODS: "log-likelihoods"} | {rule.field: "probabilities" for rule in RULES}


def _option_values_problem(
    name: str, values: Any, is_usable: Callable[[Any], bool], what: str, n: int | None = None
) -> str | None:
    """None when ``values`` is a non-empty list (of ``n`` values when given) of which every
    one ``is_usable``, else what is wrong (``what`` says what a value must be)."""
    if not isinstance(values, list) or not values:
        return f"{name} must be a non-empty list of option {_PLURAL[name]}, got {values!r}"
    if n is not None and len(values) != n:
        return f"{name} must hold {n} values, one per option of probs, got {len(values)}"
    for i, value in enumerate(values):
        if not is_usable(value):
            return f"{name}[{i}] must be {what}, got {value!r}"
    return None


def _probabilities_problem(
    name: str, probs: Any, normalised: bool = True, n: int | None = None
) -> str | None:
    """None for usable option probabilities (summing to 1 when ``normalised``), else what is
    wrong."""
    problem = _option_values_problem(name, probs, _is_probability, "a number in [0, 1]", n)
    if problem is not None:
        return problem
    total = math.fsum(probs)
    if normalised and abs(total - 1.0) > ROW_SUM_TOLERANCE_PER_CLASS * len(probs):
        return f"{name} must sum to 1, got {total!r}"
    return None


def _probs_problem(probs: Any, label: Any) -> str | None:
    """None for usable option probabilities with their gold index, else what is wrong."""
    problem = _probabilities_problem(SUM.field, probs)
    if problem is not None:
        return problem
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(probs):
        return f"label must be an index into probs (0 to {len(probs) - 1}), got {label!r}"
    return None


def _part_problem(record: dict[str, Any], part: str) -> str | None:
    """None when the ``part`` (a key of ``PARTS`` other than ``probs``) of a record with usable
    ``probs`` is usable, else what is wrong: the rule's option probabilities (summing to 1 for a
    normalised rule), or finite log-likelihoods, one per option of ``probs``."""
    n = len(record[SUM.field])
    if part == LOGLIKELIHOODS:
        return _option_values_problem(part, record[part], _is_number, "a finite number", n)
    return _probabilities_problem(part, record[part], _RULE_OF_FIELD[part].normalised, n)


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
    left_out: list[tuple[int, str, str]] = []
    try:
        with path.open(encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, start=1):
                samples.n_lines = number
                if line.strip():
                    problem = _read_line(samples, line, lines_without_record, left_out, number)
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
    reported = {(number, part) for number, part, _ in left_out}
    for of_filter in samples.filters.values():
        left_out += _missing_parts(of_filter, reported)
    samples.left_out = [
        f"{path}:{number}: {what}; left out of {PARTS[part]}"
        for number, part, what in sorted(left_out)
    ]
    return samples


def _usable_parts(
    record: dict[str, Any], number: int, left_out: list[tuple[int, str, str]]
) -> dict[str, Any]:
    """``record`` (a usable top-label record) without its unusable parts, each added to
    ``left_out`` as (line number, part, what is wrong)."""
    if SUM.field not in record:
        return record
    unusable = {
        part: problem
        for part in PARTS
        if part != SUM.field and part in record and (problem := _part_problem(record, part))
    }
    left_out += [(number, part, problem) for part, problem in unusable.items()]
    return {key: value for key, value in record.items() if key not in unusable}


def _missing_parts(
    of_filter: FilterSamples, reported: set[tuple[int, str]]
) -> list[tuple[int, str, str]]:
    """(line number, part, what) of each record of ``of_filter`` that lacks a part which other
    records of it carry (a rule's part among the records with ``probs``), unless ``reported``
    already says why (the part was unusable)."""
    missing = []
    for part in PARTS:
        holders = [
            (number, part in record)
            for number, record in zip(of_filter.lines, of_filter.records, strict=True)
            if part == SUM.field or SUM.field in record
        ]
        if any(carried for _, carried in holders):
            missing += [
                (number, part, f"no {part!r}, which other records carry")
                for number, carried in holders
                if not carried and (number, part) not in reported
            ]
    return missing


def _read_line(
    samples: TaskSamples,
    line: str,
    lines_without_record: list[int],
    left_out: list[tuple[int, str, str]],
    number: int,
) -> str | None:
    """Add the line's record to ``samples`` (its unusable parts to ``left_out``, see
    ``_usable_parts``); return what is wrong with the line, if anything."""
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
        of_filter.records.append(_usable_parts(record, number, left_out))
        of_filter.lines.append(number)
    return problem
