"""Why a point's harness process failed, told from its output and exit status."""

from __future__ import annotations

import re
import signal
from collections.abc import Collection

TAIL_LINES = 12
MAX_REASON = 300
_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt))(?::\s*(.*))?$")
_PROGRESS = re.compile(r"\d+/\d+ \[[\d:<?,. ]*(?:it/s|s/it)?\]|\|\s*\d+%")
# What transformers, huggingface_hub and peft say when a point's field names something that
# cannot be loaded (transformers.utils.hub turns most hub errors into these OSErrors).
_FIELD_ERRORS = (
    # lm_eval's check of --samples, which carries the study's per-task limits
    ("limit", re.compile(r"Elements of --samples should be in the interval")),
    ("revision", re.compile(r"is not a valid git identifier|RevisionNotFound")),
    # accelerate launch without accelerate installed
    ("launcher", re.compile(r"No module named '?accelerate")),
    ("peft", re.compile(r"PeftModel|[Aa]dapter")),
    (
        "model",
        re.compile(
            r"is not a local folder and is not a valid model identifier|RepositoryNotFound"
            r"|does not appear to have a file named config\.json|Repo id must be in the form"
        ),
    ),
)
_NOT_CACHED = "couldn't find them in the cached files"


def output_lines(output: str) -> list[str]:
    """The non-empty lines of a process's output, progress-bar redraws removed."""
    lines = []
    for line in output.replace("\r", "\n").splitlines():
        if line.strip() and not _PROGRESS.search(line):
            lines.append(line.rstrip())
    return lines


def last_error(output: str) -> str | None:
    """The last exception the output shows, in one line (with its first detail line when the
    message continues below it); None when it shows none."""
    lines = output_lines(output)
    for i in range(len(lines) - 1, -1, -1):
        match = _EXCEPTION.match(lines[i].strip())
        if match is None:
            continue
        reason = lines[i].strip()
        if (not match.group(2) or reason.endswith(":")) and i + 1 < len(lines):
            reason += " " + lines[i + 1].strip()
        return reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 3] + "..."
    return None


def failure_reason(output: str, returncode: int) -> str:
    """One line: the last exception the output shows (``last_error``), else what the exit
    status says."""
    error = last_error(output)
    if error is not None:
        return error
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (out of memory?)" if -returncode == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit status {returncode}, no error message in the output"


def blamed_fields(reason: str, given: Collection[str]) -> tuple[str, ...]:
    """The fields that a failure ``reason`` (``failure_reason``) points at, among the fields
    ``given`` (e.g. ``{"model", "revision"}``): a per-task ``limit`` above a task's number of
    documents, a revision that does not exist, an adapter that does not load onto the model, a
    model that does not exist; for files neither on the hub nor in the local hub cache, the
    model and its revision together."""
    for field, pattern in _FIELD_ERRORS:
        if field in given and pattern.search(reason):
            return (field,)
    if _NOT_CACHED in reason:
        return tuple(field for field in ("model", "revision") if field in given)
    return ()


def output_tail(output: str, n_lines: int = TAIL_LINES) -> list[str]:
    """The last ``n_lines`` meaningful lines of the output."""
    return output_lines(output)[-n_lines:]
