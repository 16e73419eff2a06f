"""ECE and accuracy against epoch, one line per method (SFT -> DPO as one continued line), per
task: the figure ``ece_vs_epoch`` and the table ``comparison.md`` of a calib-tune run.

Epoch 0 is the base model (shared by every method). For a task whose records name the fact
(``relation`` and ``sub_label``, as calib_facts does), a second row reports the facts that the
tuning data does not contain (the examples' ``relation``/``sub_label`` sources), recomputed with
calib-report's numbers: facts seen in tuning measure memorisation as much as calibration.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import calib_metrics as cm
from calib_tasks.render.document import Block, Code, Figure, Heading, Paragraph, Table
from calib_tasks.render.markdown import render_markdown
from calib_tasks.render.text import LEVEL, binning_text, ece_with_interval, fmt
from calib_tasks.report.entries import Entry, ReportOptions
from calib_tasks.report.numbers import TaskNumbers, pool_numbers
from calib_tasks.study.figures import SeriesPoint, write_metric_grid
from calib_tasks.tune.data import Example

FIGURE = "ece_vs_epoch"
TABLE = "comparison.md"
METHOD_LABELS = {
    "full": "full fine-tuning",
    "lora": "LoRA",
    "dpo": "DPO",
    "dpo_lora": "LoRA DPO",
    "full.dpo": "full SFT -> DPO",
    "lora.dpo": "LoRA SFT -> DPO",
}
Fact = tuple[str, str]


def seen_facts(examples: Sequence[Example]) -> set[Fact]:
    """The (relation, sub_label) pairs the tuning examples were written from."""
    return {
        (str(e.source["relation"]), str(e.source["sub_label"]))
        for e in examples
        if "relation" in e.source and "sub_label" in e.source
    }


def held_out_numbers(
    entry: Entry, seen: Collection[Fact], options: ReportOptions
) -> TaskNumbers | None:
    """The entry's numbers on the records whose fact is not in ``seen``, recomputed with
    ``options`` (those of the entry); None when its records do not name facts, or none or all
    are seen."""
    pool = entry.pool
    if not seen or pool is None:
        return None
    relations, subjects = pool.field_values("relation"), pool.field_values("sub_label")
    if relations is None or subjects is None:
        return None
    held = [(str(r), str(s)) not in seen for r, s in zip(relations, subjects, strict=True)]
    if not any(held) or all(held):
        return None
    return pool_numbers(pool.select(held), options)


@dataclass(frozen=True)
class Curves:
    """Row title -> method -> epoch -> numbers, recomputed from the samples with ``options``."""

    rows: dict[str, dict[str, dict[int, TaskNumbers]]]
    options: ReportOptions


def curves(
    entries: Mapping[str, Mapping[int, Mapping[str, Entry]]],
    seen: Collection[Fact],
    options: ReportOptions,
) -> Curves:
    """Arrange ``entries`` (method -> epoch -> task -> entry, recomputed with ``options``) by
    task, adding the held-out row of fact tasks (see the module docstring)."""
    rows: dict[str, dict[str, dict[int, TaskNumbers]]] = {}
    for method, by_epoch in entries.items():
        for epoch, by_task in sorted(by_epoch.items()):
            for task, entry in sorted(by_task.items()):
                rows.setdefault(task, {}).setdefault(method, {})[epoch] = entry.numbers
                held = held_out_numbers(entry, seen, options)
                if held is not None:
                    title = f"{task}, held-out facts"
                    rows.setdefault(title, {}).setdefault(method, {})[epoch] = held
    return Curves(dict(sorted(rows.items())), options)


def write_figure(curves: Curves, out_dir: Path) -> str:
    """Write ``ece_vs_epoch.png``/``.svg`` into ``out_dir``; returns the stem."""
    rows = {
        title: {
            METHOD_LABELS.get(method, method): [
                SeriesPoint(float(epoch), numbers) for epoch, numbers in sorted(points.items())
            ]
            for method, points in by_method.items()
        }
        for title, by_method in curves.rows.items()
    }
    write_metric_grid(
        out_dir / FIGURE,
        rows,
        title="Calibration during alignment, per method (epoch 0 = base)",
        x_label="epoch",
        log_x=False,
        tick_text=lambda x: f"{x:g}",
    )
    return FIGURE


def _table(by_method: Mapping[str, Mapping[int, TaskNumbers]]) -> Table:
    methods = list(by_method)
    header = ["epoch"]
    for method in methods:
        label = METHOD_LABELS.get(method, method)
        header += [f"{label} ECE [{LEVEL} CI]", f"{label} acc", f"{label} conf", f"{label} n"]
    epochs = sorted({epoch for points in by_method.values() for epoch in points})
    rows = []
    for epoch in epochs:
        cells = [[str(epoch)]]
        for method in methods:
            n = by_method[method].get(epoch)
            if n is None:
                cells += [[""], [""], [""], [""]]
                continue
            cells += [
                [ece_with_interval(n.ece, n.ece_low, n.ece_high)],
                [fmt(n.acc)],
                [fmt(n.mean_confidence)],
                [str(n.n) if n.n is not None else "n/a"],
            ]
        rows.append(cells)
    return Table(header, rows, right=frozenset(range(1, len(header))))


def comparison_markdown(curves: Curves, figure: str, setup: Sequence[str]) -> str:
    """``comparison.md``: the run's ``setup`` lines, the figure and one table per row."""
    options = curves.options
    blocks: list[Block] = [
        Heading("Alignment: calibration per method and epoch", 1, "comparison"),
        Paragraph(
            [
                f"ECE with {binning_text(options.n_bins, options.binning)} and its {LEVEL} "
                f"bootstrap interval ({cm.DEFAULT_N_RESAMPLES:,} resamples, seed "
                f"{options.seed}), accuracy, mean confidence and n, per task and epoch; epoch 0 "
                "is the base model; a method chained after SFT (SFT -> DPO) shows the SFT "
                "run's epochs, then its DPO epochs counted on. Rows named \u201cheld-out "
                "facts\u201d keep only the facts whose relation and subject are not among the "
                "tuning examples' sources. "
                "Per-checkpoint reliability diagrams: ",
                Code("eval/report/summary.md"),
                ".",
            ]
        ),
        *[Paragraph([line]) for line in setup],
        Figure(f"{figure}.png", f"{figure}.svg", "ECE and accuracy against epoch"),
    ]
    for title, by_method in curves.rows.items():
        blocks += [Heading(title, 2, title), _table(by_method)]
    return render_markdown(blocks)
