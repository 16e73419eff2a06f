"""The package's tasks under the harness's output flags: --predict_only and every logger it ships
(the samples file, W&B in offline mode), through the real harness on the tiny model."""

from __future__ import annotations

import json

import pytest
from lm_eval.loggers import WandbLogger
from lm_eval.utils import handle_non_serializable
from support.harness import evaluate
from support.runs import save_run

from calib_tasks.report.samples import read_samples

TASKS = [
    "calib_mmlu_mini",
    "calib_mmlu_vocab_mini",
    "calib_facts_mini",
    "calib_clm_mini",
    "calib_facts_gen_mini",
]
#: The filter each task's keys carry (the generative task's own filter, else the harness's none).
FILTERS = {"calib_facts_gen_mini": "object"}
LIMIT = 4


@pytest.fixture(scope="module")
def runs(tiny_long_lm, task_manager):
    """One logged run of each task (the harness's own output, samples included)."""
    return {task: evaluate(tiny_long_lm, task_manager, task, LIMIT) for task in TASKS}


@pytest.mark.parametrize("task", TASKS)
def test_predict_only_runs_and_logs_the_records(tiny_long_lm, task_manager, tmp_path, task):
    out = evaluate(tiny_long_lm, task_manager, task, LIMIT, predict_only=True, log_samples=False)
    assert set(out["results"][task]) >= {f"bypass,{FILTERS.get(task, 'none')}"}
    samples = out["samples"][task]
    assert len(samples) == LIMIT
    assert all(sample["metrics"] == ["bypass"] for sample in samples)
    # calib-report computes calibration from such a run: the record is under "bypass"
    path = tmp_path / f"samples_{task}.jsonl"
    path.write_text("".join(json.dumps(s, default=handle_non_serializable) + "\n" for s in samples))
    assert read_samples(path).n_documents == LIMIT


@pytest.mark.parametrize("task", TASKS)
def test_every_sample_value_is_json(runs, task):
    """Plain json (no fallback for unknown types), as W&B's table and artifact need."""
    for sample in runs[task]["samples"][task]:
        json.dumps({key: value for key, value in sample.items() if key != "doc"})


def test_wandb_offline_logs_results_and_samples(runs, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for task, out in runs.items():
        out = dict(out)
        samples = out.pop("samples")
        logger = WandbLogger({"project": "calib-test", "dir": str(tmp_path), "name": task})
        try:
            logger.post_init(out)
            logger.log_eval_result()
            logger.log_eval_samples(samples)
        finally:
            logger.run.finish()
    assert any(tmp_path.rglob("*.wandb"))


def test_evaluation_tracker_writes_the_samples(runs, tmp_path):
    """The samples file (and the hub logger, which uploads the same files) of every task."""
    for task, out in runs.items():
        save_run(out, tmp_path / task)
        (path,) = (tmp_path / task).rglob(f"samples_{task}_*.jsonl")
        assert read_samples(path).n_documents == LIMIT
