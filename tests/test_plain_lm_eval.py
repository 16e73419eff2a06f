"""The plain ``lm_eval`` command knows the package's tasks once the package is installed: from a
built wheel and from an editable install, each into a virtual environment of its own.

The new environments take the package's dependencies (torch, lm_eval, ...) from the test's own
environment through a path entry, so that only the package itself is installed in them (from the
wheel, or editable) and a run costs seconds, not a full dependency install; path entries added
that way run no ``.pth`` file, so the test's own editable install stays inert there.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import calib_tasks
from calib_tasks import task_dir
from calib_tasks.harness import activation, aggregations
from calib_tasks.scoring import metric_table

PROJECT_ROOT = Path(calib_tasks.__file__).resolve().parent.parent
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]


def _venv(path: Path) -> Path:
    """A new virtual environment at ``path`` that sees the test environment's packages (but
    none of its ``.pth`` files); returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "_test_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python


def _install(python: Path, *args: str) -> None:
    subprocess.run([*PIP, "--python", str(python), "install", "--no-deps", *args], check=True)


def _lm_eval(python: Path, args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **env}
    environment.pop("PYTHONPATH", None)
    environment.pop(activation.ENV_VAR, None)
    environment.update(env)
    return subprocess.run(
        [str(python), "-m", "lm_eval", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [*PIP, "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(PROJECT_ROOT)],
        check=True,
    )
    (built,) = out.glob("lm_eval_calibration-*.whl")
    return built


@pytest.fixture(scope="module")
def installs(tmp_path_factory, wheel) -> dict[str, Path]:
    """Pythons of three new environments: the package from the wheel, editable, and absent."""
    root = tmp_path_factory.mktemp("venvs")
    pythons = {name: _venv(root / name) for name in ("wheel", "editable", "absent")}
    _install(pythons["wheel"], str(wheel))
    _install(pythons["editable"], "--no-build-isolation", "-e", str(PROJECT_ROOT))
    return pythons


def run_args(model: Path, out: Path) -> list[str]:
    return [
        "--model", "hf", "--model_args", f"pretrained={model}", "--device", "cpu",
        "--tasks", "calib_mmlu_mini", "--limit", "5", "--output_path", str(out),
    ]  # fmt: skip


@pytest.mark.parametrize("install", ["wheel", "editable"])
def test_plain_lm_eval_runs_a_calib_task(installs, install, tiny_model_dir, tmp_path):
    proc = _lm_eval(installs[install], run_args(tiny_model_dir, tmp_path / "out"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (results,) = (tmp_path / "out").rglob("results_*.json")
    assert '"ece,none"' in results.read_text()


def test_switched_off_it_fails_exactly_as_without_the_package(installs, tiny_model_dir, tmp_path):
    def last_error(proc: subprocess.CompletedProcess) -> str:
        lines = [re.sub(r"^\S+ \S+\s+", "", line) for line in proc.stderr.splitlines() if line]
        return lines[-1]

    off = _lm_eval(
        installs["wheel"], run_args(tiny_model_dir, tmp_path / "a"), tmp_path,
        **{activation.ENV_VAR: "0"},
    )  # fmt: skip
    absent = _lm_eval(installs["absent"], run_args(tiny_model_dir, tmp_path / "b"), tmp_path)
    assert off.returncode == absent.returncode != 0
    assert last_error(off) == last_error(absent)
    assert "calib_mmlu_mini" in last_error(off)


def test_ls_lists_and_validate_passes(installs, tmp_path):
    listed = _lm_eval(installs["wheel"], ["ls", "tasks"], tmp_path)
    assert listed.returncode == 0, listed.stderr[-3000:]
    for name in ("calib_mmlu", "calib_facts", "calib_clm", "calib_mini", "calib"):
        assert re.search(rf"\b{name}\b", listed.stdout), name
    valid = _lm_eval(installs["wheel"], ["validate", "--tasks", "calib_mmlu,calib_facts"], tmp_path)
    assert valid.returncode == 0, valid.stdout[-2000:] + valid.stderr[-2000:]


def test_start_up_imports_nothing_heavy(installs, tmp_path):
    """``-X importtime``: the activation adds its own small modules, never lm_eval or torch."""
    proc = subprocess.run(
        [str(installs["wheel"]), "-X", "importtime", "-c", "import json"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    imported = [line.split("|")[-1].strip() for line in proc.stderr.splitlines()[1:]]
    assert "calib_tasks.harness.activation" in imported
    heavy = {"lm_eval", "torch", "numpy", "logging", "calib_metrics"}
    assert not heavy & {name.split(".")[0] for name in imported}


def test_the_entry_points_are_what_lm_evals_plugin_discovery_expects():
    """#4015 (open): an ``lm_eval.tasks`` entry point names the package whose folder holds the
    YAMLs; #4014: each ``lm_eval.aggregations`` entry point, ``module:attr``, loads the function
    registered under the entry point's name. Reproduced here from the PRs' logic."""
    eps = md.distribution("lm-eval-calibration").entry_points
    (tasks,) = [ep for ep in eps if ep.group == "lm_eval.tasks"]
    spec = importlib.util.find_spec(tasks.value.split(":", 1)[0])
    assert Path(spec.submodule_search_locations[0]).resolve() == task_dir().resolve()
    found = {ep.name: ep for ep in eps if ep.group == "lm_eval.aggregations"}
    assert set(found) == {metric.aggregation for metric in metric_table.METRICS}
    for metric in metric_table.METRICS:
        function = found[metric.aggregation].load()
        assert function is aggregations.AGGREGATIONS[metric.key]
        assert found[metric.aggregation].value == f"{function.__module__}:{function.__name__}"


def test_activation_steps_aside_for_a_harness_that_discovers_task_plugins(monkeypatch):
    import lm_eval.tasks.manager as manager

    assert not activation.harness_discovers_task_plugins()
    monkeypatch.setattr(manager, "discover_plugin_task_paths", lambda: [], raising=False)
    assert activation.harness_discovers_task_plugins()
