"""Running the real harness (CLI and Python API) in tests, and the local task folders it runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from calib_tasks import task_dir


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run ``lm_eval`` from this virtualenv, offline, and fail with its output if it fails."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    lm_eval = Path(sys.executable).with_name("lm_eval")
    proc = subprocess.run(
        [str(lm_eval), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"lm_eval failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def evaluate(lm: Any, task_manager: Any, task: str, limit: int, **kwargs: Any) -> dict[str, Any]:
    """``lm_eval.simple_evaluate`` of one task on ``limit`` documents, samples logged, no stderr
    bootstrap; ``kwargs`` go to simple_evaluate."""
    import lm_eval

    options = {"log_samples": True, "bootstrap_iters": 0, **kwargs}
    return lm_eval.simple_evaluate(
        model=lm, tasks=[task], task_manager=task_manager, limit=limit, **options
    )


def local_data(folder: Path, name: str, docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Write ``docs`` to ``folder/<name>.jsonl``; the task keys that read them as the test split."""
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    return {
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
    }


def write_task(folder: Path, template: str, name: str, docs: list[dict[str, Any]], **config: Any):
    """Write task ``name`` into ``folder``: the package's task template ``template`` (a file name
    in the task folder) on ``docs`` (the test split, as JSON Lines), with ``config`` overriding
    the template's keys. Returns a TaskManager that knows the task (and not the harness's own
    tasks, whose index costs ~20 s)."""
    from lm_eval.tasks import TaskManager

    task = {
        "include": str(task_dir() / template),
        "task": name,
        **local_data(folder, name, docs),
        **config,
    }
    (folder / f"{name}.yaml").write_text(json.dumps(task))
    return TaskManager(include_path=str(folder), include_defaults=False)


def write_stock_task(folder: Path, name: str, docs: list[dict[str, Any]], **config: Any) -> None:
    """Write ``name``, a stock harness ``multiple_choice`` task (no calib wrapper) on ``docs``,
    into ``folder``: ``config`` gives its ``doc_to_text``, ``doc_to_choice`` and
    ``doc_to_target`` and overrides its ``metric_list`` (``acc`` and ``acc_norm``)."""
    task = {
        "task": name,
        **local_data(folder, name, docs),
        "output_type": "multiple_choice",
        "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}],
        "metadata": {"version": 1.0},
        **config,
    }
    (folder / f"{name}.yaml").write_text(json.dumps(task))


def write_wrapper(folder: Path, name: str, wraps: str) -> str:
    """Write ``calib_<name>``, the package's multiple-choice wrapper of task ``wraps``, into
    ``folder``; returns its name."""
    (folder / f"calib_{name}.yaml").write_text(
        f"task: calib_{name}\n"
        "class: !function calib_tasks.multiple_choice.CalibMultipleChoiceTask\n"
        f"wraps: {wraps}\n"
    )
    return f"calib_{name}"
