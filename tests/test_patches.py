"""The patches of the harness (calib_tasks.patches): every one declared, installed one way, once,
marked, its original kept; nothing else in the package changes the harness."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import lm_eval.tasks.manager as manager
import pytest

import calib_tasks
from calib_tasks import patches
from calib_tasks.token_stats import BACKENDS

PACKAGE = Path(calib_tasks.__file__).resolve().parent


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process record of its own, and an import path of its own, for the test."""
    monkeypatch.setattr(patches, "_installed", [])
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))


class Toy:
    def method(self) -> str:
        return "original"


def _shouting(original):
    def method(self) -> str:
        return original(self).upper()

    method.__wrapped__ = original
    return method


def test_every_patch_is_declared_with_target_why_when_and_retirement():
    assert len({patch.target for patch in patches.PATCHES}) == len(patches.PATCHES)
    for patch in patches.PATCHES:
        for text in (patch.target, patch.why, patch.when, patch.retired_by):
            assert text.strip(), patch
        assert importlib.util.find_spec(patch.where) is not None, patch
        assert f"patches.{_constant(patch)}" in _source(patch.where), patch
    constants = {name for name, value in vars(patches).items() if isinstance(value, patches.Patch)}
    assert constants == {_constant(patch) for patch in patches.PATCHES}


def _constant(patch: patches.Patch) -> str:
    (name,) = [name for name, value in vars(patches).items() if value is patch]
    return name


def _source(module: str) -> str:
    return Path(importlib.util.find_spec(module).origin).read_text()


def test_the_backend_patch_names_every_backend():
    for spec in BACKENDS:
        assert spec.name in patches.TOKEN_STATS.why
        assert spec.class_path.rpartition(".")[2] in patches.TOKEN_STATS.why


def test_a_wrap_is_installed_once_marked_and_keeps_the_original(fresh, monkeypatch):
    monkeypatch.setattr(Toy, "method", Toy.method)  # undone after the test
    plain = Toy.method
    calls = []

    def factory(original):
        calls.append(original)
        return _shouting(original)

    assert patches.wrap(patches.TASK_CHECK, Toy, "method", factory)
    wrapped = Toy.method
    assert patches.wrap(patches.TASK_CHECK, Toy, "method", factory)  # once
    assert Toy.method is wrapped and calls == [plain]
    assert Toy().method() == "ORIGINAL"
    assert patches.marked(wrapped) is patches.TASK_CHECK and patches.marked(plain) is None
    assert patches.original(patches.TASK_CHECK, Toy, "method") is plain is wrapped.__wrapped__
    place = f"{__name__}.Toy.method"
    assert patches.state(patches.TASK_CHECK) == f"installed: {place}"
    monkeypatch.setattr(Toy, "method", plain)  # undone by someone
    assert patches.state(patches.TASK_CHECK) == f"installed earlier, no longer in place: {place}"
    patches.wrap(patches.TASK_CHECK, Toy, "method", factory)  # then installed again
    assert len(calls) == 2 and patches.state(patches.TASK_CHECK) == f"installed: {place}"


def test_an_undeclared_patch_is_refused(fresh):
    stray = patches.Patch("x.y", why="w", when="w", retired_by="r", where=__name__)
    with pytest.raises(ValueError, match=r"Patch\('x.y'\) is not declared"):
        patches.wrap(stray, Toy, "method", _shouting)
    assert patches.marked(Toy.method) is None


def test_a_patch_steps_aside_for_its_upstream_replacement(fresh, monkeypatch):
    monkeypatch.setattr(Toy, "method", Toy.method)
    monkeypatch.setattr(manager, "discover_plugin_task_paths", lambda: [], raising=False)
    assert not patches.wrap(patches.TASK_FOLDER, Toy, "method", _shouting)
    assert patches.marked(Toy.method) is None
    assert patches.state(patches.TASK_FOLDER) == (
        "not installed: the harness has lm_eval.tasks.manager.discover_plugin_task_paths"
    )


def test_an_added_method_is_added_once_and_never_over_one_of_the_class(fresh, monkeypatch):
    class Backend:
        pass

    class Foreign:
        def token_stats(self) -> None:
            pass

    def token_stats(self) -> str:
        return "added"

    patches.add(patches.TOKEN_STATS, Backend, "token_stats", token_stats)
    patches.add(patches.TOKEN_STATS, Backend, "token_stats", token_stats)
    assert Backend().token_stats() == "added" and patches.marked(Backend.token_stats)
    assert patches.original(patches.TOKEN_STATS, Backend, "token_stats") is None
    with pytest.raises(RuntimeError, match=r"Foreign already has a 'token_stats' attribute"):
        patches.add(patches.TOKEN_STATS, Foreign, "token_stats", token_stats)


def test_a_finder_is_put_first_once(fresh):
    class Finder:
        def find_spec(self, *args: object) -> None:
            return None

    first, second = Finder(), Finder()
    patches.add_finder(patches.START_UP_WATCHER, first)
    patches.add_finder(patches.START_UP_WATCHER, second)
    assert sys.meta_path[0] is first and second not in sys.meta_path
    assert patches.state(patches.START_UP_WATCHER) == "installed: sys.meta_path"
    sys.meta_path.remove(first)
    assert patches.state(patches.START_UP_WATCHER).startswith("installed earlier")


def test_what_the_package_installs_is_marked_as_declared(monkeypatch):
    from lm_eval import evaluator
    from lm_eval.api.model import LM
    from lm_eval.config.evaluate_config import EvaluatorConfig
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from calib_tasks.command_line.eval import make_task_managers_scan_task_dir
    from calib_tasks.harness import preflight

    # the patches this test installs are undone after it
    monkeypatch.setattr(EvaluatorConfig, "process_tasks", EvaluatorConfig.process_tasks)
    monkeypatch.setattr(evaluator, "evaluate", evaluator.evaluate)
    make_task_managers_scan_task_dir()
    preflight.install()
    assert patches.marked(TaskManager.__init__) is patches.TASK_FOLDER  # (the start-up watcher)
    assert patches.marked(TaskManager.match_tasks) is patches.TASK_CHECK
    assert patches.marked(EvaluatorConfig.process_tasks) is patches.PACKAGE_TASKS_ONLY
    assert patches.marked(evaluator.evaluate) is patches.PREFLIGHT
    assert patches.marked(LM.token_stats) is patches.TOKEN_STATS_DEFAULT
    assert patches.marked(HFLM.token_stats) is patches.TOKEN_STATS
    original = patches.original(patches.PREFLIGHT, evaluator, "evaluate")
    assert evaluator.evaluate.__wrapped__ is original and patches.marked(original) is None
    for patch in patches.PATCHES[1:]:
        assert patches.state(patch).startswith("installed: "), patch


# Changes of the harness made elsewhere than through calib_tasks.patches.
_ELSEWHERE = re.compile(
    r"\bsetattr\(|meta_path\.(insert|append)|"
    r"\b(TaskManager|EvaluatorConfig|evaluator|LM|HFLM)\.\w+\s*=[^=]"
)


def test_nothing_else_in_the_package_changes_the_harness():
    found = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "patches.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if _ELSEWHERE.search(line)
    ]
    assert not found


def test_the_declarations_import_nothing():
    """They are imported at every interpreter start (the .pth line); -S: without site, so
    without the .pth itself."""
    code = (
        "import sys; before = set(sys.modules); import calib_tasks.patches; "
        "print(sorted(set(sys.modules) - before))"
    )
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    proc = subprocess.run(
        [sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True, check=True
    )
    loaded = set(ast.literal_eval(proc.stdout))
    assert loaded <= {"calib_tasks", "calib_tasks.patches", "__future__"}
