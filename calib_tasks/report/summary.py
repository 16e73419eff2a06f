"""The report as a document: what summary.md and report.html say, in the order a person reads it.

Per task a table of runs (n, accuracy, ECE with its interval, MCE, Brier, AUROC, where the
numbers come from, links to the diagram and breakdown), then the reliability diagrams; before
that the runs, the warnings, the notes and the comparison across runs.

An entry's markers (``Entry.alerts``) are shown wherever its numbers are: in the warnings at the
top, above its task's table, in its row (the n of INCOMPLETE numbers carries the marker; the ECE
and MCE of NOT MEASURED ones are in parentheses after the marker) and in its breakdowns.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import calib_metrics as cm
from calib_tasks.render.document import (
    Alert,
    Block,
    Bullets,
    Code,
    Collapsed,
    Figure,
    Heading,
    Link,
    Paragraph,
    Table,
    Text,
)
from calib_tasks.render.text import LEVEL, binning_text, ece_with_interval, fmt
from calib_tasks.report.breakdown import BreakdownRow
from calib_tasks.report.entries import Entry, ReportOptions
from calib_tasks.report.recalibration import Recalibration
from calib_tasks.report.rules import COLUMNS, WHY_SAME, RuleRow, flip_notice
from calib_tasks.report.runs import Run
from calib_tasks.scoring import metric_table

TITLE = "Calibration report"
NOT_MEASURED = "NOT MEASURED"


@dataclass(frozen=True)
class EntryFiles:
    """The files written for an entry, relative to the report folder (stems without suffix)."""

    diagram: str | None
    breakdown: str | None
    breakdown_tables: dict[str, list[BreakdownRow]]
    rules: list[RuleRow]
    recalibration: Recalibration | None
    recalibrated_diagram: str | None


def slug(text: str) -> str:
    """A file- and anchor-safe form of ``text``."""
    return re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-").lower() or "x"


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
        breakdown: Text = (
            [Link("table", links.breakdown, slug(f"bd-{links.breakdown}"))]
            if links.breakdown
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
    return Paragraph(["".join(parts).strip()])


def _results_table(entries: Sequence[Entry]) -> list[Block]:
    """Every metric of ``calib_tasks.scoring.metric_table`` as the runs' results files report it
    (the
    tasks' own defaults): so a metric added to the table appears here without more code."""
    keys = [
        metric.key
        for metric in metric_table.METRICS
        if any(f"{metric.key},none" in e.run.metrics.get(e.task, {}) for e in entries)
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


def _interval_text(interval: cm.ConfidenceInterval | None) -> str:
    if interval is None:
        return "n/a"
    return ece_with_interval(interval.estimate, interval.low, interval.high)


def _rule_cell(row: RuleRow) -> Text:
    """The rule's name, with an INCOMPLETE marker when it left some of the entry's records out."""
    if row.n == row.of:
        return [row.rule.name]
    return [row.rule.name, " ", Alert(f"INCOMPLETE: {row.n} of {row.of} records")]


def _same_as_sum_text(rows: Sequence[RuleRow]) -> str:
    """Why rules give the sum rule's numbers, for every rule that does so for some run."""
    runs: dict[str, list[str]] = {}
    for row in rows:
        if row.same_as_sum:
            runs.setdefault(row.rule.name, []).append(row.entry.label)
    return " ".join(
        f"The {name} rule gives the sum rule's option probabilities in every record "
        f"({', '.join(labels)}): {WHY_SAME[name]}."
        for name, labels in runs.items()
    )


def _rules_blocks(rows: Sequence[RuleRow], notice: str | None) -> list[Block]:
    """The task's table of confidence rules x metrics (one row per run and rule), saying why
    rules coincide with the sum rule where they do and marking the rows of a rule that left
    records out (see the notes for which)."""
    if not rows or {row.rule.name for row in rows} == {"sum"} and notice is None:
        return []
    described = "; ".join(
        f"{r.name}: {r.description}" for r in dict.fromkeys(row.rule for row in rows)
    )
    words = [
        "How confidence is read off the model, each rule's numbers from the same records, with "
        f"the report's binning ({described}); n/a: the rule's probabilities do not sum to 1 "
        "over the options.",
        "A rule marked INCOMPLETE is computed only on the records that hold usable "
        "probabilities under it (the notes name the lines a task's samples file left out)."
        if any(row.n < row.of for row in rows)
        else "",
        _same_as_sum_text(rows),
    ]
    body: list[list[Text]] = [
        [
            [row.entry.label],
            _rule_cell(row),
            [fmt(row.acc)],
            [_interval_text(row.ece_interval)],
            *[[fmt(row.values[column])] for column in COLUMNS[1:]],
        ]
        for row in rows
    ]
    blocks: list[Block] = [
        Heading(
            f"Confidence rules of {rows[0].entry.task}", 3, slug(f"rules-{rows[0].entry.task}")
        ),
        Paragraph([" ".join(part for part in words if part)]),
        Table(
            ["run", "rule", "acc", f"ECE [{LEVEL} CI]", *COLUMNS[1:]],
            body,
            right=frozenset(range(2, len(COLUMNS) + 3)),
        ),
    ]
    if notice:
        blocks.insert(1, Paragraph([Alert(notice)]))
    return blocks


def _recalibration_blocks(entry: Entry, files: EntryFiles) -> list[Block]:
    """The entry's calibration after each cross-fitted recalibrator, and its temperature."""
    recalibrated = files.recalibration
    if recalibrated is None or len(recalibrated.rows) < 2:
        return []
    body: list[list[Text]] = [
        [
            [row.recalibrator.name if row.recalibrator else "as measured"],
            [_interval_text(row.ece)],
            [_interval_text(row.sce)],
            [_interval_text(row.brier)],
        ]
        for row in recalibrated.rows
    ]
    words = [
        f"Recalibrated, cross-fitted (each item's map fitted on the other folds; "
        f"{recalibrated.folds}; {LEVEL} intervals resample the items of the out-of-fold "
        "predictions). Brier: of the top label. "
    ]
    if recalibrated.temperature is not None:
        t = recalibrated.temperature
        interval = recalibrated.temperature_interval
        if interval is not None:
            shown = _interval_text(interval)
        elif math.isfinite(t):
            shown = f"{fmt(t)} (no interval: on some resamples no finite temperature is best)"
        else:
            shown = "inf"
        words.append(
            f"Temperature fitted on all documents: {shown} (> 1: overconfident; inf: the scores "
            "say nothing of the gold option, the best map makes every option equally likely). "
        )
    if recalibrated.skipped:
        words.append("Not fitted: " + "; ".join(recalibrated.skipped) + ".")
    blocks: list[Block] = [
        Heading(
            f"Recalibration of {entry.task}, {entry.label}",
            3,
            slug(f"recal-{entry.task}-{entry.position}-{entry.label}"),
        ),
        Paragraph(["".join(words).strip()]),
        Table(["recalibrator", "ECE", "SCE", "Brier"], body, right=frozenset({1, 2, 3})),
    ]
    if files.recalibrated_diagram:
        stem = files.recalibrated_diagram
        blocks.append(
            Figure(f"{stem}.png", f"{stem}.svg", f"Reliability after recalibration, {entry.task}")
        )
    return blocks


def _alert_paragraphs(entry: Entry) -> list[Block]:
    return [Paragraph([Alert(alert)]) for alert in entry.alerts]


def _breakdown_blocks(files: EntryFiles) -> list[Block]:
    blocks: list[Block] = []
    for field, rows in files.breakdown_tables.items():
        blocks.append(Heading(f"Per {field}", 4, slug(f"bd-{files.breakdown}-{field}")))
        blocks.append(breakdown_table(field, rows))
    return blocks


def breakdown_table(field: str, rows: Sequence[BreakdownRow]) -> Table:
    """A breakdown as a table: one row per group."""
    body: list[list[Text]] = [
        [[row.group], [str(row.n)], [fmt(row.acc)], [fmt(row.mean_confidence)], [fmt(row.ece)]]
        for row in rows
    ]
    return Table([field, "n", "acc", "mean confidence", "ECE"], body, right=frozenset({1, 2, 3, 4}))


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
    order follows); ``comparison`` is the comparison figure's stem, if one was drawn."""
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
    rule_rows = {
        task: [row for e in entries if e.task == task for row in files[(e.position, e.task)].rules]
        for task in sorted({e.task for e in entries})
    }
    notices = {task: flip_notice(rows) for task, rows in rule_rows.items()}
    warnings = [item for e in entries for item in _alert_items(e, f"{e.task}, {e.label}")]
    warnings += [[Alert(f"{task}: {notice}")] for task, notice in notices.items() if notice]
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
    for task in sorted({e.task for e in entries}):
        task_entries = [e for e in entries if e.task == task]
        blocks.append(Heading(f"Task {task}", 2, slug(f"task-{task}")))
        alerts = [item for e in task_entries for item in _alert_items(e, e.label)]
        if alerts:
            blocks.append(Bullets(alerts))
        blocks += [
            _task_table(task_entries, files),
            _task_notes(task_entries, options),
            *_results_table(task_entries),
            *_rules_blocks(rule_rows[task], notices[task]),
        ]
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
            blocks += _recalibration_blocks(entry, entry_files)
            if entry_files.breakdown:
                blocks.append(
                    Collapsed(
                        f"Breakdown of {task}, {entry.label}",
                        slug(f"bd-{entry_files.breakdown}"),
                        _alert_paragraphs(entry) + _breakdown_blocks(entry_files),
                    )
                )
    return blocks


def breakdown_document(entry: Entry, files: EntryFiles) -> list[Block]:
    """The Markdown file of one entry's breakdowns."""
    blocks: list[Block] = [
        Heading(f"Breakdown of {entry.task}, {entry.label}", 1, "top"),
        Paragraph(
            [
                f"ECE with {entry.numbers.binning}, computed on each group's records "
                "alone (small groups give noisy ECE)."
            ]
        ),
        *_alert_paragraphs(entry),
    ]
    for field, rows in files.breakdown_tables.items():
        blocks += [Heading(f"Per {field}", 2, field), breakdown_table(field, rows)]
    return blocks
