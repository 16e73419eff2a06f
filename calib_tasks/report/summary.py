"""The report as a document: what summary.md and report.html say, in the order a person reads it.

Per task a table of runs (n, accuracy, ECE with its interval, MCE, Brier, AUROC, where the
numbers come from, links to the diagram and breakdown; for generated answers those of the
task's first confidence method), the tables of ``TABLES``, then the reliability diagrams;
before that the runs, the warnings, the notes and the comparison across runs.

An entry's markers (``Entry.alerts``) are shown wherever its numbers are: in the warnings at the
top, above its task's table, in its row (the n of INCOMPLETE numbers carries the marker; the ECE
and MCE of NOT MEASURED ones are in parentheses after the marker) and in its breakdowns.
"""

from __future__ import annotations

from collections.abc import Sequence

import calib_metrics as cm
from calib_tasks.render.document import (
    Alert,
    Block,
    Bullets,
    Code,
    Figure,
    Heading,
    Link,
    Paragraph,
    Table,
    Text,
)
from calib_tasks.render.text import LEVEL, binning_text, ece_with_interval, fmt
from calib_tasks.report.entries import Entry, ReportOptions
from calib_tasks.report.runs import Run
from calib_tasks.report.tables import BREAKDOWN, TABLES, EntryFiles, slug
from calib_tasks.scoring import metric_table

TITLE = "Calibration report"
NOT_MEASURED = "NOT MEASURED"


def ece_text(entry: Entry) -> str:
    """The entry's ECE with its interval as plain text; after ``NOT MEASURED`` and in
    parentheses when its scores carry no information."""
    n = entry.numbers
    text = ece_with_interval(n.ece, n.ece_low, n.ece_high)
    return f"{NOT_MEASURED} ({text})" if entry.not_measured else text


def _ece_cell(entry: Entry) -> Text:
    n = entry.numbers
    text = ece_with_interval(n.ece, n.ece_low, n.ece_high)
    return [Alert(NOT_MEASURED), f" ({text})"] if entry.not_measured else [text]


def _n_cell(entry: Entry) -> Text:
    n = entry.numbers
    count = fmt(n.n if n.n is not None else n.documents)
    return [count, " ", Alert(entry.incomplete)] if entry.incomplete else [count]


def _alert_items(entry: Entry, name: str) -> list[Text]:
    """One warning per marker of ``entry``, ``name`` saying whose numbers they are."""
    items: list[Text] = []
    if entry.incomplete:
        items.append(
            [
                Alert(f"{name}: {entry.incomplete}"),
                " — its numbers describe only the samples found (see the notes)",
            ]
        )
    if entry.not_measured:
        items.append(
            [
                Alert(f"{name}: {entry.not_measured}"),
                " — its ECE and MCE (in parentheses) are no measurement of calibration",
            ]
        )
    return items


def _runs_table(runs: Sequence[Run], labels: Sequence[str]) -> Table:
    rows = []
    for position, (run, label) in enumerate(zip(runs, labels, strict=True), start=1):
        args = ",".join(f"{k}={v}" for k, v in run.model_args.items()) or "n/a"
        source = run.files.results_file or run.files.folder
        rows.append(
            [
                [str(position)],
                [label],
                [run.model or "n/a"],
                [Code(args)],
                [run.files.date_id],
                [Code(str(source))],
            ]
        )
    return Table(
        ["#", "run", "model", "model arguments", "date", "results file"], rows, right=frozenset({0})
    )


def _task_table(entries: Sequence[Entry], files: dict[tuple[int, str], EntryFiles]) -> Table:
    rows: list[list[Text]] = []
    for entry in entries:
        n = entry.numbers
        links = files[(entry.position, entry.task)]
        diagram: Text = (
            [
                Link("PNG", f"{links.diagram}.png", slug(f"fig-{links.diagram}")),
                " ",
                Link("SVG", f"{links.diagram}.svg"),
            ]
            if links.diagram
            else ["none"]
        )
        breakdowns = BREAKDOWN.value(links)
        breakdown: Text = (
            [Link("table", breakdowns.file, slug(f"bd-{breakdowns.file}"))]
            if breakdowns
            else ["none"]
        )
        mce = fmt(n.mce)
        rows.append(
            [
                [entry.label],
                _n_cell(entry),
                [fmt(n.acc)],
                _ece_cell(entry),
                [f"({mce})" if entry.not_measured else mce],
                [fmt(n.brier)],
                [fmt(n.auroc)],
                [entry.origin],
                diagram,
                breakdown,
            ]
        )
    header = [
        "run",
        "n",
        "acc",
        f"ECE [{LEVEL} CI]",
        "MCE",
        "Brier",
        "AUROC",
        "numbers from",
        "diagram",
        "breakdown",
    ]
    return Table(header, rows, right=frozenset({1, 2, 3, 4, 5, 6}))


def _task_notes(entries: Sequence[Entry], options: ReportOptions) -> Paragraph:
    kinds = sorted({e.numbers.brier_kind for e in entries if e.numbers.brier_kind})
    binnings = sorted({e.numbers.binning for e in entries if e.numbers.source == "samples"})
    parts = []
    if binnings:
        parts.append(
            f"Recomputed from the samples: ECE and MCE with {' / '.join(binnings)}, {LEVEL} "
            f"bootstrap interval (seed {options.seed}). "
        )
    if any(e.numbers.source == "results" for e in entries):
        own = binning_text(cm.DEFAULT_N_BINS, cm.DEFAULT_STRATEGY)
        parts.append(
            f"Numbers from a results file are the task's own ({own}, seed {cm.DEFAULT_SEED}); "
            "there n counts documents. "
        )
    if kinds:
        parts.append(f"Brier: {' / '.join(kinds)}. ")
    if any(e.numbers.documents != e.numbers.n and e.numbers.n is not None for e in entries):
        parts.append("n counts token predictions; intervals resample whole documents. ")
    methods = list(dict.fromkeys(e.numbers.method for e in entries if e.numbers.method))
    if methods:
        parts.append(
            "Generated answers: n and acc count every answer; ECE, MCE, Brier and AUROC are "
            f"those of the task's first confidence method ({', '.join(methods)}) on the answers "
            "it scored, every method's in the table of confidence methods. "
        )
    return Paragraph(["".join(parts).strip()])


def _results_table(entries: Sequence[Entry]) -> list[Block]:
    """Every metric of ``calib_tasks.scoring.metric_table`` as the runs' results files report it
    (the
    tasks' own defaults): so a metric added to the table appears here without more code."""
    keys = [
        metric.key
        for metric in metric_table.METRICS
        if metric.method is None  # a generative task's per-method numbers: the methods table
        and any(f"{metric.key},none" in e.run.metrics.get(e.task, {}) for e in entries)
    ]
    if not keys:
        return []
    rows: list[list[Text]] = []
    for entry in entries:
        metrics = entry.run.metrics.get(entry.task, {})
        values = [metrics.get(f"{key},none") for key in keys]
        cells = [fmt(v) if isinstance(v, (int, float)) else "n/a" for v in values]
        rows.append([[entry.label], *[[cell] for cell in cells]])
    return [
        Paragraph(["Every calibration metric as the results file reports it:"]),
        Table(["run", *keys], rows, right=frozenset(range(1, len(keys) + 1))),
    ]


def summary_blocks(
    runs: Sequence[Run],
    labels: Sequence[str],
    order_by: str,
    entries: Sequence[Entry],
    files: dict[tuple[int, str], EntryFiles],
    comparison: str | None,
    notes: Sequence[str],
    options: ReportOptions,
) -> list[Block]:
    """The whole report. ``runs``/``labels`` are in report order (``order_by`` says what that
    order follows); ``files`` are the entries' diagrams and ``TABLES`` values by (position,
    task), each table's blocks following its task's tables or its entry's diagram;
    ``comparison`` is the comparison figure's stem, if one was drawn."""
    blocks: list[Block] = [
        Heading(TITLE, 1, "top"),
        Paragraph(
            [
                "Numbers are recomputed with calib_metrics from the per-sample records that "
                "lm_eval wrote with --log_samples (",
                binning_text(options.n_bins, options.binning),
                f", bootstrap seed {options.seed}); a run without them shows its results file's "
                f"numbers. ECE: expected calibration error (lower is better); interval: {LEVEL} "
                "bootstrap.",
            ]
        ),
    ]
    if runs:
        blocks += [
            Heading("Runs", 2, "runs"),
            Paragraph([f"In report order (by {order_by})."]),
            _runs_table(runs, labels),
        ]
    tasks = sorted({e.task for e in entries})
    values = {
        (task, table.name): [
            value
            for e in entries
            if e.task == task and (value := table.value(files[(e.position, task)])) is not None
        ]
        for task in tasks
        for table in TABLES
    }
    warnings = [item for e in entries for item in _alert_items(e, f"{e.task}, {e.label}")]
    warnings += [
        [Alert(f"{task}: {warning}")]
        for task in tasks
        for table in TABLES
        for warning in table.warnings(values[(task, table.name)])
    ]
    if warnings:
        blocks += [Heading("Warnings", 2, "warnings"), Bullets(warnings)]
    if notes:
        blocks += [Heading("Notes", 2, "notes"), Bullets([[note] for note in notes])]
    if comparison:
        blocks += [
            Heading("Comparison across runs", 2, "comparison"),
            Figure(f"{comparison}.png", f"{comparison}.svg", "ECE and accuracy per task and run"),
        ]
    if not entries:
        blocks.append(Paragraph(["Nothing could be reported: see the notes above."]))
    for task in tasks:
        task_entries = [e for e in entries if e.task == task]
        blocks.append(Heading(f"Task {task}", 2, slug(f"task-{task}")))
        alerts = [item for e in task_entries for item in _alert_items(e, e.label)]
        if alerts:
            blocks.append(Bullets(alerts))
        blocks += [
            _task_table(task_entries, files),
            _task_notes(task_entries, options),
            *_results_table(task_entries),
        ]
        for table in TABLES:
            blocks += table.task_blocks(values[(task, table.name)])
        for entry in task_entries:
            entry_files = files[(entry.position, entry.task)]
            if entry_files.diagram:
                blocks.append(
                    Heading(f"{task}: {entry.label}", 3, slug(f"fig-{entry_files.diagram}"))
                )
                blocks.append(
                    Figure(
                        f"{entry_files.diagram}.png",
                        f"{entry_files.diagram}.svg",
                        f"Reliability diagram of {task}, {entry.label}",
                    )
                )
            for table in TABLES:
                value = table.value(entry_files)
                if value is not None:
                    blocks += table.entry_blocks(entry, value)
    return blocks
