"""Wall time of ``token_stats`` against the harness's own ``loglikelihood_rolling``.

Both score the same ~50 documents of varied length (a few thousand tokens) with the same ``hf``
backend (``lm_eval.models.huggingface.HFLM``) and the same windows, so the ratio is the cost of
per-token statistics over the harness's per-document sums. Two random GPT-2s built like the
test fixture (``tests/support/tiny_model.py``): the tiny one itself (64-token window, Python
overhead dominates) and a bigger one (256-token window, 4 layers of width 256, the forward pass
dominates). Each timing is the best of ``--repeats`` runs, the two methods interleaved.

    python benchmarks/bench_token_stats.py [--device cpu] [--dtype float32] [--batch-size 8]
        [--repeats 3] [--threads 1]

Prints one table row per model (with the largest difference between a document's token_stats sum
and its loglikelihood_rolling value) and exits 1 if a ratio exceeds the bar (1.10). One CPU
thread by default: on a small shared machine more threads make timings swing by seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # calib_tasks, and the fixture's model builder

import numpy as np  # noqa: E402
from support.tiny_model import TRAINING_TEXT, build_tiny_model  # noqa: E402

BAR = 1.10
N_DOCS = 50


def make_documents(n_docs: int, seed: int = 0) -> list[str]:
    """Seeded word salad from the fixture's training text, 3 to 120 words per document."""
    words = TRAINING_TEXT.split()
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 120, size=n_docs)
    return [" ".join(rng.choice(words, size=int(n))) for n in lengths]


def best_of(repeats: int, runs: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Best wall time of each callable over ``repeats`` interleaved rounds."""
    best = dict.fromkeys(runs, math.inf)
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


@contextlib.contextmanager
def quiet():
    """Progress bars off the terminal: loglikelihood_rolling opens one per batch, whatever
    ``disable_tqdm`` says (both methods pay for writing to /dev/null alike)."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        yield


def bench(name: str, model_dir: Path, docs: list[str], args: argparse.Namespace) -> float:
    """Time both methods on ``docs``; print a table row; return the ratio."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    import calib_tasks.token_stats  # noqa: F401  (installs HFLM.token_stats)

    lm = HFLM(
        pretrained=str(model_dir), device=args.device, dtype=args.dtype, batch_size=args.batch_size
    )
    rolling_requests = [Instance("loglikelihood_rolling", {}, (d,), 0) for d in docs]
    stats_requests = [Instance("token_stats", {}, ("", d), 0) for d in docs]
    runs = {
        "rolling": lambda: lm.loglikelihood_rolling(rolling_requests, disable_tqdm=True),
        "token_stats": lambda: lm.token_stats(stats_requests, disable_tqdm=True),
    }
    with quiet():
        rolling, stats = runs["rolling"](), runs["token_stats"]()  # warm-up, correctness check
        times = best_of(args.repeats, runs)
    sums = np.array([s.true_logprob.sum(dtype=np.float64) for s in stats])
    worst = float(np.abs(sums - np.array(rolling)).max())
    if args.dtype == "float32":  # else the harness's own log-softmax runs in the low precision
        assert worst < 1e-3, f"token_stats sums differ from loglikelihood_rolling by {worst}"
    n_tokens = sum(s.n for s in stats)
    n_windows = sum(math.ceil(len(lm.tok_encode(d)) / lm.max_length) for d in docs)
    ratio = times["token_stats"] / times["rolling"]
    print(
        f"| {name} | {lm.max_length} | {len(docs)} | {n_tokens} | {n_windows} | "
        f"{times['rolling']:.4f} | {times['token_stats']:.4f} | {ratio:.3f} | {worst:.1e} | "
        f"{'ok' if ratio <= BAR else 'OVER'} |",
        flush=True,
    )
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--docs", type=int, default=N_DOCS)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    docs = make_documents(args.docs)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    print(
        f"token_stats vs loglikelihood_rolling, hf backend, device {device}, {args.dtype}, "
        f"batch size {args.batch_size}, best of {args.repeats}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    columns = ["model", "window", "docs", "tokens", "windows", "rolling s", "token_stats s"]
    columns += ["ratio", "max abs sum diff", f"ratio <= {BAR}"]
    print("| " + " | ".join(columns) + " |")
    print("|---" * len(columns) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        ratios = [
            bench("tiny GPT-2 (2x32)", build_tiny_model(Path(tmp) / "tiny"), docs, args),
            bench(
                "bigger GPT-2 (4x256)",
                build_tiny_model(Path(tmp) / "bigger", n_positions=256, n_embd=256, n_layer=4),
                docs,
                args,
            ),
        ]
    return 0 if max(ratios) <= BAR else 1


if __name__ == "__main__":
    sys.exit(main())
