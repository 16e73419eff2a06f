"""calib-study's ``executor: {kind: local, parallel: 2}`` against points in sequence, side by
side in one run: the same 4-point grid of tiny local GPT-2s (two of each width) on
calib_facts_mini, each study in a fresh output folder and run by its own ``calib-study``
process (``--no-report``: the points only). The wall time of each is taken over the whole
``calib-study`` call, so harness start-up (imports, model and task loading), the bulk of a tiny
point's time, is in it, as it is for every point of a real study. Runs alternate (sequence,
parallel) for ``--rounds`` rounds; the best of each is compared.

What limits the gain: each point is its own harness process, so two at once need two cores'
worth of start-up; on a 2-core machine the ideal is 2x, less whatever the study process and
the machine's other work take. Threads are divided among the running points
(``OMP_NUM_THREADS`` = cores // parallel).

Usage: ``python benchmarks/bench_study_parallel.py [--rounds 1] [--parallel 2]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # calib_tasks, and the fixture's model builder

from support.tiny_model import build_tiny_model  # noqa: E402

from calib_tasks.study.runner import cpu_count  # noqa: E402


def _study(folder: Path, models: list[Path], parallel: int | None) -> Path:
    folder.mkdir(parents=True)
    points = "".join(
        f"  - {{name: p{index}, model: {model}}}\n" for index, model in enumerate(models, 1)
    )
    executor = f"executor: {{kind: local, parallel: {parallel}}}\n" if parallel else ""
    study = folder / "study.yaml"
    study.write_text(
        f"tasks: [calib_facts_mini]\nlimit: 4\ndevice: cpu\noutput_dir: {folder / 'out'}\n"
        f"{executor}points:\n{points}",
        encoding="utf-8",
    )
    return study


def _wall(study: Path) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "calib_tasks.study", str(study), "--no-report"],
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"calib-study failed on {study}:\n{done.stdout}\n{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        small = build_tiny_model(root / "tiny-1m")
        large = build_tiny_model(root / "tiny-4m", n_embd=64)
        models = [small, large, small, large]
        sequence, parallel = [], []
        for round_ in range(args.rounds):
            sequence.append(_wall(_study(root / f"seq{round_}", models, None)))
            parallel.append(_wall(_study(root / f"par{round_}", models, args.parallel)))
            print(
                f"round {round_ + 1}: in sequence {sequence[-1]:.1f} s, "
                f"parallel {args.parallel} {parallel[-1]:.1f} s",
                flush=True,
            )
    best_seq, best_par = min(sequence), min(parallel)
    print(
        f"4 points, {cpu_count()} cores: in sequence {best_seq:.1f} s, parallel "
        f"{args.parallel} {best_par:.1f} s; speed-up {best_seq / best_par:.2f}x "
        f"(parallel / sequence wall-time ratio {best_par / best_seq:.2f})"
    )


if __name__ == "__main__":
    main()
