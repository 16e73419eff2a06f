"""Reading a task's settings: name lists in its ``metadata`` (task YAML, or the harness's
``--metadata``), such as ``calib_rules`` and ``calib_recalibration``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def setting_names(
    metadata: Mapping[str, Any] | None, key: str, default: Sequence[str], task: str
) -> list[str]:
    """The names under ``key`` of ``metadata`` (a list, or a comma-separated string; blanks
    dropped), ``default`` when absent; a value of another type is an error naming task and key."""
    value = (metadata or {}).get(key, default)
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"{task}: {key} must be a list of names or a comma-separated string, got {value!r}"
        )
    return [n.strip() for n in names if n.strip()]
