"""A wrapper (calib_tasks.tasks.multiple_choice) of something it cannot calibrate fails where the
harness resolves task names, before any model loads: ``lm_eval validate`` and ``lm_eval run``
both call ``TaskManager.match_tasks`` (calib_tasks.harness.task_paths.check_package_tasks)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from lm_eval.tasks import TaskManager

from calib_tasks import task_dir

BROKEN = {
    "calib_nothing": ("no_such_task", r"calib_nothing: wraps 'no_such_task', which is no task"),
    "calib_gen": ("gen", r"calib_gen: wraps 'gen', whose output_type is 'generate_until'"),
    "calib_grp": (
        "grp",
        r"calib_grp: wraps 'grp', a group; a wrapper wraps one multiple_choice task\. Wrap each "
        r"of its tasks .* calib-report pools a group's tasks",
    ),
    "calib_py": ("pytask", r"calib_py: wraps 'pytask', a Python task"),
}

PYTHON_TASK = """\
from lm_eval.api.task import ConfigurableTask


class PyTask(ConfigurableTask):
    def __init__(self, config=None):
        super().__init__(config={k: v for k, v in config.items() if k != "class"})
"""


@pytest.fixture(scope="module")
def broken_tasks(tmp_path_factory) -> Path:
    """A folder with a generation task, a group, a Python task, a wrapper of each (and of a
    name that is no task), and a group of the package's tasks with one broken wrapper."""
    folder = tmp_path_factory.mktemp("broken_wrappers")
    (folder / "gen.yaml").write_text(
        "task: gen\ndataset_path: json\noutput_type: generate_until\ndoc_to_text: q\n"
        "doc_to_target: a\n"
    )
    (folder / "grp.yaml").write_text("group: grp\ntask:\n  - gen\n")
    (folder / "pytask_module.py").write_text(PYTHON_TASK)
    (folder / "pytask.yaml").write_text(
        "task: pytask\nclass: !function pytask_module.PyTask\ndataset_path: json\n"
        "output_type: multiple_choice\n"
    )
    for wrapper, (wrapped, _) in BROKEN.items():
        (folder / f"{wrapper}.yaml").write_text(
            f"task: {wrapper}\n"
            "class: !function calib_tasks.multiple_choice.CalibMultipleChoiceTask\n"
            f"wraps: {wrapped}\n"
        )
    (folder / "calib_bundle.yaml").write_text(
        "group: calib_bundle\ntask:\n  - calib_mmlu_mini\n  - task: calib_gen\n    num_fewshot: 0\n"
    )
    return folder


@pytest.mark.parametrize("wrapper", BROKEN)
def test_matching_a_broken_wrapper_names_what_it_wraps(broken_tasks, wrapper):
    manager = TaskManager(include_path=[task_dir(), broken_tasks], include_defaults=False)
    with pytest.raises(ValueError, match=BROKEN[wrapper][1]):
        manager.match_tasks([wrapper])


def test_a_group_with_a_broken_wrapper_fails_and_good_tasks_pass(broken_tasks):
    manager = TaskManager(include_path=[task_dir(), broken_tasks], include_defaults=False)
    with pytest.raises(ValueError, match=BROKEN["calib_gen"][1]):
        manager.match_tasks(["calib_bundle"])
    with pytest.raises(ValueError, match=BROKEN["calib_gen"][1]):
        manager.match_tasks(["calib_g*"])  # a glob pattern matching it
    assert manager.match_tasks(["calib_mmlu_mini", "calib_mini", "gen"]) == [
        "calib_mini",
        "calib_mmlu_mini",
        "gen",
    ]


def test_lm_eval_validate_fails_on_a_wrapped_group(broken_tasks, monkeypatch, capsys):
    """The harness's own ``validate`` subcommand (the plain ``lm_eval`` CLI, in-process)."""
    from lm_eval.__main__ import cli_evaluate

    args = ["lm_eval", "validate", "--tasks", "calib_grp", "--include_path", str(broken_tasks)]
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(ValueError, match=BROKEN["calib_grp"][1]):
        cli_evaluate()
    assert "All tasks found and valid" not in capsys.readouterr().out
