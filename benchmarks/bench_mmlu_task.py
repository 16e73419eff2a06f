"""The calibration wrapper vs the stock task it wraps: the harness's stock MMLU prompt as a plain
multiple_choice task, that task wrapped by name (``wraps:``, the generic route), and
calib_mmlu_mini (the same wrapper class with MMLU's per-subject few-shot and record fields).

Same documents (the bundled mini MMLU), same model object, same prompts (zero-shot, so that all
three build identical contexts), run side by side through ``lm_eval.simple_evaluate``; best wall
time of 3 interleaved rounds. The bar: each ratio to the stock task <= 1.03.

    python benchmarks/bench_mmlu_task.py
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from support.tiny_model import build_tiny_model  # noqa: E402

BAR = 1.03
REPEATS = 3


def write_stock_task(folder: Path) -> str:
    """The stock template (lm_eval/tasks/mmlu/default) on the mini file, as one task."""
    import lm_eval

    from calib_tasks import task_dir

    stock = Path(lm_eval.__file__).parent / "tasks/mmlu/default/_default_template_yaml"
    config = {
        "include": str(stock),
        "task": "stock_mmlu_mini",
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {"test": str(task_dir() / "data" / "mmlu_mini.jsonl")}},
        "test_split": "test",
        "fewshot_split": "test",
        "description": "The following are multiple choice questions (with answers) about "
        "{{subject.replace('_', ' ')}}.\n\n",
    }
    (folder / "stock_mmlu_mini.yaml").write_text(json.dumps(config))
    (folder / "calib_stock_mmlu_mini.yaml").write_text(
        "task: calib_stock_mmlu_mini\n"
        "class: !function calib_tasks.tasks.multiple_choice.CalibMultipleChoiceTask\n"
        "wraps: stock_mmlu_mini\n"
    )
    return "stock_mmlu_mini"


def main() -> int:
    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from calib_tasks import task_dir

    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_model(Path(tmp) / "model", n_positions=2048, n_embd=256, n_layer=4)
        lm = HFLM(pretrained=str(model), device="cpu", batch_size=8)
        stock_dir = Path(tmp) / "stock"
        stock_dir.mkdir()
        stock = write_stock_task(stock_dir)
        runs = {
            "stock multiple_choice": ([stock], [str(stock_dir)]),
            "wrapped by name": ([f"calib_{stock}"], [str(task_dir()), str(stock_dir)]),
            "calib_mmlu_mini": (["calib_mmlu_mini"], [str(task_dir())]),
        }
        managers = {
            name: TaskManager(include_path=paths, include_defaults=False)
            for name, (_, paths) in runs.items()
        }
        best = dict.fromkeys(runs, math.inf)
        accs = {}
        for _ in range(REPEATS):
            for name, (tasks, _) in runs.items():
                start = time.perf_counter()
                with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
                    out = lm_eval.simple_evaluate(
                        model=lm, tasks=tasks, task_manager=managers[name], num_fewshot=0
                    )
                best[name] = min(best[name], time.perf_counter() - start)
                accs[name] = out["results"][tasks[0]]["acc,none"]
    ratios = {name: best[name] / best["stock multiple_choice"] for name in runs}
    print(
        f"mini MMLU, {len(list(open(task_dir() / 'data' / 'mmlu_mini.jsonl')))} questions, "
        f"zero-shot, GPT-2 4x256 (random), CPU, 1 thread, best of {REPEATS}"
    )
    for name in runs:
        print(f"{name:24s} {best[name]:8.2f} s   acc {accs[name]:.4f}   ratio {ratios[name]:.3f}")
    over = [name for name, ratio in ratios.items() if ratio > BAR]
    print(f"{'OVER' if over else 'OK'}: the {BAR} bar" + (f" ({', '.join(over)})" if over else ""))
    assert len(set(accs.values())) == 1, accs
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
