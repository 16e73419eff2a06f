"""``calib-eval``: the harness's own ``lm_eval`` command that already knows this package's tasks.

Same subcommands (run, ls, validate), flags and output files as ``lm_eval``: the arguments are
handed unchanged to ``lm_eval.__main__.cli_evaluate``. The only difference is that every
``TaskManager`` built in the process scans this package's task folder (``calib_tasks.task_dir()``)
in addition to the harness's tasks and a user's own ``--include_path`` (which, scanned later, may
override a task of this package).

``calib-eval --task-dir`` prints that folder, for the plain-harness route::

    lm_eval --include_path "$(calib-eval --task-dir)" --model hf ... --tasks calib_mmlu
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from calib_tasks import task_dir

PROG = "calib-eval"
TASK_DIR_FLAG = "--task-dir"


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
        init(*bound.args, **bound.kwargs)

    wrapped.scans_calib_task_dir = True  # type: ignore[attr-defined]
    return wrapped


def make_task_managers_scan_task_dir() -> None:
    """Make every ``lm_eval.tasks.TaskManager`` built from now on in this process also scan
    ``task_dir()``. Idempotent."""
    from lm_eval.tasks import TaskManager

    if not getattr(TaskManager.__init__, "scans_calib_task_dir", False):
        TaskManager.__init__ = _scanning_task_dir(TaskManager.__init__)  # type: ignore[method-assign]


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
