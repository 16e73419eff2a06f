"""``calib-report RUN_DIR [RUN_DIR ...] --out DIR``: the command line of the report, a thin
wrapper around ``calib_tasks.report.build.write_report``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import calib_metrics as cm
from calib_tasks.command_line.conventions import EXIT_BAD_INPUT, EXIT_OK, positive_int
from calib_tasks.report.entries import ReportOptions
from calib_tasks.scoring.metric_table import EQUAL_MASS, EQUAL_WIDTH

#: The most bins ``--bins`` takes: the cells of calib_metrics' confidence histograms (bins of
#: width 0.001), through which token records and the ECE's bootstrap bin confidences; finer
#: bins cannot be filled, and their bootstrap alone would need resamples x bins of memory.
MAX_BINS = cm.DEFAULT_RESOLUTION


def bins_count(text: str) -> int:
    """An argument type: a number of bins, 1 to ``MAX_BINS``."""
    value = positive_int(text)
    if value > MAX_BINS:
        raise argparse.ArgumentTypeError(
            f"at most {MAX_BINS} bins (bins of width {1 / MAX_BINS:g}, the resolution of "
            f"calib_metrics' confidence histograms), got {text}"
        )
    return value


def parser() -> argparse.ArgumentParser:
    """The argument parser of calib-report; its defaults are ``ReportOptions``'."""
    defaults = ReportOptions()
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
        default=defaults.binning,
        help=f"bins of the diagrams and ECE (default {defaults.binning}; {EQUAL_MASS}: "
        "top-label records only)",
    )
    p.add_argument(
        "--bins",
        type=bins_count,
        default=defaults.n_bins,
        help=f"number of bins, 1 to {MAX_BINS} (default {defaults.n_bins})",
    )
    p.add_argument(
        "--seed", type=int, default=defaults.seed, help=f"bootstrap seed (default {defaults.seed})"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run calib-report; returns EXIT_OK when something was reported and EXIT_BAD_INPUT when
    nothing could be (every problem is described on stderr and in summary.md) or the report
    could not be written."""
    from calib_tasks.report.build import write_report

    args = parser().parse_args(argv)
    options = ReportOptions(binning=args.binning, n_bins=args.bins, seed=args.seed)
    try:
        result = write_report(args.run_dirs, args.out, options)
    except OSError as error:
        print(f"calib-report: cannot write the report into {args.out}: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not result.reported:
        print("calib-report: nothing could be reported", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"calib-report: wrote {result.summary} and {result.html}", file=sys.stderr)
    return EXIT_OK
