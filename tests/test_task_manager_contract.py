"""The harness's own ``TaskManager`` contract holds with the package active: which task managers
see the package's tasks (calib_tasks.harness.task_paths), checked on the real TaskManager of this
environment, whose ``__init__`` the start-up activation has wrapped."""

from __future__ import annotations

from pathlib import Path

import pytest
from lm_eval.tasks import TaskManager

from calib_tasks import patches, task_dir
from calib_tasks.harness.task_paths import package_tasks_only, scan_task_dir

# lm-eval 0.4.13's tests/test_task_manager.py::TestTaskManagerIntegration::
# test_include_defaults_false_with_custom_path writes this task (its data are never loaded).
CUSTOM_TASK = """\
task: custom_arc_task
dataset_path: allenai/ai2_arc
dataset_name: ARC-Challenge
output_type: multiple_choice
test_split: test
doc_to_text: "Q: {{question}}\\nA:"
doc_to_target: "{{choices.label.index(answerKey)}}"
doc_to_choice: "{{choices.text}}"
metric_list:
  - metric: acc
metadata:
  version: 1.0
"""


@pytest.fixture
def custom_dir(tmp_path: Path) -> str:
    (tmp_path / "custom_arc_task.yaml").write_text(CUSTOM_TASK)
    return str(tmp_path)


def test_the_activation_wraps_the_harness_task_manager():
    assert patches.marked(TaskManager.__init__) is patches.TASK_FOLDER


def test_include_defaults_false_means_only_the_callers_paths(custom_dir):
    """The harness's own test, which fails when the package adds its folder here."""
    manager = TaskManager(include_defaults=False, include_path=custom_dir)
    assert manager.all_tasks == ["custom_arc_task"]
    assert manager.include_path == custom_dir


def test_include_path_stays_as_the_caller_gave_it(custom_dir):
    given = [custom_dir, Path(task_dir())]
    manager = TaskManager(include_defaults=False, include_path=given)
    assert manager.include_path is given
    assert {"custom_arc_task", "calib_mmlu_mini"} <= set(manager.all_tasks)


def test_a_default_task_manager_sees_harness_package_and_caller_tasks(custom_dir):
    manager = TaskManager(include_path=custom_dir)
    assert {"arc_easy", "calib_mmlu_mini", "calib_mini", "custom_arc_task"} <= set(
        manager.all_tasks
    )
    assert manager.include_path == custom_dir


def test_calib_evals_shortcut_swaps_the_harness_folder_for_the_package(custom_dir):
    """Within ``package_tasks_only`` (calib-eval, when only package tasks are asked for) a
    default task manager indexes the package's folder and the caller's paths; one that asks for
    ``include_defaults=False`` still gets its own paths only."""
    scan_task_dir()  # idempotent: the activation already did it
    with package_tasks_only():
        default = TaskManager(include_path=custom_dir)
        own = TaskManager(include_defaults=False, include_path=custom_dir)
    assert {"calib_mmlu_mini", "custom_arc_task"} <= set(default.all_tasks)
    assert "arc_easy" not in default.all_tasks
    assert default.include_path == custom_dir
    assert own.all_tasks == ["custom_arc_task"]
