"""What can be reported for each task of each run, with a note for everything that cannot.

An entry is one calib task in one run: numbers recomputed from its samples file when it has
usable records, else the numbers of its results file. Groups, non-calib tasks and tasks with
neither usable samples nor calib numbers are skipped with a note.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from calib_tasks.report.notes import Notes
from calib_tasks.report.numbers import (
    EQUAL_MASS,
    EQUAL_WIDTH,
    TaskNumbers,
    histogram_numbers,
    is_calib_result,
    results_numbers,
    top_label_numbers,
)
from calib_tasks.report.runs import Run
from calib_tasks.report.samples import TaskSamples, read_samples

MAX_LISTED_PROBLEMS = 5


@dataclass(frozen=True)
class ReportOptions:
    """How numbers are recomputed: binning strategy, number of bins, bootstrap seed."""

    binning: str = EQUAL_WIDTH
    n_bins: int = 10
    seed: int = 0


@dataclass(frozen=True)
class Entry:
    """One calib task of one run; ``records`` are its top-label records (None otherwise)."""

    position: int
    run: Run
    label: str
    task: str
    numbers: TaskNumbers
    records: list[dict[str, Any]] | None
    origin: str


def _note_problems(samples: TaskSamples, notes: Notes, where: str) -> None:
    problems = samples.problems
    if not problems:
        return
    listed = problems[:MAX_LISTED_PROBLEMS]
    for problem in listed:
        notes.add(f"{where}: {problem}")
    if len(problems) > len(listed):
        notes.add(
            f"{where}: {len(problems) - len(listed)} more unusable lines in {samples.path} "
            "(not listed)"
        )


def _from_samples(
    samples: TaskSamples, options: ReportOptions, notes: Notes, where: str
) -> TaskNumbers | None:
    try:
        if samples.kind == "histogram":
            if options.binning == EQUAL_MASS:
                notes.add(
                    f"{where}: equal-mass binning is not available for token histogram records; "
                    "equal-width bins used"
                )
            return histogram_numbers(samples.histograms, n_bins=options.n_bins, seed=options.seed)
        return top_label_numbers(
            samples.records, n_bins=options.n_bins, strategy=options.binning, seed=options.seed
        )
    except ValueError as error:
        notes.add(f"{where}: cannot recompute the numbers from {samples.path} ({error})")
        return None


def _origin(samples: TaskSamples) -> str:
    usable = samples.n_documents
    if usable == samples.n_lines:
        return f"samples ({usable} documents)"
    return f"samples ({usable} of {samples.n_lines} lines usable)"


def task_entry(
    position: int, run: Run, label: str, task: str, options: ReportOptions, notes: Notes
) -> Entry | None:
    """The entry of ``task`` in ``run`` (None, with a note, when there is nothing to report)."""
    where = f"{task} ({label})"
    metrics = run.metrics.get(task, {})
    samples_path = run.files.samples_files.get(task)
    numbers = None
    samples = None
    if samples_path is not None:
        samples = read_samples(samples_path)
        if samples.kind is None and not samples.problems and not is_calib_result(metrics):
            notes.add(f"{where}: not a calib task (no calib records, no ECE); skipped")
            return None
        _note_problems(samples, notes, where)
        if samples.n_documents:
            numbers = _from_samples(samples, options, notes, where)
        else:
            notes.add(f"{where}: no usable calib record in {samples_path}")
    if numbers is not None and samples is not None:
        records = samples.records if samples.kind == "top-label" else None
        return Entry(position, run, label, task, numbers, records, _origin(samples))
    if not is_calib_result(metrics):
        if samples_path is None:
            notes.add(f"{where}: not a calib task (no ECE in the results file); skipped")
        return None
    if samples_path is None:
        notes.add(
            f"{where}: samples are missing (run without --log_samples?); numbers from "
            f"{run.files.results_file} only, no diagram or breakdown"
        )
    else:
        notes.add(f"{where}: numbers from {run.files.results_file} only, no diagram or breakdown")
    numbers = results_numbers(metrics, run.n_samples.get(task))
    return Entry(position, run, label, task, numbers, None, "results file only")
