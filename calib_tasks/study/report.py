"""The study's report folder: calib-report over the points published on disk (called as a
library), and the study's own figures and study.md made from the entries that report computed.

Concurrent runs of one study each write the report, so the report is written under the
study's report lock: built into a folder beside ``report/`` from what is on disk at that
moment, then swapped in for it. The last writer's report wins whole; a build that fails leaves
the previous report as it was.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from calib_tasks.report.build import ReportResult, write_report
from calib_tasks.report.entries import ReportOptions
from calib_tasks.study.layout import StudyLayout
from calib_tasks.study.lifetime import take_lock
from calib_tasks.study.results import PointResults, point_results
from calib_tasks.study.runner import PointOutcome, is_published
from calib_tasks.study.scaling import STUDY_SUMMARY, study_summary, write_scaling_figures
from calib_tasks.study.spec import PointSpec


@dataclass(frozen=True)
class StudyReport:
    """What ``write_study_report`` wrote: calib-report's result over the published points (its
    paths those of the report folder), and the results of those points by name."""

    report: ReportResult
    results: dict[str, PointResults]


def _published(outcomes: Sequence[PointOutcome], layout: StudyLayout) -> list[PointSpec]:
    """The points of ``outcomes`` whose folders hold results evaluated with the settings of
    this run, whichever run evaluated them."""
    return [
        o.spec
        for o in outcomes
        if o.spec is not None
        and o.evaluation is not None
        and is_published(layout.point_dir(o.spec.name), o.evaluation)
    ]


def _build(
    points: Sequence[PointSpec],
    outcomes: Sequence[PointOutcome],
    layout: StudyLayout,
    out: Path,
) -> tuple[StudyReport, list[str]]:
    """calib-report over ``points`` (labelled with their names, default ``ReportOptions``),
    the study's figures and study.md, written into ``out``; returns what was reported and the
    stems of the figures."""
    folders = {spec.name: layout.point_dir(spec.name) for spec in points}
    names = {folder: name for name, folder in folders.items()}
    report = write_report(list(folders.values()), out, ReportOptions(), names)
    results = {
        spec.name: point_results(spec, report.entries_under(folders[spec.name])) for spec in points
    }
    figures = write_scaling_figures(list(results.values()), out)
    summary = study_summary(outcomes, results, figures, report.options)
    (out / STUDY_SUMMARY).write_text(summary, encoding="utf-8")
    return StudyReport(report, results), figures


def _swap_in(new: Path, layout: StudyLayout) -> None:
    """Make the folder ``new`` the study's report folder, removing the one it replaces."""
    shutil.rmtree(layout.report_old, ignore_errors=True)
    if not layout.report_dir.exists():
        new.rename(layout.report_dir)
        return
    layout.report_dir.rename(layout.report_old)
    new.rename(layout.report_dir)
    shutil.rmtree(layout.report_old)


def write_study_report(outcomes: Sequence[PointOutcome], layout: StudyLayout) -> StudyReport | None:
    """calib-report over every point of ``outcomes`` published on disk with the settings of
    this run (evaluated by this run or by another, such as a concurrent run of the study), the
    study's figures and study.md, into the study's report folder, whole (see the module
    docstring); None when no such point is on disk (then nothing is written). Waits while
    another run writes the report; raises ``OSError`` when the report cannot be written."""
    layout.report_lock.parent.mkdir(parents=True, exist_ok=True)
    with take_lock(layout.report_lock, wait=True):
        points = _published(outcomes, layout)
        if not points:
            return None
        out = layout.report_dir
        print(f"calib-report over {len(points)} finished point(s) into {out}", flush=True)
        shutil.rmtree(layout.report_partial, ignore_errors=True)
        try:
            written, figures = _build(points, outcomes, layout, layout.report_partial)
            _swap_in(layout.report_partial, layout)
        finally:
            shutil.rmtree(layout.report_partial, ignore_errors=True)  # after a failed build
    report = dataclasses.replace(
        written.report,
        summary=out / written.report.summary.name,
        html=out / written.report.html.name,
    )
    print(f"report: {report.summary} and {report.html}")
    for stem in figures:
        print(f"figure: {out / stem}.png")
    print(f"study summary: {out / STUDY_SUMMARY}")
    return StudyReport(report, written.results)
