"""calib-eval: the harness's own CLI, run as a subprocess, with this package's tasks known."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import calib_tasks
from calib_tasks import patches, task_dir
from calib_tasks.command_line.eval import main, make_task_managers_scan_task_dir
from calib_tasks.harness.task_paths import include_paths_with_task_dir, names_only_package_tasks

# The project root, so that the subprocess imports this checkout even when it is not installed.
PROJECT_ROOT = Path(calib_tasks.__file__).resolve().parent.parent

USER_TASK = """\
task: user_trivial
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: ["yes", "no"]
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
metadata:
  version: 1.0
"""


def calib_eval(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``calib-eval ARGS`` (as ``python -m calib_tasks.command_line.eval``), offline."""
    python_path = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PYTHONPATH": python_path,
    }
    return subprocess.run(
        [sys.executable, "-m", "calib_tasks.command_line.eval", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"calib-eval failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _results(output_path: Path) -> dict:
    (results_file,) = output_path.rglob("results_*.json")
    return json.loads(results_file.read_text())


def test_task_dir_flag_prints_the_task_folder(tmp_path: Path) -> None:
    printed = _ok(calib_eval(["--task-dir"], tmp_path)).stdout.strip()
    assert Path(printed) == task_dir()
    assert (Path(printed) / "calib_mmlu_mini.yaml").is_file()


def test_patches_flag_lists_every_patch_with_its_state(tmp_path: Path) -> None:
    printed = _ok(calib_eval(["--patches"], tmp_path)).stdout
    blocks = printed.split("\n\n")[1:]
    assert [block.splitlines()[0] for block in blocks] == [p.target for p in patches.PATCHES]
    states = {block.splitlines()[0]: block.splitlines()[1] for block in blocks}
    for patch in (patches.TASK_FOLDER, patches.TASK_CHECK, patches.PACKAGE_TASKS_ONLY):
        assert states[patch.target].startswith("  state:      installed: lm_eval."), patch
    assert states[patches.PREFLIGHT.target] == "  state:      not installed"  # no task loaded
    for label in ("why:", "when:", "code:", "retired by:"):
        assert printed.count(f"  {label}") == len(patches.PATCHES)


def test_runs_a_calib_task_without_include_path(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["--model", "dummy", "--tasks", "calib_mmlu_mini", "--limit", "8"]
    proc = _ok(calib_eval([*args, "--output_path", str(out), "--log_samples"], tmp_path))
    # the harness's hint for custom_dataset tasks is not the package's settings
    assert "Custom kwargs can be passed" not in proc.stdout + proc.stderr
    results = _results(out)
    metrics = results["results"]["calib_mmlu_mini"]
    assert results["n-samples"]["calib_mmlu_mini"]["effective"] == 8
    assert 0.0 <= metrics["ece,none"] <= 1.0
    assert metrics["ece_ci_low,none"] <= metrics["ece,none"] <= metrics["ece_ci_high,none"]
    (samples_file,) = out.rglob("samples_calib_mmlu_mini_*.jsonl")
    lines = samples_file.read_text().splitlines()
    assert len(lines) == 8
    assert {"confidence", "correct", "subject"} <= set(json.loads(lines[0])["ece"])


def test_user_include_path_adds_to_the_package_tasks(tmp_path: Path) -> None:
    data = tmp_path / "user_data.jsonl"
    data.write_text(
        "".join(json.dumps({"question": f"Is {i} even?", "answer": i % 2}) + "\n" for i in range(6))
    )
    user_tasks = tmp_path / "user_tasks"
    user_tasks.mkdir()
    (user_tasks / "user_trivial.yaml").write_text(USER_TASK.format(data=data))
    out = tmp_path / "out"
    args = ["--model", "dummy", "--tasks", "calib_mmlu_mini,user_trivial", "--limit", "4"]
    args += ["--include_path", str(user_tasks), "--output_path", str(out), "--log_samples"]
    proc = _ok(calib_eval(args, tmp_path))
    results = _results(out)
    assert set(results["results"]) == {"calib_mmlu_mini", "user_trivial"}
    assert "acc,none" in results["results"]["user_trivial"]
    assert "user_trivial" in proc.stdout and "calib_mmlu_mini" in proc.stdout  # the table


def test_validate_subcommand_knows_the_package_tasks(monkeypatch, capsys) -> None:
    from lm_eval.tasks import TaskManager

    # in-process (the patch of TaskManager is undone after the test) to save a harness start
    monkeypatch.setattr(TaskManager, "__init__", TaskManager.__init__)
    monkeypatch.setattr(sys, "argv", sys.argv)
    main(["validate", "--tasks", "calib_mmlu_mini,calib_clm"])
    assert "All tasks found and valid" in capsys.readouterr().out


def test_include_paths_keep_order_without_repeats(tmp_path: Path) -> None:
    assert include_paths_with_task_dir(None) == [task_dir()]
    assert include_paths_with_task_dir(str(tmp_path)) == [task_dir(), tmp_path]
    assert include_paths_with_task_dir([tmp_path, task_dir(), tmp_path]) == [task_dir(), tmp_path]


def test_only_package_task_names_are_recognised() -> None:
    assert names_only_package_tasks("calib_facts_mini,calib_mmlu")
    assert names_only_package_tasks(["calib_mini", "calib_clm,calib_facts"])
    assert not names_only_package_tasks("calib_facts_mini,hellaswag")
    assert not names_only_package_tasks("calib_*")
    assert not names_only_package_tasks(",")
    assert not names_only_package_tasks(None)


def test_the_harness_task_index_is_skipped_only_for_package_tasks(monkeypatch) -> None:
    from lm_eval.config.evaluate_config import EvaluatorConfig
    from lm_eval.tasks import TaskManager

    # in-process; both patches are undone after the test
    monkeypatch.setattr(TaskManager, "__init__", TaskManager.__init__)
    monkeypatch.setattr(EvaluatorConfig, "process_tasks", EvaluatorConfig.process_tasks)
    make_task_managers_scan_task_dir()
    ours = EvaluatorConfig(tasks="calib_mmlu_mini,calib_mini").process_tasks()
    assert "calib_mmlu_mini" in ours.all_tasks and "hellaswag" not in ours.all_tasks
    mixed = EvaluatorConfig(tasks=["calib_mmlu_mini", "hellaswag"]).process_tasks()
    assert {"calib_mmlu_mini", "hellaswag"} <= set(mixed.all_tasks)


def test_a_package_group_wrapping_a_harness_task_needs_the_harness_index(tmp_path, monkeypatch):
    """The shortcut must never change which task a name resolves to."""
    from lm_eval.tasks import TaskManager

    from calib_tasks.harness import task_paths

    (tmp_path / "probe.yaml").write_text("group: calib_probe\ntask:\n  - arc_easy\n")
    (tmp_path / "own.yaml").write_text(
        "group: calib_own\ntask:\n  - calib_probe_inner\n  - calib_facts_mini\n"
    )
    (tmp_path / "inner.yaml").write_text("group: calib_probe_inner\ntask:\n  - calib_mmlu_mini\n")
    manager = TaskManager(include_path=[task_dir(), tmp_path], include_defaults=False)
    monkeypatch.setattr(task_paths, "package_tasks", lambda: manager)
    assert not names_only_package_tasks("calib_probe")
    assert not names_only_package_tasks("calib_facts_mini,calib_probe")
    assert names_only_package_tasks("calib_own")
    assert not names_only_package_tasks("calib_arc_easy")  # wraps the harness's arc_easy
