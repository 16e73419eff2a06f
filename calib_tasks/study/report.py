"""The study's report folder: calib-report over the finished points (called as a library), and
the study's own figures and study.md made from the entries that report computed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from calib_tasks.report.build import ReportResult, write_report
from calib_tasks.report.entries import ReportOptions
from calib_tasks.study.layout import StudyLayout
from calib_tasks.study.results import PointResults, point_results
from calib_tasks.study.runner import PointOutcome
from calib_tasks.study.scaling import STUDY_SUMMARY, study_summary, write_scaling_figures


@dataclass(frozen=True)
class StudyReport:
    """What ``write_study_report`` wrote: calib-report's result over the finished points, and
    the results of those points by name."""

    report: ReportResult
    results: dict[str, PointResults]


def write_study_report(outcomes: Sequence[PointOutcome], layout: StudyLayout) -> StudyReport | None:
    """calib-report over the finished points into the study's report folder (with the default
    ``ReportOptions``), plus the study's figures and study.md; None when no point finished
    (then nothing is written). Raises ``OSError`` when the report folder cannot be written."""
    finished = [o.spec for o in outcomes if o.finished and o.spec is not None]
    if not finished:
        return None
    folders = {spec.name: layout.point_dir(spec.name) for spec in finished}
    out = layout.report_dir
    print(f"calib-report over {len(folders)} finished point(s) into {out}", flush=True)
    report = write_report(list(folders.values()), out, ReportOptions())
    results = {
        spec.name: point_results(spec, report.entries_under(folders[spec.name]))
        for spec in finished
    }
    figures = write_scaling_figures(list(results.values()), out)
    summary = study_summary(outcomes, results, figures, report.options)
    (out / STUDY_SUMMARY).write_text(summary, encoding="utf-8")
    print(f"report: {report.summary} and {report.html}")
    for stem in figures:
        print(f"figure: {out / stem}.png")
    print(f"study summary: {out / STUDY_SUMMARY}")
    return StudyReport(report, results)
