"""Harness glue of lm-eval-calibration: tasks, per-sample records and registered aggregations.

Everything that imports ``lm_eval`` lives in this package; the metrics themselves are in the
harness-free ``calib_metrics``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["task_dir"]


def task_dir() -> Path:
    """The folder of this package's task YAMLs: pass it to ``lm_eval --include_path``."""
    import task_configs

    return Path(task_configs.__file__).parent
