"""Harness glue of lm-eval-calibration: tasks, per-sample records and registered aggregations.

Everything that imports ``lm_eval`` lives in this package; the metrics themselves are in the
harness-free ``calib_metrics``.
"""

from __future__ import annotations

__all__ = ["package_tasks", "task_dir"]

# No imports at module level: ``calib_tasks.harness.activation`` is imported at every interpreter
# start.
_package_tasks = None


def task_dir() -> pathlib.Path:  # noqa: F821  (imported inside: start-up cost)
    """The folder of this package's task YAMLs: pass it to ``lm_eval --include_path``."""
    from pathlib import Path

    import task_configs

    return Path(task_configs.__file__).parent


def package_tasks() -> lm_eval.tasks.TaskManager:  # noqa: F821  (idem)
    """A ``lm_eval.tasks.TaskManager`` that knows this package's tasks and groups only (the
    harness's own task folder is not indexed), built once per process."""
    global _package_tasks
    if _package_tasks is None:
        from lm_eval.tasks import TaskManager

        _package_tasks = TaskManager(include_path=str(task_dir()), include_defaults=False)
    return _package_tasks
