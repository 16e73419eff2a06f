"""Checks of a run's backend against its calib tasks, before the evaluator sends any request.

The evaluator runs one request type after another (``lm_eval.evaluator.evaluate``), so a backend
that cannot answer ``token_stats`` would otherwise fail only after every other request type of
the run had finished. ``install`` wraps the harness's ``evaluate`` (which ``simple_evaluate``, and
so the ``lm_eval`` command, looks up by name when it calls it) with that check (the patch
``calib_tasks.patches.PREFLIGHT``); the wrapper is installed once, while the first calib task
loads.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from calib_tasks import patches
from calib_tasks.token_stats import REQUEST_TYPE, UnsupportedBackendError, check_backend


def _tasks_in(task_dict: Any) -> Iterator[Any]:
    """Every task object in ``task_dict`` (``TaskManager.load``'s dict or the older nested one)."""
    if isinstance(task_dict, Mapping):
        for value in task_dict.values():
            yield from _tasks_in(value)
    elif isinstance(task_dict, (list, tuple)):
        for value in task_dict:
            yield from _tasks_in(value)
    elif hasattr(task_dict, "build_all_requests"):
        yield task_dict


def check_run(lm: Any, task_dict: Any) -> None:
    """Raise ``UnsupportedBackendError`` naming the first task of ``task_dict`` whose
    ``request_type`` is ``token_stats`` (a ``TokenStatsTask``) when the backend ``lm`` cannot
    answer those requests, or whose own ``check_backend(lm)`` (a generative task's: can the
    backend serve its confidence methods?) raises."""
    for task in _tasks_in(task_dict):
        own_check = getattr(task, "check_backend", None)
        if callable(own_check):
            own_check(lm)
    for task in _tasks_in(task_dict):
        if getattr(task, "request_type", None) == REQUEST_TYPE:
            try:
                check_backend(lm)
            except UnsupportedBackendError as error:
                reason = getattr(task, "request_type_reason", None)
                why = f" ({reason})" if reason else ""
                raise UnsupportedBackendError(f"task {task.config.task!r}{why}: {error}") from None
            return


def _checking_run(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def evaluate(lm: Any, task_dict: Any, *args: Any, **kwargs: Any) -> Any:
        check_run(lm, task_dict)
        return original(lm, task_dict, *args, **kwargs)

    return evaluate


def install() -> None:
    """Wrap ``lm_eval.evaluator.evaluate`` with ``check_run`` (idempotent)."""
    from lm_eval import evaluator

    patches.wrap(patches.PREFLIGHT, evaluator, "evaluate", _checking_run)
