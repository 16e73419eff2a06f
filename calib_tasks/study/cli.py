"""``calib-study STUDY.yaml``: evaluate every point of a study, then report on all of them.

``calib-study --status STUDY.yaml`` prints each point's state (done, running elsewhere, failed
last time and why, not started) and runs nothing; exit status 0 (2 when the study file is
unusable).

The study file's ``executor`` block (``kind: local``, ``parallel: N``) runs up to N points at
once, each its own harness process (``calib_tasks.study.runner.run_points_parallel``); with
``kind: slurm``, each point is a SLURM job of one job array submitted through submitit
(``calib_tasks.study.slurm``), and ``--status`` shows the job id and SLURM state of each point
with a recorded job.

Exit status (``calib_tasks.command_line.conventions``): 0 when every point has results
(evaluated now or earlier) and the report was written, 1 when some point failed or was invalid
(the others still ran and are reported) or the report could not be written or reported
nothing or SLURM did not take the jobs, 2 when the study file itself is unusable (or asks for
SLURM without submitit installed), 130 when interrupted (Ctrl-C; SIGTERM too for SLURM, whose
jobs are then cancelled).

Runs of one study may overlap: a point that another run is evaluating is left to it and waited
for after the other points (``calib_tasks.study.runner``), and the report, over every point
published on disk, is written whole by one run at a time (``calib_tasks.study.report``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from calib_tasks.command_line.conventions import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
)
from calib_tasks.study.layout import StudyLayout
from calib_tasks.study.report import write_study_report
from calib_tasks.study.runner import PointOutcome, run_points
from calib_tasks.study.slurm import recorded_job_states, run_points_slurm
from calib_tasks.study.slurm_jobs import SubmissionError, import_submitit
from calib_tasks.study.spec import StudyError, load_study
from calib_tasks.study.status import print_status


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
    p.add_argument(
        "--status",
        action="store_true",
        help="print the state of each point (done, running elsewhere, failed, not started) "
        "and run nothing",
    )
    return p


def _report_problem(outcomes: Sequence[PointOutcome], layout: StudyLayout) -> str | None:
    """Write the study's report (``write_study_report``); None when it was written (or no
    point is published, so that there is nothing to report on), else what went wrong."""
    try:
        written = write_study_report(outcomes, layout)
    except OSError as error:
        return f"cannot write the report into {layout.report_dir}: {error}"
    if written is not None and not written.report.reported:
        return "calib-report could report nothing on the finished points (see its notes)"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run calib-study with ``argv`` (default: the process's arguments); returns the exit
    status (see the module docstring)."""
    args = parser().parse_args(argv)
    try:
        study = load_study(args.study)
    except StudyError as error:
        print(f"calib-study: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    layout = StudyLayout(study.output_dir)
    on_slurm = study.executor.kind == "slurm"
    try:
        submitit = import_submitit() if on_slurm else None
    except StudyError as error:
        print(f"calib-study: {args.study}: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.status:
        jobs = recorded_job_states(submitit, layout) if submitit is not None else {}
        print_status(study.points, study.settings, layout, sys.stdout, jobs)
        return EXIT_OK
    try:
        if on_slurm:
            outcomes = run_points_slurm(study.points, study.settings, layout, study.executor)
        else:
            outcomes = run_points(
                study.points, study.settings, layout, parallel=study.executor.parallel or 1
            )
    except SubmissionError as error:
        print(f"calib-study: {error}", file=sys.stderr)
        return EXIT_SOME_FAILED
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
    problem = None if args.no_report else _report_problem(outcomes, layout)
    if problem is not None:
        print(f"calib-study: {problem}", file=sys.stderr)
    return EXIT_SOME_FAILED if failed or problem is not None else EXIT_OK
