"""Harness glue of lm-eval-calibration: tasks, per-sample records and registered aggregations.

Everything that imports ``lm_eval`` lives in this package; the metrics themselves are in the
harness-free ``calib_metrics``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

__all__ = ["package_tasks", "task_dir"]


def task_dir() -> Path:
    """The folder of this package's task YAMLs: pass it to ``lm_eval --include_path``."""
    import task_configs

    return Path(task_configs.__file__).parent


@functools.cache
def package_tasks() -> Any:
    """A ``lm_eval.tasks.TaskManager`` that knows this package's tasks and groups only (the
    harness's own task folder is not indexed), built once per process."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(task_dir()), include_defaults=False)
