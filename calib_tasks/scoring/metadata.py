"""Reading a task's settings from its ``metadata`` (task YAML, or the harness's ``--metadata``):
name lists such as ``calib_rules`` and ``calib_recalibration``, and no unknown ``calib_`` key.

The keys that start with ``SETTING_PREFIX`` are this package's; every other key of the metadata
belongs to someone else (the harness's ``version``, the ``--model_args`` it merges in, a task's
own dataset function's, such as ``lama_path``) and is left alone.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

#: The prefix of this package's settings among a task's metadata keys.
SETTING_PREFIX = "calib_"


def check_setting_keys(metadata: Mapping[str, Any] | None, known: Sequence[str], task: str) -> None:
    """Raise ``ValueError`` naming the task, the key and the nearest of the ``known`` settings
    for a key of ``metadata`` that starts with ``SETTING_PREFIX`` and is not one of them (a typo
    would otherwise leave the default in place without a word)."""
    for key in metadata or {}:
        if isinstance(key, str) and key.startswith(SETTING_PREFIX) and key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"the settings are {list(known)}"
            raise ValueError(
                f"{task}: unknown setting {key!r} in the task's metadata or --metadata ({hint})"
            )


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
