"""Making the harness's ``TaskManager`` see this package's task folder, and check its tasks early.

``scan_task_dir()`` wraps two methods of ``lm_eval.tasks.TaskManager`` (the patches
``calib_tasks.patches.TASK_FOLDER`` and ``TASK_CHECK``):

* ``__init__``: a task manager that indexes the harness's own tasks (``include_defaults=True``,
  the default) also scans ``calib_tasks.task_dir()``, after the harness's tasks and before a
  user's ``include_path`` (which, scanned later, may override a task of this package): the
  precedence of lm-eval's task plugins (builtin < plugin < include path). One built with
  ``include_defaults=False`` indexes only the caller's own paths, as the harness documents, and
  every task manager keeps ``include_path`` as the caller gave it.
* ``match_tasks`` (what ``lm_eval validate`` and ``lm_eval run`` resolve ``--tasks`` with, before
  the model loads): the names it matches are also checked for this package's tasks whose config
  cannot make a task (``check_package_tasks``: the task class's own ``check_config``), so that
  they fail there, not after the model has loaded.

Both routes use it: the start-up activation for the plain ``lm_eval`` command
(``calib_tasks.harness.activation``) and ``calib-eval``, which moreover skips the harness's own
task folder
(thousands of YAML files, ~12 s to index on a 2-core CPU) while ``package_tasks_only()`` is
entered: a task manager that would index the harness's tasks indexes this package's instead.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from calib_tasks import package_tasks, patches, task_dir

_PACKAGE = "calib_tasks"
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
        bound.apply_defaults()
        given = bound.arguments["include_path"]
        if bound.arguments["include_defaults"]:
            bound.arguments["include_path"] = include_paths_with_task_dir(given)
            bound.arguments["include_defaults"] = not _package_tasks_only.get()
        init(*bound.args, **bound.kwargs)
        manager = bound.arguments["self"]
        manager.include_path = given
        _task_managers[:] = [ref for ref in _task_managers if ref() is not None]
        _task_managers.append(weakref.ref(manager))

    return wrapped


def _checking_package_tasks(match_tasks: Callable[..., list[str]]) -> Callable[..., list[str]]:
    @functools.wraps(match_tasks)
    def wrapped(self: Any, task_list: list[str]) -> list[str]:
        names = match_tasks(self, task_list)
        check_package_tasks(self, names)
        return names

    return wrapped


def scan_task_dir() -> None:
    """Make every ``lm_eval.tasks.TaskManager`` built from now on with ``include_defaults=True``
    also scan ``task_dir()`` (unless the harness discovers it itself), and its ``match_tasks``
    check this package's tasks among the names it matches (module docstring). Idempotent."""
    from lm_eval.tasks import TaskManager

    patches.wrap(patches.TASK_FOLDER, TaskManager, "__init__", _scanning_task_dir)
    patches.wrap(patches.TASK_CHECK, TaskManager, "match_tasks", _checking_package_tasks)


def check_package_tasks(manager: Any, names: Iterable[str]) -> None:
    """Raise ``ValueError`` naming the task for the first of this package's tasks among
    ``names`` (names in ``manager``'s index; groups and tags are followed to their members)
    whose config cannot make a task, as far as that is known without its data: the task
    class's own ``check_config`` (``calib_tasks.tasks.base.CalibTask.check_config``: the task a
    wrapper wraps, the settings in its metadata with ``manager``'s metadata, the harness's
    ``--metadata``, merged over it as the harness does)."""
    entries = _package_task_entries(manager.task_index, names)
    if not entries:
        return
    from lm_eval.tasks._yaml_loader import load_yaml

    for entry in entries:
        config = load_yaml(entry.yaml_path, resolve_func=True)
        own = config.get("metadata")
        config["metadata"] = {
            **(own if isinstance(own, Mapping) else {}),
            **(manager.metadata or {}),
        }
        task_class = config.get("class")
        check_config = getattr(task_class, "check_config", None)
        if isinstance(task_class, type) and callable(check_config):
            check_config(config)


def _package_task_entries(index: Mapping[str, Any], names: Iterable[str]) -> list[Any]:
    """The index entries of this package's task classes (a ``class`` that names
    ``calib_tasks``) among ``names`` and, recursively, the members of its groups and tags."""
    found: list[Any] = []
    seen: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop(0)
        entry = index.get(name)
        if entry is None or name in seen:
            continue
        seen.add(name)
        config = entry.cfg or {}
        if entry.kind.name == "GROUP" and isinstance(config.get("task"), list):
            pending += [_member_name(member) for member in config["task"]]
        elif entry.kind.name == "TAG":
            pending += sorted(entry.tags)
        elif entry.yaml_path is not None and _names_package_class(config.get("class")):
            found.append(entry)
    return found


def _member_name(member: Any) -> Any:
    """A group's member as its ``task:`` list gives it: a name, or a dict naming a task or
    group (with overrides)."""
    if isinstance(member, Mapping):
        return member.get("task", member.get("group"))
    return member


def _names_package_class(task_class: Any) -> bool:
    """Whether an index entry's unresolved ``class`` (``<yaml folder>/<dotted path>``, the
    harness's form of a ``!function`` it has not imported) is one of this package's."""
    return isinstance(task_class, str) and Path(task_class).name.startswith(f"{_PACKAGE}.")


@contextlib.contextmanager
def package_tasks_only() -> Iterator[None]:
    """Within: a task manager built by ``scan_task_dir``'s wrapper with ``include_defaults=True``
    indexes this package's tasks and the caller's ``include_path``, not the harness's own tasks."""
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
    if (
        "wraps" in config
    ):  # a calib task wrapping another by name (calib_tasks.tasks.multiple_choice)
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
