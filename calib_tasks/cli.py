"""``calib-eval``: the harness's own ``lm_eval`` command that already knows this package's tasks.

Same subcommands (run, ls, validate), flags and output files as ``lm_eval``: the arguments are
handed unchanged to ``lm_eval.__main__.cli_evaluate``. The only difference is that every
``TaskManager`` built in the process scans this package's task folder (``calib_tasks.task_dir()``)
in addition to the harness's tasks and a user's own ``--include_path`` (which, scanned later, may
override a task of this package). When ``--tasks`` names only this package's tasks and groups (and
there is no ``--include_path``), the harness's own task folder, thousands of YAML files that take
~12 s to index on a 2-core CPU, is not scanned at all.

``calib-eval --task-dir`` prints that folder, for the plain-harness route::

    lm_eval --include_path "$(calib-eval --task-dir)" --model hf ... --tasks calib_mmlu
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from calib_tasks import package_tasks, task_dir

PROG = "calib-eval"
TASK_DIR_FLAG = "--task-dir"
# Set while the CLI resolves a --tasks list made only of this package's tasks.
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

    wrapped.scans_calib_task_dir = True  # type: ignore[attr-defined]
    return wrapped


def names_only_package_tasks(tasks: str | Sequence[str] | None) -> bool:
    """Whether ``tasks`` (the harness's ``--tasks``: ``"a,b"`` or a list of such strings) names
    at least one task, and every name is one of this package's tasks or groups (a glob pattern or
    a YAML path is not)."""
    if tasks is None:
        return False
    given = [tasks] if isinstance(tasks, str) else list(tasks)
    names = {name.strip() for text in given for name in text.split(",")} - {""}
    return bool(names) and names <= set(package_tasks().all_tasks)


def _skipping_harness_tasks(process_tasks: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(process_tasks)
    def wrapped(config: Any, *args: Any, **kwargs: Any) -> Any:
        if config.include_path is not None or not names_only_package_tasks(config.tasks):
            return process_tasks(config, *args, **kwargs)
        token = _package_tasks_only.set(True)
        try:
            return process_tasks(config, *args, **kwargs)
        finally:
            _package_tasks_only.reset(token)

    wrapped.skips_harness_tasks = True  # type: ignore[attr-defined]
    return wrapped


def make_task_managers_scan_task_dir() -> None:
    """Make every ``lm_eval.tasks.TaskManager`` built from now on in this process also scan
    ``task_dir()``, and the CLI's task resolution (``EvaluatorConfig.process_tasks``) skip the
    harness's own task folder when only this package's tasks are asked for. Idempotent."""
    from lm_eval.config.evaluate_config import EvaluatorConfig
    from lm_eval.tasks import TaskManager

    if not getattr(TaskManager.__init__, "scans_calib_task_dir", False):
        TaskManager.__init__ = _scanning_task_dir(TaskManager.__init__)  # type: ignore[method-assign]
    if not getattr(EvaluatorConfig.process_tasks, "skips_harness_tasks", False):
        EvaluatorConfig.process_tasks = _skipping_harness_tasks(  # type: ignore[method-assign]
            EvaluatorConfig.process_tasks
        )


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``calib-eval`` with ``argv`` (default: the process's arguments).

    ``--task-dir`` alone prints the task folder; anything else is the ``lm_eval`` command line,
    run by the harness's own CLI (which exits the process itself on errors, like ``lm_eval``).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args == [TASK_DIR_FLAG]:
        print(task_dir())
        return
    from lm_eval.__main__ import cli_evaluate

    make_task_managers_scan_task_dir()
    sys.argv = [PROG, *args]
    cli_evaluate()


if __name__ == "__main__":
    main()
