"""The numbers of finished points, read with calib-report's own readers (``calib_tasks.report``):
recomputed from the samples files exactly as the report recomputes them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from calib_tasks.report.entries import Entry, ReportOptions, task_entry
from calib_tasks.report.labels import model_size, training_step
from calib_tasks.report.notes import Notes
from calib_tasks.report.runs import find_run_files, read_run
from calib_tasks.study.spec import PointSpec


@dataclass(frozen=True)
class PointResults:
    """A finished point: its spec, what its name reveals, and one report entry per task."""

    spec: PointSpec
    parameters: float | None
    step: int | None
    entries: dict[str, Entry]


def point_entries(
    folder: Path, label: str, options: ReportOptions | None = None
) -> dict[str, Entry]:
    """The report entry of every calib task of the latest harness run in ``folder`` (none when
    the folder holds no run); unusable parts are skipped as calib-report skips them."""
    notes = Notes()
    runs = find_run_files([folder], notes)
    if not runs:
        return {}
    run = read_run(max(runs, key=lambda files: files.date_id), notes)
    entries = {}
    for task in run.tasks:
        entry = task_entry(0, run, label, task, options or ReportOptions(), notes)
        if entry is not None:
            entries[task] = entry
    return entries


def read_point(spec: PointSpec, folder: Path) -> PointResults:
    """The results of the finished point ``spec`` in ``folder``. The parameter count is read
    from the model's name (``pythia-1.4b``; the GGUF file's name when one is given), else the
    point's name; the training step from ``revision=stepN``."""
    model_args = spec.harness_model_args()
    parameters = model_size(model_args)
    if parameters is None:
        parameters = model_size({"pretrained": spec.name})
    return PointResults(
        spec=spec,
        parameters=parameters,
        step=training_step(model_args),
        entries=point_entries(folder, spec.name),
    )
