"""Training throughput of calib-tune's trl trainer against the hand-written PyTorch loop it
replaced, same data, batch size, epochs and model, side by side in one run.

The old loop is not part of the package any more: it is read from git history (``OLD_LOOP``,
the last commit that had it) into a temporary module together with the data module it used.
Each round runs one ``train`` call of each, alternating old and new, every call in a fresh
Python process: in one long process the allocator's history (page faults on the large logit
tensors) moved the same model's forward by +-25% from call to call, whichever loop ran. Each
call measures the training throughput (optimizer steps per second from the first step to the
last, timed by a global optimizer-step hook, so the same clock for both) and the whole call
(model loading, data preparation, the epoch checkpoint; the trl one also saves its resumable
trainer state). The best round of each is compared; the bar applies to the throughput.

Each model and method is measured twice. "as is": no malloc variables in the environment, so
the old loop runs on glibc's self-tuning heap and calib-tune pins its own
(``calib_tasks.tune.heap``): what each does when run. Self-tuning, glibc sets its trim threshold
from what the process freed earlier, and on the tiny model the trainer's process gave back and
re-faulted about 32 MB of heap top per step against 16 MB in the old loop's (strace of ``brk``;
the same per-operation allocations in both, torch's profiler). "pinned": the same settings in
both processes' environment (``PINNED_HEAP``, which the pin leaves to win), so what is left
between them is the trainers' own work.

Models: the tiny test GPT-2 (256-token window) and a wider 4x256 one, or the folders given with
``--model DIR`` (e.g. the SmolLM2 base that calib-tune materializes from the GGUF file,
``OUT/base``).

Usage: ``python benchmarks/bench_tune.py [--examples 128] [--rounds 3] [--model DIR]``
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # calib_tasks, and the fixture's model builder

from calib_tasks.tune.heap import PIN  # noqa: E402

OLD_LOOP = "20d7143b9b82b4a62a64f4764578aa421a974eb6"  # the last commit with the old loop
BAR = 1.10  # the trl trainer may take at most 10% longer
METHODS = ("full", "lora")
#: The environment of each heap setting: "pinned" gives both processes calib-tune's own pin.
PINNED_HEAP = {variable: str(value) for variable, (_, value) in PIN.items()}
HEAPS = {"as is": {}, "pinned": PINNED_HEAP}


def write_old_loop(folder: Path) -> None:
    """Write the old ``train`` function's modules from ``OLD_LOOP`` into ``folder``."""
    for name in ("data", "train"):
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{OLD_LOOP}:calib_tasks/tune/{name}.py"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        source = source.replace("from calib_tasks.tune.data import", "from old_tune_data import")
        (folder / f"old_tune_{name}.py").write_text(source, encoding="utf-8")


def one_call(
    kind: str, model: Path, method: str, examples: int, batch: int, old_loop: Path, run: Path
) -> None:
    """Run one ``train`` call (``kind`` old or new; the old loop's modules in ``old_loop``) into
    ``run`` and print its steps per second and its whole-call time as JSON: the child's part."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from calib_tasks import task_dir
    from calib_tasks.tune.base_model import BaseModel
    from calib_tasks.tune.data import ALPACA, read_examples

    if kind == "old":
        sys.path.insert(0, str(old_loop))
        module = importlib.import_module("old_tune_train")
    else:
        module = importlib.import_module("calib_tasks.tune.train")
    steps: list[float] = []
    register_optimizer_step_post_hook(lambda *_: steps.append(time.perf_counter()))
    data = read_examples(task_dir() / "data" / "instructions_mini.jsonl")[:examples]
    config = module.TrainConfig(
        method=method, learning_rate=1e-4, epochs=1, batch_size=batch, max_length=128
    )
    start = time.perf_counter()
    module.train(BaseModel(str(model)), data, ALPACA, config, run, io.StringIO())
    call = time.perf_counter() - start
    rate = (len(steps) - 1) / (steps[-1] - steps[0])
    print(json.dumps({"rate": rate, "call": call}))


def measure(
    kind: str, model: Path, method: str, heap: str, args: argparse.Namespace, work: Path
) -> dict:
    """One call in a fresh process with glibc's heap ``heap``: {"rate": steps/s, "call": s}."""
    with tempfile.TemporaryDirectory(dir=work) as run:
        child = [sys.executable, __file__, "--child", kind, str(model), method, str(work), run]
        sizes = ["--examples", str(args.examples), "--batch-size", str(args.batch_size)]
        env = {**os.environ, **HEAPS[heap]}
        done = subprocess.run(child + sizes, check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    """Print, per model, method and heap setting, the best throughput and whole-call time of
    old and new and their ratios."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--model", type=Path, action="append", default=[])
    p.add_argument("--child", nargs=5, metavar=("KIND", "MODEL", "METHOD", "OLD_LOOP", "RUN"))
    args = p.parse_args()
    if args.child:
        kind, model, method, old_loop, run = args.child
        one_call(
            kind, Path(model), method, args.examples, args.batch_size, Path(old_loop), Path(run)
        )
        return
    from support.tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_old_loop(work)
        models = {str(m): m for m in args.model} or {
            "tiny GPT-2": build_tiny_model(work / "tiny", n_positions=256),
            "GPT-2 4x256": build_tiny_model(work / "wide", n_positions=256, n_embd=256, n_layer=4),
        }
        print(
            f"{args.examples} examples, batch {args.batch_size}, 1 epoch, best of {args.rounds}, "
            "each call in its own process"
        )
        print(
            "| model | method | glibc heap | old loop steps/s | trl steps/s "
            "| throughput ratio old/trl | old loop call (s) | trl call (s) | call ratio trl/old |"
        )
        print("|---|---|---|---:|---:|---:|---:|---:|---:|")
        for label, folder in models.items():
            for method in METHODS:
                for heap in HEAPS:
                    row(label, folder, method, heap, args, work)


def row(
    label: str, folder: Path, method: str, heap: str, args: argparse.Namespace, work: Path
) -> None:
    """Measure old and new ``args.rounds`` times, alternating, and print their table row."""
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for _ in range(args.rounds):
        for kind in ("old", "new"):
            runs[kind].append(measure(kind, folder, method, heap, args, work))
    old_rate, new_rate = (max(r["rate"] for r in runs[k]) for k in ("old", "new"))
    old_call, new_call = (min(r["call"] for r in runs[k]) for k in ("old", "new"))
    ratio = old_rate / new_rate  # > 1: trl is slower
    verdict = "" if ratio <= BAR else f" (over the {BAR:.2f} bar)"
    print(
        f"| {label} | {method} | {heap} | {old_rate:.2f} | {new_rate:.2f} | {ratio:.3f}{verdict} "
        f"| {old_call:.2f} | {new_call:.2f} | {new_call / old_call:.3f} |",
        flush=True,
    )


if __name__ == "__main__":
    main()
