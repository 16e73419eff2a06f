"""``calib-report RUN_DIR [RUN_DIR ...] --out DIR``: the command line of the report."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from calib_tasks.report.entries import ReportOptions
from calib_tasks.report.notes import Notes
from calib_tasks.report.numbers import EQUAL_MASS, EQUAL_WIDTH

EXIT_REPORTED = 0
EXIT_NOTHING = 2


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    """The argument parser of calib-report."""
    p = argparse.ArgumentParser(
        prog="calib-report",
        description=(
            "Calibration report (reliability diagrams, comparison across runs, breakdowns, "
            "summary.md, report.html) from the output folders of lm_eval --output_path ... "
            "--log_samples."
        ),
    )
    p.add_argument(
        "run_dirs",
        nargs="+",
        type=Path,
        metavar="RUN_DIR",
        help="output folder of one or more runs (searched recursively)",
    )
    p.add_argument("--out", required=True, type=Path, help="folder to write the report into")
    p.add_argument(
        "--binning",
        choices=[EQUAL_WIDTH, EQUAL_MASS],
        default=EQUAL_WIDTH,
        help="bins of the diagrams and ECE (equal_mass: top-label records only)",
    )
    p.add_argument("--bins", type=_positive_int, default=10, help="number of bins (10)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (0)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run calib-report; returns 0 when something was reported and 2 when nothing could be
    (every problem is described on stderr and in summary.md)."""
    from calib_tasks.report.build import write_report

    args = parser().parse_args(argv)
    notes = Notes()
    options = ReportOptions(binning=args.binning, n_bins=args.bins, seed=args.seed)
    try:
        reported = write_report(args.run_dirs, args.out, options, notes)
    except OSError as error:
        print(f"calib-report: cannot write the report into {args.out}: {error}", file=sys.stderr)
        return EXIT_NOTHING
    if not reported:
        print("calib-report: nothing could be reported", file=sys.stderr)
        return EXIT_NOTHING
    print(
        f"calib-report: wrote {args.out / 'summary.md'} and {args.out / 'report.html'}",
        file=sys.stderr,
    )
    return EXIT_REPORTED
