"""Training throughput of calib-tune's trl trainer against the hand-written PyTorch loop it
replaced, same data, batch size, epochs and model, side by side in one run.

The old loop is not part of the package any more: it is read from git history (``OLD_LOOP``,
the last commit that had it) into a temporary module together with the data module it used.
Each round runs one ``train`` call of each, alternating old and new, and measures two things:
the training throughput (optimizer steps per second from the first step to the last, timed by
a global optimizer-step hook, so the same clock for both) and the whole call (model loading,
data preparation, the epoch checkpoint; the trl one also saves its resumable trainer state).
The best round of each is compared; the bar applies to the throughput. Models: the tiny test
GPT-2 (256-token window) and a wider 4x256 one; ``--model DIR`` adds a folder (e.g. the
SmolLM2 base that calib-tune materializes from the GGUF file, ``out/alignment_smollm2/base``).

Usage: ``python benchmarks/bench_tune.py [--examples 64] [--rounds 3] [--model DIR]``
"""

from __future__ import annotations

import argparse
import importlib
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from torch.optim.optimizer import register_optimizer_step_post_hook

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # calib_tasks, and the fixture's model builder

from tiny_model import build_tiny_model  # noqa: E402

from calib_tasks import task_dir  # noqa: E402
from calib_tasks.tune.base import BaseModel  # noqa: E402
from calib_tasks.tune.data import ALPACA, read_examples  # noqa: E402
from calib_tasks.tune.train import TrainConfig, train  # noqa: E402

OLD_LOOP = "20d7143b9b82b4a62a64f4764578aa421a974eb6"  # the last commit with the old loop
BAR = 1.10  # the trl trainer may take at most 10% longer


def old_loop(folder: Path):  # noqa: ANN201 - a module read from git
    """The old ``train`` function, its modules written from ``OLD_LOOP`` into ``folder``."""
    for name in ("data", "train"):
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{OLD_LOOP}:calib_tasks/tune/{name}.py"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        source = source.replace("from calib_tasks.tune.data import", "from old_tune_data import")
        (folder / f"old_tune_{name}.py").write_text(source, encoding="utf-8")
    sys.path.insert(0, str(folder))
    return importlib.import_module("old_tune_train")


def main() -> None:
    """Print, per model and method, the best throughput and whole-call time of old and new and
    their ratios."""
    steps: list[float] = []
    register_optimizer_step_post_hook(lambda *_: steps.append(time.perf_counter()))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--model", type=Path, action="append", default=[])
    args = p.parse_args()
    examples = read_examples(task_dir() / "data" / "instructions_mini.jsonl")[: args.examples]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        old = old_loop(work)
        models = {
            "tiny GPT-2": build_tiny_model(work / "tiny", n_positions=256),
            "GPT-2 4x256": build_tiny_model(work / "wide", n_positions=256, n_embd=256, n_layer=4),
            **{str(m): m for m in args.model},
        }
        print(f"{len(examples)} examples, batch {args.batch_size}, 1 epoch, best of {args.rounds}")
        print(
            "| model | method | old loop steps/s | trl steps/s | throughput ratio old/trl "
            "| old loop call (s) | trl call (s) | call ratio trl/old |"
        )
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for label, folder in models.items():
            base = BaseModel(str(folder))
            for method in ("full", "lora"):
                times: dict[str, list[float]] = {"old": [], "new": []}
                rates: dict[str, list[float]] = {"old": [], "new": []}
                for round_ in range(args.rounds):
                    for kind in ("old", "new"):
                        make = old.TrainConfig if kind == "old" else TrainConfig
                        config = make(
                            method=method, learning_rate=1e-4, epochs=1,
                            batch_size=args.batch_size, max_length=128,
                        )  # fmt: skip
                        run = work / f"{label}-{method}-{kind}-{round_}".replace(" ", "_")
                        run_train = old.train if kind == "old" else train
                        steps.clear()
                        start = time.perf_counter()
                        run_train(base, examples, ALPACA, config, run, io.StringIO())
                        times[kind].append(time.perf_counter() - start)
                        rates[kind].append((len(steps) - 1) / (steps[-1] - steps[0]))
                old_rate, new_rate = max(rates["old"]), max(rates["new"])
                ratio = old_rate / new_rate  # > 1: trl is slower
                verdict = "" if ratio <= BAR else f" (over the {BAR:.2f} bar)"
                print(
                    f"| {label} | {method} | {old_rate:.2f} | {new_rate:.2f} "
                    f"| {ratio:.3f}{verdict} "
                    f"| {min(times['old']):.2f} | {min(times['new']):.2f} "
                    f"| {min(times['new']) / min(times['old']):.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
