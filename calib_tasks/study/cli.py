"""``calib-study STUDY.yaml``: evaluate every point of a study, then report on all of them.

Exit status: 0 when every point has results (evaluated now or earlier), 1 when some point
failed or was invalid (the others still ran and are reported), 2 when the study file itself is
unusable, 130 when interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from calib_tasks.study.layout import StudyLayout
from calib_tasks.study.results import PointResults, read_point
from calib_tasks.study.runner import PointOutcome, run_points
from calib_tasks.study.scaling import STUDY_SUMMARY, study_summary, write_scaling_figures
from calib_tasks.study.spec import StudyError, load_study

EXIT_ALL_FINISHED = 0
EXIT_SOME_FAILED = 1
EXIT_UNUSABLE = 2
EXIT_INTERRUPTED = 130


def parser() -> argparse.ArgumentParser:
    """The argument parser of calib-study."""
    p = argparse.ArgumentParser(
        prog="calib-study",
        description=(
            "Evaluate a grid of models (sizes, training steps, adapters) on the calib tasks, one "
            "harness process per point, resumably; then calib-report over all finished points "
            "and figures of ECE and accuracy against parameter count and training step."
        ),
    )
    p.add_argument("study", type=Path, metavar="STUDY.yaml", help="the study file")
    p.add_argument(
        "--no-report", action="store_true", help="evaluate the points only, write no report"
    )
    return p


def write_study_report(
    outcomes: Sequence[PointOutcome], layout: StudyLayout
) -> dict[str, PointResults]:
    """calib-report over the finished points into the study's report folder, plus the study's
    figures and study.md; returns the results of the finished points by name (none finished:
    empty, and nothing is written)."""
    from calib_tasks.report.cli import main as calib_report

    finished = [o.spec for o in outcomes if o.finished and o.spec is not None]
    if not finished:
        return {}
    folders = [layout.point_dir(spec.name) for spec in finished]
    out = layout.report_dir
    print(f"calib-report over {len(folders)} finished point(s) into {out}", flush=True)
    calib_report([*map(str, folders), "--out", str(out)])
    results = {spec.name: read_point(spec, layout.point_dir(spec.name)) for spec in finished}
    figures = write_scaling_figures(list(results.values()), out)
    summary = study_summary(outcomes, results, figures)
    (out / STUDY_SUMMARY).write_text(summary, encoding="utf-8")
    for stem in figures:
        print(f"figure: {out / stem}.png")
    print(f"study summary: {out / STUDY_SUMMARY}")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Run calib-study with ``argv`` (default: the process's arguments); returns the exit
    status (see the module docstring)."""
    args = parser().parse_args(argv)
    try:
        study = load_study(args.study)
    except StudyError as error:
        print(f"calib-study: {error}", file=sys.stderr)
        return EXIT_UNUSABLE
    layout = StudyLayout(study.output_dir)
    try:
        outcomes = run_points(study.points, study.settings, layout)
    except KeyboardInterrupt:
        print(
            "\ncalib-study: interrupted; finished points are kept, run the study again to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    failed = [o for o in outcomes if not o.finished]
    print(
        f"{len(outcomes) - len(failed)} of {len(outcomes)} point(s) finished"
        + (f"; not finished: {', '.join(o.label for o in failed)}" if failed else ""),
        flush=True,
    )
    if not args.no_report:
        write_study_report(outcomes, layout)
    return EXIT_SOME_FAILED if failed else EXIT_ALL_FINISHED
