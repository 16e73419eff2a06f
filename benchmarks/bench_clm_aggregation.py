"""Memory of calib_clm's per-document records and aggregation at 1M tokens.

500 documents of 2,000 tokens each (seeded synthetic top-1/true log-probabilities with a
realistic spread) go through calib_clm's per-document reduction (``document_results``) and then
every aggregation the task's YAML names, as the harness would run them. Token arrays are made and
dropped one document at a time, as the backend hands them over, so the measured peak is what the
records and aggregations keep. Peak traced allocation growth (tracemalloc, which sees numpy's
buffers) must stay <= 64 MB. Also printed: the JSON size of one document's samples-file line.

    python benchmarks/bench_clm_aggregation.py
"""

from __future__ import annotations

import json
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

N_DOCS = 500
TOKENS_PER_DOC = 2000
BAR_MB = 64.0


def synthetic_stats(rng: np.random.Generator, n: int):
    """Token statistics whose top-1 correctness is Bernoulli(confidence) (calibrated)."""
    from calib_tasks.token_stats import TokenStats

    confidence = rng.beta(0.8, 1.2, size=n)
    correct = rng.random(n) < confidence
    top1 = np.log(confidence)
    true = np.where(correct, top1, top1 - rng.exponential(2.0, size=n))
    return TokenStats(true_logprob=true, top1_logprob=top1, top1_is_true=correct)


def main() -> int:
    from lm_eval.api.registry import get_aggregation
    from lm_eval.utils import handle_non_serializable

    from calib_tasks.harness.aggregations import AGGREGATIONS
    from calib_tasks.tasks.clm import document_results

    rng = np.random.default_rng(0)
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    start = time.perf_counter()
    per_key: dict[str, list] = {}
    for _ in range(N_DOCS):
        values = document_results(synthetic_stats(rng, TOKENS_PER_DOC), n_bytes=4 * TOKENS_PER_DOC)
        for key, value in values.items():
            per_key.setdefault(key, []).append(value)
    reduce_s = time.perf_counter() - start
    results = {
        key: (AGGREGATIONS[key] if key != "bits_per_byte" else get_aggregation("bits_per_byte"))(
            items
        )
        for key, items in per_key.items()
    }
    total_s = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    growth_mb = (peak - base) / 2**20
    line = json.dumps(values, default=handle_non_serializable)  # as --log_samples writes it
    print(f"{N_DOCS} documents x {TOKENS_PER_DOC} tokens = {N_DOCS * TOKENS_PER_DOC:,} tokens")
    print(f"per-document reduction {reduce_s:.2f} s, with all aggregations {total_s:.2f} s")
    print("results: " + ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
    print(
        f"samples-file metric values of one document: {len(line):,} bytes "
        f"({len(line) / TOKENS_PER_DOC:.1f} bytes per token)"
    )
    print(
        f"peak traced memory growth {growth_mb:.1f} MB "
        f"({'OK' if growth_mb <= BAR_MB else 'OVER'} the {BAR_MB:.0f} MB bar)"
    )
    return 0 if growth_mb <= BAR_MB else 1


if __name__ == "__main__":
    sys.exit(main())
