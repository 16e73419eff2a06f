"""The results of a finished point: its entries in the study's calib-report (computed once, by
``calib_tasks.report.build.write_report``) and what its name reveals."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from calib_tasks.report.entries import Entry
from calib_tasks.report.labels import model_size, training_step
from calib_tasks.study.spec import PointSpec


@dataclass(frozen=True)
class PointResults:
    """A finished point: its spec, what its name reveals, and its report entries by name (the
    task's, or ``<task>, filter <f>`` for a task of several filters)."""

    spec: PointSpec
    parameters: float | None
    step: int | None
    entries: dict[str, Entry]


def point_results(spec: PointSpec, entries: Sequence[Entry]) -> PointResults:
    """The results of the finished point ``spec`` from the report ``entries`` of its run. The
    parameter count is read from the model's name (``pythia-1.4b``; the GGUF file's name when
    one is given), else the point's name; the training step from ``revision=stepN``."""
    model_args = spec.harness_model_args()
    parameters = model_size(model_args)
    if parameters is None:
        parameters = model_size({"pretrained": spec.name})
    return PointResults(
        spec=spec,
        parameters=parameters,
        step=training_step(model_args),
        entries={entry.task: entry for entry in entries},
    )
