"""A misspelt ``calib_`` setting is an error naming the nearest setting, from the task YAML or the
harness's ``--metadata``, before the model loads; every other metadata key stays allowed."""

from __future__ import annotations

import sys

import pytest
from lm_eval.tasks import TaskManager

from calib_tasks import task_dir
from calib_tasks.command_line.eval import main


@pytest.fixture
def cli_patches_undone(monkeypatch):
    """calib-eval in-process; its patches of the harness are undone after the test."""
    from lm_eval.config.evaluate_config import EvaluatorConfig

    monkeypatch.setattr(TaskManager, "__init__", TaskManager.__init__)
    monkeypatch.setattr(TaskManager, "match_tasks", TaskManager.match_tasks)
    monkeypatch.setattr(EvaluatorConfig, "process_tasks", EvaluatorConfig.process_tasks)
    monkeypatch.setattr(sys, "argv", sys.argv)


def test_a_misspelt_metadata_setting_fails_before_the_model_loads(cli_patches_undone, tmp_path):
    """The model is a folder that does not exist: loading it would fail with another error."""
    args = ["--model", "hf", "--model_args", f"pretrained={tmp_path / 'no_model'}"]
    args += ["--device", "cpu", "--tasks", "calib_mmlu_mini"]
    args += ["--metadata", '{"calib_rule": "letter"}']
    with pytest.raises(ValueError, match=r"calib_mmlu_mini: unknown setting 'calib_rule'.*"
                       r"did you mean 'calib_rules'"):  # fmt: skip
        main(args)


def test_a_misspelt_setting_in_the_task_yaml_is_named(tmp_path):
    (tmp_path / "calib_typo.yaml").write_text(
        f"include: {task_dir() / 'calib_mmlu_mini.yaml'}\n"
        "task: calib_typo\n"
        "metadata:\n  version: 1.0\n  calib_recalibartion: platt\n"
    )
    manager = TaskManager(include_path=str(tmp_path), include_defaults=False)
    message = r"calib_typo: unknown setting 'calib_recalibartion'.*'calib_recalibration'"
    with pytest.raises(ValueError, match=message):
        manager.match_tasks(["calib_typo"])  # where lm_eval validate and run resolve names
    with pytest.raises(ValueError, match=message):
        manager.load(["calib_typo"])  # the Python API, while the task is built


def test_keys_of_others_stay_allowed():
    """The harness merges ``--model_args`` into the metadata; tasks' functions read their own
    keys (calib_facts: ``lama_path``)."""
    metadata = {"pretrained": "x", "lama_path": "/nowhere", "max_seq_lengths": [4096]}
    manager = TaskManager(include_path=str(task_dir()), include_defaults=False, metadata=metadata)
    assert manager.match_tasks(["calib_mmlu_mini"]) == ["calib_mmlu_mini"]
    task = manager.load(["calib_mmlu_mini"])["tasks"]["calib_mmlu_mini"]
    assert task.config.metadata["lama_path"] == "/nowhere"
