"""The package's bundled mini data (``task_configs/data``), read as the tests read it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from calib_tasks import task_dir


def mini_file(name: str) -> Path:
    """The bundled data file (or folder) ``name``, e.g. ``"mmlu_mini.jsonl"``."""
    return task_dir() / "data" / name


def mini_lines(name: str) -> list[str]:
    """The lines of the bundled JSON Lines file ``name``."""
    return mini_file(name).read_text(encoding="utf-8").splitlines()


def mini_rows(name: str) -> list[dict[str, Any]]:
    """The documents of the bundled JSON Lines file ``name``, in file order."""
    return [json.loads(line) for line in mini_lines(name)]


def mini_pages(n: int) -> list[str]:
    """The first ``n`` pages of the bundled encyclopaedia prose (calib_clm_mini's documents)."""
    return [row["page"] for row in mini_rows("clm_mini.jsonl")[:n]]
