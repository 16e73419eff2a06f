"""``calib-eval``: the harness's own ``lm_eval`` command that already knows this package's tasks.

Same subcommands (run, ls, validate), flags and output files as ``lm_eval``: the arguments are
handed unchanged to ``lm_eval.__main__.cli_evaluate``. The only difference is that every
``TaskManager`` built in the process that indexes the harness's tasks (``include_defaults=True``,
as the harness's CLI builds them) scans this package's task folder (``calib_tasks.task_dir()``)
too, before a user's own ``--include_path`` (which, scanned later, may override a task of this
package), and that the names it matches are checked for broken package tasks before the model
loads, as the installed package's start-up activation does for the plain ``lm_eval``. And
when ``--tasks`` names only this package's tasks and groups whose members are all this
package's (and there is no ``--include_path``), the harness's own task folder, thousands of YAML
files that take ~12 s to index on a 2-core CPU, is not scanned at all.

``calib-eval --task-dir`` prints that folder, for the plain-harness route::

    lm_eval --include_path "$(calib-eval --task-dir)" --model hf ... --tasks calib_mmlu

``calib-eval --patches`` lists every change the package makes to the harness
(``calib_tasks.patches``), each with its state in the process once calib-eval has installed its
own, as before a run.
"""

from __future__ import annotations

import functools
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

from calib_tasks import patches, task_dir
from calib_tasks.harness.task_paths import (
    names_only_package_tasks,
    package_tasks_only,
    scan_task_dir,
)

PROG = "calib-eval"
TASK_DIR_FLAG = "--task-dir"
PATCHES_FLAG = "--patches"


def _skipping_harness_tasks(process_tasks: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(process_tasks)
    def wrapped(config: Any, *args: Any, **kwargs: Any) -> Any:
        if config.include_path is not None or not names_only_package_tasks(config.tasks):
            return process_tasks(config, *args, **kwargs)
        with package_tasks_only():
            return process_tasks(config, *args, **kwargs)

    return wrapped


def make_task_managers_scan_task_dir() -> None:
    """Make every ``lm_eval.tasks.TaskManager`` built from now on in this process also scan
    ``task_dir()`` (``task_paths.scan_task_dir``), and the CLI's task resolution
    (``EvaluatorConfig.process_tasks``) skip the harness's own task folder when only this
    package's tasks are asked for. Idempotent."""
    from lm_eval.config.evaluate_config import EvaluatorConfig

    scan_task_dir()
    patches.wrap(
        patches.PACKAGE_TASKS_ONLY, EvaluatorConfig, "process_tasks", _skipping_harness_tasks
    )


def patch_listing(width: int = 100) -> str:
    """Every declared patch of the harness with its state in this process, lines wrapped at
    ``width`` (what ``--patches`` prints)."""
    lines = [
        f"lm-eval-calibration's {len(patches.PATCHES)} patches of lm-eval (calib_tasks.patches), "
        "as installed in this process:"
    ]
    for patch in patches.PATCHES:
        lines += ["", patch.target]
        for label, text in (
            ("state", patches.state(patch)),
            ("why", patch.why),
            ("when", patch.when),
            ("code", patch.where),
            ("retired by", patch.retired_by),
        ):
            lines += textwrap.wrap(
                text,
                width,
                initial_indent=f"  {label + ':':<12}",
                subsequent_indent=" " * 14,
                break_on_hyphens=False,
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``calib-eval`` with ``argv`` (default: the process's arguments).

    ``--task-dir`` alone prints the task folder, ``--patches`` alone the patches of the harness
    (``patch_listing``); anything else is the ``lm_eval`` command line, run by the
    harness's own CLI (which exits the process itself on errors, like ``lm_eval``).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args == [TASK_DIR_FLAG]:
        print(task_dir())
        return
    make_task_managers_scan_task_dir()
    if args == [PATCHES_FLAG]:
        print(patch_listing())
        return
    from lm_eval.__main__ import cli_evaluate

    sys.argv = [PROG, *args]
    cli_evaluate()


if __name__ == "__main__":
    main()
