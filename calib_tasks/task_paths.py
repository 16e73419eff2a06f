"""Making the harness's ``TaskManager`` see this package's task folder, and the index shortcut.

``scan_task_dir()`` wraps ``lm_eval.tasks.TaskManager.__init__`` so that every task manager
built from then on scans ``calib_tasks.task_dir()`` after the harness's own tasks and before a
user's ``--include_path`` (which, scanned later, may override a task of this package): the
precedence of lm-eval's task plugins (builtin < plugin < include path). Both routes use it: the
start-up activation for the plain ``lm_eval`` command (``calib_tasks.activation``) and
``calib-eval``, which moreover skips the harness's own task folder (thousands of YAML files,
~12 s to index on a 2-core CPU) while ``package_tasks_only()`` is entered.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from calib_tasks import package_tasks, task_dir

_MARK = "scans_calib_task_dir"
# The task managers built through the wrapper, newest last (for ``harness_entry``).
_task_managers: list[weakref.ref] = []
_package_tasks_only: ContextVar[bool] = ContextVar("package_tasks_only", default=False)


def include_paths_with_task_dir(
    include_path: str | Path | Sequence[str | Path] | None,
) -> list[Path]:
    """``include_path`` in TaskManager's forms (None, one path, a list) as a list of folders.

    The list starts with this package's task folder and keeps the caller's paths after it, in
    order, without repeating a folder (a repeat would make the harness warn that every task
    overrides itself).
    """
    if include_path is None:
        given: list[str | Path] = []
    elif isinstance(include_path, (str, Path)):
        given = [include_path]
    else:
        given = list(include_path)
    paths: list[Path] = []
    seen: set[Path] = set()
    for path in [task_dir(), *map(Path, given)]:
        resolved = path.resolve()
        if resolved not in seen:
            seen.add(resolved)
            paths.append(path)
    return paths


def _scanning_task_dir(init: Callable[..., None]) -> Callable[..., None]:
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapped(*args: Any, **kwargs: Any) -> None:
        bound = signature.bind(*args, **kwargs)
        bound.arguments["include_path"] = include_paths_with_task_dir(
            bound.arguments.get("include_path")
        )
        if _package_tasks_only.get():
            bound.arguments["include_defaults"] = False
        init(*bound.args, **bound.kwargs)
        _task_managers[:] = [ref for ref in _task_managers if ref() is not None]
        _task_managers.append(weakref.ref(bound.arguments["self"]))

    setattr(wrapped, _MARK, True)
    return wrapped


def scan_task_dir(task_manager: type | None = None) -> None:
    """Make every ``TaskManager`` (``task_manager``, default the harness's) built from now on
    also scan ``task_dir()``. Idempotent."""
    if task_manager is None:
        from lm_eval.tasks import TaskManager as task_manager
    if not getattr(task_manager.__init__, _MARK, False):
        task_manager.__init__ = _scanning_task_dir(task_manager.__init__)


@contextlib.contextmanager
def package_tasks_only() -> Iterator[None]:
    """Within: task managers built by ``scan_task_dir``'s wrapper skip the harness's own tasks."""
    token = _package_tasks_only.set(True)
    try:
        yield
    finally:
        _package_tasks_only.reset(token)


def names_only_package_tasks(tasks: str | Sequence[str] | None) -> bool:
    """Whether ``tasks`` (the harness's ``--tasks``: ``"a,b"`` or a list of such strings) names
    at least one task, and every name is one of this package's tasks or groups whose members,
    recursively, are this package's too (a glob pattern, a YAML path or a group wrapping a
    harness task by name is not: it needs the harness's index)."""
    if tasks is None:
        return False
    given = [tasks] if isinstance(tasks, str) else list(tasks)
    names = {name.strip() for text in given for name in text.split(",")} - {""}
    return bool(names) and all(_resolves_in_package(name, set()) for name in names)


def _resolves_in_package(name: str, seen: set[str]) -> bool:
    entry = package_tasks().task_index.get(name)
    if entry is None:
        return False
    if name in seen:
        return True
    seen.add(name)
    config = entry.cfg or {}
    if "wraps" in config:  # a calib task wrapping another by name (calib_tasks.multiple_choice)
        return False
    members = config.get("task") if entry.kind.name == "GROUP" else None
    if not isinstance(members, list):
        return True
    return all(
        _resolves_in_package(member, seen) if isinstance(member, str) else True
        for member in members
    )


@functools.cache
def _harness_index() -> Any:
    from lm_eval.tasks import TaskManager

    return TaskManager()


def harness_entry(name: str) -> Any:
    """The index entry of the task ``name`` in the newest task manager of this process that
    knows it (the one loading the tasks, when ``scan_task_dir`` wraps the harness's), else in a
    task manager of the harness's tasks built for this (once per process); None if unknown."""
    for ref in reversed(_task_managers):
        manager = ref()
        if manager is not None and name in manager.task_index:
            return manager.task_index[name]
    return _harness_index().task_index.get(name)
