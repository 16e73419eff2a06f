"""The study's own outputs next to calib-report's: ECE and accuracy against parameter count
(``ece_vs_params``, log x) and against training step (``ece_vs_step``), one line per task, and
``study.md``, a table of every point with its status and numbers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from calib_tasks.render.document import Block, Code, Figure, Heading, Paragraph, Table
from calib_tasks.render.markdown import render_markdown
from calib_tasks.render.text import LEVEL, binning_text, compact_number, ece_with_interval, fmt
from calib_tasks.report.entries import ReportOptions
from calib_tasks.study.figures import Rows, SeriesPoint, write_metric_grid
from calib_tasks.study.results import PointResults
from calib_tasks.study.runner import PointOutcome
from calib_tasks.study.spec import DEFAULT_BACKEND

PARAMS_FIGURE = "ece_vs_params"
STEP_FIGURE = "ece_vs_step"
STUDY_SUMMARY = "study.md"


def _rows(
    results: Sequence[PointResults],
    x_of: Callable[[PointResults], float | None],
    split_of: Callable[[PointResults], str],
) -> Rows:
    """One row of series: a line per task (per task and ``split_of`` value when those differ)."""
    usable = [r for r in results if x_of(r) is not None]
    splits = {split_of(r) for r in usable}
    series: dict[str, list[SeriesPoint]] = {}
    for result in usable:
        for task, entry in sorted(result.entries.items()):
            label = task if len(splits) == 1 else f"{task} ({split_of(result)})"
            series.setdefault(label, []).append(SeriesPoint(float(x_of(result)), entry.numbers))
    return {"": dict(sorted(series.items()))}


def _variant(result: PointResults) -> str:
    """What sets a point apart besides its size and step (dtype, adapter, backend, other
    model arguments), so that such points get lines of their own."""
    spec = result.spec
    parts = [
        f"dtype {spec.dtype}" if spec.dtype else "",
        f"peft {Path(spec.peft).name}" if spec.peft else "",
        spec.backend if spec.backend != DEFAULT_BACKEND else "",
        *(f"{key}={value}" for key, value in sorted(spec.model_args.items())),
    ]
    return ", ".join(part for part in parts if part)


def _split(*parts: str) -> str:
    return ", ".join(part for part in parts if part)


def _distinct(values: Iterable[float | None]) -> int:
    return len({v for v in values if v is not None})


def write_scaling_figures(results: Sequence[PointResults], out_dir: Path) -> list[str]:
    """Write the figures that the points allow (two or more parameter counts; two or more
    training steps) into ``out_dir``; returns their stems relative to ``out_dir``."""
    written = []
    if _distinct(r.parameters for r in results) >= 2:
        rows = _rows(
            results,
            lambda r: r.parameters,
            lambda r: _split(f"step {r.step}" if r.step is not None else "final", _variant(r)),
        )
        write_metric_grid(
            out_dir / PARAMS_FIGURE,
            rows,
            title="Calibration against model size",
            x_label="parameters (from the model name, log scale)",
            log_x=True,
            tick_text=compact_number,
        )
        written.append(PARAMS_FIGURE)
    known = [r.step for r in results if r.step is not None]
    if _distinct(known) >= 2:
        log_steps = max(known) >= 20 * max(min(known), 1)
        rows = _rows(
            results,
            lambda r: r.step,
            lambda r: _split(
                compact_number(r.parameters) if r.parameters else r.spec.model, _variant(r)
            ),
        )
        write_metric_grid(
            out_dir / STEP_FIGURE,
            rows,
            title="Calibration against training step",
            x_label="training step (revision stepN" + (", log scale)" if log_steps else ")"),
            log_x=log_steps,
            tick_text=compact_number,
        )
        written.append(STEP_FIGURE)
    return written


def _status_text(outcome: PointOutcome, published: bool) -> str:
    """What became of a point: this run's outcome, and whether its results are on disk now
    (``published``), which another run of the study may have changed since."""
    if published:
        if outcome.status == "done":
            return f"evaluated ({outcome.seconds:.1f} s)"
        return "finished earlier" if outcome.status == "skipped" else "finished by another run"
    if outcome.finished:
        return "results replaced by another run since, with other settings; not reported"
    return f"{outcome.status.upper()}: {outcome.reason}"


def study_summary(
    outcomes: Sequence[PointOutcome],
    results: dict[str, PointResults],
    figures: Sequence[str],
    options: ReportOptions,
) -> str:
    """``study.md``: the figures, then one row per point (status, size, step, and per task
    ECE with its interval and accuracy), in the study file's order; ``results`` maps the names
    of the points published on disk to their results, whose numbers were recomputed with
    ``options``."""
    tasks = sorted({task for result in results.values() for task in result.entries})
    header = ["point", "model", "revision", "parameters", "step", "status"]
    header += [f"{task} {what}" for task in tasks for what in (f"ECE [{LEVEL} CI]", "acc")]
    rows = []
    for outcome in outcomes:
        spec = outcome.spec
        result = results.get(spec.name) if spec else None
        cells = [
            [outcome.label if spec is None else spec.name],
            [Code(spec.model)] if spec else [""],
            [spec.revision or ""] if spec else [""],
            [compact_number(result.parameters) if result and result.parameters else ""],
            [str(result.step) if result and result.step is not None else ""],
            [_status_text(outcome, result is not None)],
        ]
        for task in tasks:
            entry = result.entries.get(task) if result else None
            n = entry.numbers if entry else None
            cells.append([ece_with_interval(n.ece, n.ece_low, n.ece_high) if n else ""])
            cells.append([fmt(n.acc) if n else ""])
        rows.append(cells)
    blocks: list[Block] = [
        Heading("Study", 1, "study"),
        Paragraph(
            [
                "Numbers recomputed from each point's samples as calib-report does ("
                f"{binning_text(options.n_bins, options.binning)}, {LEVEL} bootstrap interval, "
                f"seed {options.seed}); per-task diagrams and breakdowns are in ",
                Code("summary.md"),
                ". Parameter counts are read from model names, steps from revision=stepN.",
            ]
        ),
    ]
    blocks += [Figure(f"{stem}.png", f"{stem}.svg", stem.replace("_", " ")) for stem in figures]
    right = frozenset(range(3, len(header)))
    blocks.append(Table(header, rows, right=right - {5}))
    return render_markdown(blocks)
