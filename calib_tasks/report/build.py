"""Writing a report folder: figures/, breakdowns/, summary.md and report.html; the report as a
library (``write_report``), of which calib-report's command line is a thin wrapper."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from calib_tasks.render.html_page import render_html
from calib_tasks.render.markdown import render_markdown
from calib_tasks.render.text import LEVEL, fmt
from calib_tasks.report.entries import Entry, ReportOptions, task_entries
from calib_tasks.report.figures import (
    ComparisonPoint,
    write_comparison_figure,
    write_reliability_diagram,
)
from calib_tasks.report.groups import pooled_group_entries
from calib_tasks.report.labels import (
    RunOrder,
    order_runs,
    run_label,
    unique_labels,
    with_differences,
)
from calib_tasks.report.notes import Notes
from calib_tasks.report.numbers import NAN
from calib_tasks.report.runs import Run, find_run_files, read_run
from calib_tasks.report.summary import TITLE, ece_text, summary_blocks
from calib_tasks.report.tables import BREAKDOWNS, FIGURES, EntryFiles, entry_tables, slug

SUMMARY = "summary.md"
HTML = "report.html"


@dataclass(frozen=True)
class ReportResult:
    """What ``write_report`` computed and wrote: the entries reported (in report order), the
    notes on everything that could not be reported, the options the numbers were recomputed
    with, and the paths of summary.md and report.html."""

    entries: list[Entry]
    notes: list[str]
    options: ReportOptions
    summary: Path
    html: Path

    @property
    def reported(self) -> bool:
        """Whether anything was reported (when not, ``notes`` say why)."""
        return bool(self.entries)

    def entries_under(self, folder: Path) -> list[Entry]:
        """The entries of the runs found under ``folder``, one of the folders reported on, as
        it was given (paths are compared as written, not resolved)."""
        return [e for e in self.entries if e.run.files.folder.is_relative_to(folder)]


def _entry_files(entry: Entry, out_dir: Path, options: ReportOptions) -> EntryFiles:
    """Draw the entry's reliability diagram and compute its ``TABLES`` (writing their files)."""
    name = f"{slug(entry.task)}__run{entry.position + 1}-{slug(entry.label)}"
    numbers = entry.numbers
    diagram = None
    if numbers.bins is not None:
        diagram = f"{FIGURES}/reliability__{name}"
        n = f"n = {numbers.n}" + (
            f" ({numbers.documents} documents)" if numbers.documents != numbers.n else ""
        )
        title, ece = f"{entry.task}: {entry.label}", f"ECE = {ece_text(entry)} ({LEVEL} CI)"
        if numbers.method is not None:  # generated answers: the first method's diagram
            title += f", {numbers.method} confidence"
            n = f"n = {numbers.n} answers"
            if numbers.scored != numbers.n:
                ece += f", on the {numbers.scored} with a {numbers.method} confidence"
        write_reliability_diagram(
            out_dir / diagram,
            numbers.bins,
            title=title,
            stats="\n".join([f"{n}, accuracy = {fmt(numbers.acc)}", ece] + entry.alerts),
            binning=numbers.binning,
            observed=numbers.observed,
        )
    return EntryFiles(diagram, entry_tables(entry, options, out_dir, name))


def _comparison(
    entries: Sequence[Entry], labels: Sequence[str], order: RunOrder, out_dir: Path
) -> str | None:
    """Draw the comparison figure when the entries come from two or more run labels (runs of
    one label on different tasks share a row), joining only the runs on one of the order's
    lines; return its stem. The ECE of a NOT MEASURED entry is not drawn, and a marker says
    so; INCOMPLETE numbers are drawn with their marker."""
    rows = list(dict.fromkeys(labels[p] for p in sorted({e.position for e in entries})))
    if len(rows) < 2:
        return None
    points: dict[str, dict[int, ComparisonPoint]] = {}
    for e in entries:
        n = e.numbers
        point = (
            ComparisonPoint(NAN, NAN, NAN, n.acc, "ECE not measured")
            if e.not_measured
            else ComparisonPoint(n.ece, n.ece_low, n.ece_high, n.acc, e.incomplete or "")
        )
        points.setdefault(e.task, {})[rows.index(labels[e.position])] = point
    lines = [
        list(dict.fromkeys(rows.index(labels[p]) for p in line if labels[p] in rows))
        for line in order.lines
    ]
    stem = f"{FIGURES}/comparison"
    write_comparison_figure(out_dir / stem, rows, points, order_by=order.by, lines=lines)
    return stem


def _run_labels(runs: Sequence[Run], names: Mapping[Path, str]) -> list[str]:
    """The labels of ``runs``: the name of the folder of ``names`` a run was found under, else
    ``run_label``; told apart by the model arguments in which runs of one label on a common
    task differ, and numbered where even those are equal."""
    given = []
    for run in runs:
        named = [name for folder, name in names.items() if run.files.folder.is_relative_to(folder)]
        given.append(
            named[0] if named else run_label(run.model_args, run.model, run.files.folder.name)
        )
    tasks = [run.tasks for run in runs]
    compared = [_compared_args(run) for run in runs]
    return unique_labels(with_differences(given, compared, tasks), tasks)


def _compared_args(run: Run) -> dict[str, str]:
    """The model arguments that labels tell ``run`` apart by: its own, and where they set no
    ``dtype``, the dtype the harness reports loading the model in, marked ``(default)``."""
    if "dtype" in run.model_args or run.model_dtype is None:
        return dict(run.model_args)
    return {**run.model_args, "dtype": f"{run.model_dtype} (default)"}


def write_report(
    run_dirs: Sequence[Path],
    out_dir: Path,
    options: ReportOptions,
    names: Mapping[Path, str] | None = None,
) -> ReportResult:
    """Report every calib task of every run under ``run_dirs`` (searched recursively) into
    ``out_dir``, created if missing, the numbers recomputed with ``options``. ``names`` labels
    the runs found under some of the folders of ``run_dirs`` (as given; e.g. calib-study's
    point names); the other runs are labelled from their model arguments (``_run_labels``).
    Whatever cannot be reported is noted: on stderr as it is found, in summary.md and in the
    result. Raises ``OSError`` when ``out_dir`` cannot be written."""
    notes = Notes()
    runs = [read_run(files, notes) for files in find_run_files(run_dirs, notes)]
    order = order_runs([run.model_args for run in runs])
    runs = [runs[i] for i in order.indices]
    labels = _run_labels(runs, names or {})
    for run, label in zip(runs, labels, strict=True):
        for group in sorted(run.groups):
            notes.add(
                f"{group} ({label}): a group (its numbers in the results file are means over "
                "its tasks); its tasks are reported one by one and, where their samples allow, "
                "pooled into one entry"
            )
    (out_dir / FIGURES).mkdir(parents=True, exist_ok=True)
    (out_dir / BREAKDOWNS).mkdir(exist_ok=True)
    work = [(p, run, labels[p], task) for p, run in enumerate(runs) for task in run.tasks]
    entries: list[Entry] = []
    files: dict[tuple[int, str], EntryFiles] = {}
    for position, run, label, task in tqdm(work, desc="calib-report", unit="task", disable=None):
        for entry in task_entries(position, run, label, task, options, notes):
            entries.append(entry)
            files[(position, entry.task)] = _entry_files(entry, out_dir, options)
    for position, run in enumerate(runs):
        of_run = [e for e in entries if e.position == position]
        for entry in pooled_group_entries(run, of_run, options, notes):
            entries.append(entry)
            files[(position, entry.task)] = _entry_files(entry, out_dir, options)
    comparison = _comparison(entries, labels, order, out_dir)
    blocks = summary_blocks(
        runs, labels, order.by, entries, files, comparison, notes.messages, options
    )
    result = ReportResult(entries, notes.messages, options, out_dir / SUMMARY, out_dir / HTML)
    result.summary.write_text(render_markdown(blocks), encoding="utf-8")
    result.html.write_text(render_html(blocks, TITLE, out_dir), encoding="utf-8")
    return result
