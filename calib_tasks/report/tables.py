"""The report's tables computed per entry from its records (``Entry.predictions``), each declared
in one place: an ``EntryTable`` listed in ``TABLES``, which ``build`` computes for every entry
and ``summary`` renders. Adding a table is a module computing its value (as ``rules.py`` does)
and its declaration here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import calib_metrics as cm
from calib_tasks.render.document import (
    Alert,
    Block,
    Collapsed,
    Figure,
    Heading,
    Paragraph,
    Table,
    Text,
)
from calib_tasks.render.markdown import render_markdown
from calib_tasks.render.reliability import ReliabilityData
from calib_tasks.render.risk_coverage import RiskCoverageData
from calib_tasks.render.text import LEVEL, binning_text, ece_with_interval, fmt
from calib_tasks.report.breakdown import BreakdownRow, breakdown, breakdown_fields
from calib_tasks.report.entries import Entry, ReportOptions
from calib_tasks.report.figures import (
    MethodPanel,
    write_method_reliability_figure,
    write_reliability_diagram,
    write_risk_coverage_figure,
)
from calib_tasks.report.methods import COLUMNS as METHOD_COLUMNS
from calib_tasks.report.methods import MethodRow, method_flip_notice, method_rows
from calib_tasks.report.recalibration import (
    DRAWN,
    Recalibration,
    method_recalibrations,
    recalibration,
)
from calib_tasks.report.rules import COLUMNS, WHY_SAME, RuleRow, flip_notice, rule_rows
from calib_tasks.scoring.metric_table import EQUAL_MASS

#: The report's folders of figures and of breakdown files.
FIGURES = "figures"
BREAKDOWNS = "breakdowns"

T = TypeVar("T")


def slug(text: str) -> str:
    """A file- and anchor-safe form of ``text``."""
    return re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-").lower() or "x"


def interval_text(interval: cm.ConfidenceInterval | None) -> str:
    """An estimate with its interval as plain text, ``n/a`` for none."""
    if interval is None:
        return "n/a"
    return ece_with_interval(interval.estimate, interval.low, interval.high)


def alert_paragraphs(entry: Entry) -> list[Block]:
    """One paragraph per marker of ``entry``."""
    return [Paragraph([Alert(alert)]) for alert in entry.alerts]


def _no_entry_blocks(entry: Entry, value: Any) -> list[Block]:
    return []


def _no_task_blocks(values: Sequence[Any]) -> list[Block]:
    return []


def _no_warnings(values: Sequence[Any]) -> list[str]:
    return []


@dataclass(frozen=True)
class EntryTable(Generic[T]):
    """A table of the report computed per entry. ``compute(entry, options, out_dir, name)`` is
    its value for ``entry`` with the report's ``options``, or None when there is none; it
    writes the table's files (if any) into the report folder ``out_dir``, named after the
    entry's ``name``. Its value is shown by ``entry_blocks(entry, value)``, after the entry's
    reliability diagram, and by ``task_blocks(values)``, the values of a task's entries in
    report order, after the task's tables; ``warnings(values)`` are sentences the report's
    warnings give for the task."""

    name: str
    compute: Callable[[Entry, ReportOptions, Path, str], T | None]
    entry_blocks: Callable[[Entry, T], list[Block]] = _no_entry_blocks
    task_blocks: Callable[[Sequence[T]], list[Block]] = _no_task_blocks
    warnings: Callable[[Sequence[T]], list[str]] = _no_warnings

    def value(self, files: EntryFiles) -> T | None:
        """This table's value in ``files``."""
        return cast("T | None", files.tables.get(self.name))


@dataclass(frozen=True)
class EntryFiles:
    """What was made for an entry: its reliability diagram (relative to the report folder, a
    stem without suffix) and the values of ``TABLES`` by name (a table without one missing)."""

    diagram: str | None
    tables: dict[str, object]


def entry_tables(
    entry: Entry, options: ReportOptions, out_dir: Path, name: str
) -> dict[str, object]:
    """The values of ``TABLES`` for ``entry`` by table name (their files written)."""
    values = {table.name: table.compute(entry, options, out_dir, name) for table in TABLES}
    return {key: value for key, value in values.items() if value is not None}


# Confidence rules x metrics, per task.


def _rule_rows(entry: Entry, options: ReportOptions, out_dir: Path, name: str) -> list[RuleRow]:
    return rule_rows(entry, options)


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


def _rules_blocks(values: Sequence[list[RuleRow]]) -> list[Block]:
    """The task's table of confidence rules x metrics (one row per run and rule), saying why
    rules coincide with the sum rule where they do and marking the rows of a rule that left
    records out (see the notes for which)."""
    rows = [row for value in values for row in value]
    notice = flip_notice(rows)
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
            [interval_text(row.ece_interval)],
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


def _flip_warnings(values: Sequence[list[RuleRow]]) -> list[str]:
    notice = flip_notice([row for value in values for row in value])
    return [notice] if notice else []


# Confidence methods x metrics, per generative task, with each entry's figures per method.

#: What the methods table calls a method's unscored answers when it has no count row.
NO_CONFIDENCE = "without a confidence"


@dataclass(frozen=True)
class Methods:
    """The methods table's value: the entry's rows, one per confidence method, and the stems of
    its figures (relative to the report folder): the reliability diagram of every method and
    the risk-coverage curves (None when no method scored an answer)."""

    rows: list[MethodRow]
    reliability: str
    risk_coverage: str | None


def _method_ece_text(row: MethodRow) -> str:
    return ece_with_interval(row.ece, row.ece_low, row.ece_high)


def _methods(entry: Entry, options: ReportOptions, out_dir: Path, name: str) -> Methods | None:
    """The entry's confidence methods (``methods.method_rows``) and their figures, drawn with
    the report's binning: one reliability panel per method and the risk-coverage curves."""
    rows = method_rows(entry, options)
    pool = entry.pool
    if not rows or pool is None:
        return None
    binning = binning_text(options.n_bins, options.binning)
    panels, curves = [], {}
    for row in rows:
        scored = pool.method(row.method.name)
        data = None
        stats = f"no confidence for any of the {row.of} answers"
        if scored is not None:
            data = ReliabilityData.from_predictions(
                scored.confidence, scored.correct, n_bins=options.n_bins, strategy=options.binning
            )
            curves[row.method.name] = RiskCoverageData.from_predictions(
                scored.confidence, scored.correct
            )
            of = f" of {row.of}" if row.n < row.of else ""
            ece = _method_ece_text(row)
            stats = f"n = {row.n}{of}, acc = {fmt(row.acc)}\nECE = {ece} ({LEVEL} CI)"
            if row.uninformative:
                stats += "\nNOT MEASURED: " + row.uninformative
        panels.append(MethodPanel(row.method.name, data, stats))
    title = f"{entry.task}: {entry.label}"
    reliability = f"{FIGURES}/reliability_methods__{name}"
    write_method_reliability_figure(
        out_dir / reliability, panels, title=f"{title}, per confidence method", binning=binning
    )
    risk_coverage = None
    if curves:
        risk_coverage = f"{FIGURES}/risk_coverage__{name}"
        write_risk_coverage_figure(
            out_dir / risk_coverage,
            curves,
            title=f"{title}, selective accuracy per confidence method",
            accuracy=float(pool.correct.mean()),
            n=pool.n,
        )
    return Methods(rows, reliability, risk_coverage)


def _unscored_cell(row: MethodRow) -> str:
    """How many answers the method left without a confidence: its count row's value of all
    answers (``answer_not_found: 3 of 12``), else how many it had none for."""
    if row.unscored_key is not None:
        return f"{row.unscored_key}: {row.unscored} of {row.of}"
    return f"{row.unscored} of {row.of} {NO_CONFIDENCE}" if row.unscored else "none"


def _method_ece_cell(row: MethodRow) -> Text:
    text = _method_ece_text(row)
    return [Alert("NOT MEASURED"), f" ({text})"] if row.uninformative else [text]


def _uninformative_cell(row: MethodRow) -> str:
    if not row.scored:
        return "n/a"
    return f"yes ({row.uninformative})" if row.uninformative else "no"


def _methods_blocks(values: Sequence[Methods]) -> list[Block]:
    """The task's table of confidence methods x metrics (one row per run and method), with the
    flip notice above it when the runs' order depends on the method."""
    rows = [row for value in values for row in value.rows]
    if not rows:
        return []
    task = rows[0].entry.task
    notice = method_flip_notice(rows)
    described = "; ".join(
        f"{m.name}: {m.description}" for m in dict.fromkeys(row.method for row in rows)
    )
    binning = rows[0].entry.numbers.binning
    words = [
        f"How sure the model is of its generated answer, each method's numbers on the answers "
        f"it gave a confidence ({described}), with the report's binning ({binning}; "
        "helm_ece_10_bin and helm_selective_acc_10 keep HELM's own); acc: of those answers; "
        "n/a: the method scored no answer.",
        "not scored: the answers a method could not score (answer_not_found: the filtered "
        "answer is no span of the generated text; verbalized_unparsed: the stated confidence "
        "holds no number), left out of its numbers."
        if any(row.unscored for row in rows)
        else "",
        "NOT MEASURED: the method's confidences carry no information (all equal), so its "
        "calibration errors (in parentheses) measure nothing."
        if any(row.uninformative for row in rows)
        else "",
    ]
    body: list[list[Text]] = [
        [
            [row.entry.label],
            [row.method.name],
            [str(row.n)],
            [_unscored_cell(row)],
            [fmt(row.acc)],
            _method_ece_cell(row),
            *[[fmt(row.values[column])] for column in METHOD_COLUMNS],
            [_uninformative_cell(row)],
        ]
        for row in rows
    ]
    header = ["run", "method", "n scored", "not scored", "acc", f"ECE [{LEVEL} CI]"]
    header += [*METHOD_COLUMNS, "uninformative_scores"]
    blocks: list[Block] = [
        Heading(f"Confidence methods of {task}", 3, slug(f"methods-{task}")),
        Paragraph([" ".join(part for part in words if part)]),
        Table(header, body, right=frozenset({2, 4, 5, 6, 7, 8, 9, 10})),
    ]
    if notice:
        blocks.insert(1, Paragraph([Alert(notice)]))
    return blocks


def _methods_warnings(values: Sequence[Methods]) -> list[str]:
    """The flip notice, and every method (other than the headline's, whose marker the entry
    carries) that scored no answer or whose confidences carry no information."""
    rows = [row for value in values for row in value.rows]
    warnings = [notice] if (notice := method_flip_notice(rows)) else []
    for row in rows:
        where = f"{row.entry.label}, {row.method.name} method"
        if not row.scored:
            warnings.append(
                f"{where}: no answer has a confidence ({_unscored_cell(row)}); its numbers are n/a"
            )
        elif row.uninformative and row.method.name != row.entry.numbers.method:
            warnings.append(
                f"{where}: NOT MEASURED: {row.uninformative} — its calibration errors measure "
                "nothing"
            )
    return warnings


def _method_figures_blocks(entry: Entry, value: Methods) -> list[Block]:
    """The entry's reliability diagram per confidence method and its risk-coverage curves."""
    blocks: list[Block] = [
        Heading(
            f"{entry.task}: {entry.label}, per confidence method",
            3,
            slug(f"fig-{value.reliability}"),
        ),
        Figure(
            f"{value.reliability}.png",
            f"{value.reliability}.svg",
            f"Reliability diagram of {entry.task}, {entry.label}, per confidence method",
        ),
    ]
    if value.risk_coverage:
        blocks.append(
            Figure(
                f"{value.risk_coverage}.png",
                f"{value.risk_coverage}.svg",
                f"Risk-coverage (selective accuracy) of {entry.task}, {entry.label}, per "
                "confidence method",
            )
        )
    return blocks


# Recalibration, per entry, with the reliability diagram after the recalibrator ``DRAWN``.


@dataclass(frozen=True)
class Recalibrated:
    """The recalibration table's value: the entry's recalibration and the stem of its
    reliability diagram after the recalibrator ``DRAWN`` (None when that was not fitted)."""

    recalibration: Recalibration
    diagram: str | None


def _recalibrated(
    entry: Entry, options: ReportOptions, out_dir: Path, name: str
) -> Recalibrated | None:
    """The entry's recalibration, drawing its reliability diagram after the recalibrator
    ``DRAWN`` for its kind of records (cross-fitted; the report's binning) when it was fitted."""
    recalibrated = recalibration(entry, options)
    if recalibrated is None or entry.predictions is None:
        return None
    drawn = DRAWN.get(entry.predictions.kind)
    row = next((r for r in recalibrated.rows[1:] if r.recalibrator.name == drawn), None)
    if row is None:
        return Recalibrated(recalibrated, None)
    stem = f"{FIGURES}/reliability_recalibrated__{name}"
    ece = ece_with_interval(row.ece.estimate, row.ece.low, row.ece.high)
    write_reliability_diagram(
        out_dir / stem,
        cm.reliability_bins(
            row.confidence, row.correct, n_bins=options.n_bins, strategy=options.binning
        ),
        title=f"{entry.task}: {entry.label}, after cross-fitted {drawn} scaling",
        stats=f"n = {row.correct.size}, ECE = {ece} ({LEVEL} CI)",
        binning=binning_text(options.n_bins, options.binning),
        observed=(float(row.confidence.min()), float(row.confidence.max()))
        if options.binning == EQUAL_MASS
        else None,
    )
    return Recalibrated(recalibrated, stem)


def _recalibration_blocks(entry: Entry, value: Recalibrated) -> list[Block]:
    """The entry's calibration after each cross-fitted recalibrator, and its temperature."""
    recalibrated = value.recalibration
    if len(recalibrated.rows) < 2:
        return []
    body: list[list[Text]] = [
        [
            [row.recalibrator.name if row.recalibrator else "as measured"],
            [interval_text(row.ece)],
            [interval_text(row.sce)],
            [interval_text(row.brier)],
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
            shown = interval_text(interval)
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
    if value.diagram:
        stem = value.diagram
        blocks.append(
            Figure(f"{stem}.png", f"{stem}.svg", f"Reliability after recalibration, {entry.task}")
        )
    return blocks


def _method_recalibrations(
    entry: Entry, options: ReportOptions, out_dir: Path, name: str
) -> dict[str, Recalibration] | None:
    """Per confidence method of a generation entry, its answers' recalibration."""
    return method_recalibrations(entry, options) or None


def _method_recalibration_blocks(entry: Entry, value: dict[str, Recalibration]) -> list[Block]:
    """The entry's calibration after each cross-fitted recalibrator of the top-label
    confidence, per confidence method."""
    body: list[list[Text]] = [
        [
            [method],
            [row.recalibrator.name if row.recalibrator else "as measured"],
            [interval_text(row.ece)],
            [interval_text(row.brier)],
        ]
        for method, recalibrated in value.items()
        for row in recalibrated.rows
    ]
    folds = dict.fromkeys(r.folds for r in value.values())
    skipped = [f"{m}, {why}" for m, r in value.items() for why in r.skipped]
    words = [
        "Recalibrated per confidence method, on the answers it scored, cross-fitted (each "
        f"answer's map fitted on the other folds; {'; '.join(folds)}; {LEVEL} intervals "
        "resample the answers of the out-of-fold predictions). Brier: of the top label. "
    ]
    if skipped:
        words.append("Not fitted: " + "; ".join(skipped) + ".")
    return [
        Heading(
            f"Recalibration of {entry.task}, {entry.label}, per confidence method",
            3,
            slug(f"recal-methods-{entry.task}-{entry.position}-{entry.label}"),
        ),
        Paragraph(["".join(words).strip()]),
        Table(["method", "recalibrator", "ECE", "Brier"], body, right=frozenset({2, 3})),
    ]


# Breakdowns, per entry, also written to a Markdown file of their own.


@dataclass(frozen=True)
class Breakdowns:
    """The breakdowns table's value: the entry's breakdown file (relative to the report folder)
    and its tables by field, in ``BREAKDOWN_FIELDS`` order."""

    file: str
    tables: dict[str, list[BreakdownRow]]


def breakdown_table(field: str, rows: Sequence[BreakdownRow]) -> Table:
    """A breakdown as a table: one row per group."""
    body: list[list[Text]] = [
        [[row.group], [str(row.n)], [fmt(row.acc)], [fmt(row.mean_confidence)], [fmt(row.ece)]]
        for row in rows
    ]
    return Table([field, "n", "acc", "mean confidence", "ECE"], body, right=frozenset({1, 2, 3, 4}))


def breakdown_document(entry: Entry, tables: dict[str, list[BreakdownRow]]) -> list[Block]:
    """The Markdown file of one entry's breakdowns."""
    blocks: list[Block] = [
        Heading(f"Breakdown of {entry.task}, {entry.label}", 1, "top"),
        Paragraph(
            [
                f"ECE with {entry.numbers.binning}, computed on each group's records "
                "alone (small groups give noisy ECE)."
            ]
        ),
        *alert_paragraphs(entry),
    ]
    for field, rows in tables.items():
        blocks += [Heading(f"Per {field}", 2, field), breakdown_table(field, rows)]
    return blocks


def _breakdowns(
    entry: Entry, options: ReportOptions, out_dir: Path, name: str
) -> Breakdowns | None:
    """The entry's breakdowns by every field its records carry, written to their file; None
    when there are none."""
    pool = entry.predictions
    if pool is None or not (fields := breakdown_fields(pool)):
        return None
    value = Breakdowns(
        f"{BREAKDOWNS}/{name}.md", {field: breakdown(pool, field, options) for field in fields}
    )
    text = render_markdown(breakdown_document(entry, value.tables))
    (out_dir / value.file).write_text(text, encoding="utf-8")
    return value


def _breakdown_blocks(entry: Entry, value: Breakdowns) -> list[Block]:
    """The entry's breakdowns, folded away."""
    blocks = alert_paragraphs(entry)
    for field, rows in value.tables.items():
        blocks.append(Heading(f"Per {field}", 4, slug(f"bd-{value.file}-{field}")))
        blocks.append(breakdown_table(field, rows))
    return [
        Collapsed(f"Breakdown of {entry.task}, {entry.label}", slug(f"bd-{value.file}"), blocks)
    ]


RULES = EntryTable[list[RuleRow]](
    "rules", _rule_rows, task_blocks=_rules_blocks, warnings=_flip_warnings
)
RECALIBRATION = EntryTable[Recalibrated](
    "recalibration", _recalibrated, entry_blocks=_recalibration_blocks
)
BREAKDOWN = EntryTable[Breakdowns]("breakdowns", _breakdowns, entry_blocks=_breakdown_blocks)
METHODS = EntryTable[Methods](
    "methods",
    _methods,
    entry_blocks=_method_figures_blocks,
    task_blocks=_methods_blocks,
    warnings=_methods_warnings,
)
METHOD_RECALIBRATION = EntryTable[dict[str, Recalibration]](
    "method_recalibration", _method_recalibrations, entry_blocks=_method_recalibration_blocks
)

#: Every per-entry table, in the order their blocks appear.
TABLES: tuple[EntryTable[Any], ...] = (
    RULES,
    METHODS,
    RECALIBRATION,
    METHOD_RECALIBRATION,
    BREAKDOWN,
)
