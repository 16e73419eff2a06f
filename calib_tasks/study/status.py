"""``calib-study --status``: what state each point of a study is in, read from its output
folder (and, for a study on SLURM, from SLURM's account of its recorded jobs) without running,
submitting or locking anything (beyond probing the points' locks for a moment)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from calib_tasks.study.failure import failure_reason
from calib_tasks.study.layout import POINT_RECORD, StudyLayout
from calib_tasks.study.lifetime import lock_holder
from calib_tasks.study.runner import _changed_settings, evaluation_key, is_published
from calib_tasks.study.slurm_jobs import JobState
from calib_tasks.study.spec import EvalSettings, PointEntry, PointSpec


def _last_events(layout: StudyLayout) -> dict[str, dict[str, Any]]:
    """The latest event of each point in the study's run log."""
    last: dict[str, dict[str, Any]] = {}
    try:
        lines = layout.run_log.read_text(encoding="utf-8").splitlines()
    except OSError:
        return last
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and isinstance(event.get("point"), str):
            last[event["point"]] = event
    return last


def _seconds(folder: Path) -> str:
    try:
        record = json.loads((folder / POINT_RECORD).read_text(encoding="utf-8"))
        return f" (evaluated in {float(record['seconds']):.1f} s)"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def point_state(
    spec: PointSpec, settings: EvalSettings, layout: StudyLayout, last: dict[str, Any] | None
) -> str:
    """One point's state in words: ``done``, ``running elsewhere (calib-study pid N)``,
    ``failed last time: REASON``, ``not started`` and the like."""
    held = lock_holder(layout.lock_file(spec.name))
    if held is not None:
        pid = f" (calib-study pid {held.holder})" if held.holder is not None else ""
        return f"running elsewhere{pid}"
    final = layout.point_dir(spec.name)
    evaluation = evaluation_key(spec, settings)
    if is_published(final, evaluation):
        return f"done{_seconds(final)}"
    changed = _changed_settings(final, evaluation)
    if changed:
        return f"done with other settings ({', '.join(changed)} changed since): will run again"
    if last is not None and last.get("status") == "failed":
        reason = last.get("reason") or ""
        if not reason:
            try:
                output = layout.log_file(spec.name).read_text(encoding="utf-8", errors="replace")
                reason = failure_reason(output, 1)
            except OSError:
                reason = "no error message logged"
        return f"failed last time: {reason}"
    if layout.partial_dir(spec.name).exists():
        return "not finished (its last attempt was interrupted)"
    return "not started"


def print_status(
    entries: Sequence[PointEntry],
    settings: EvalSettings,
    layout: StudyLayout,
    out: TextIO,
    jobs: Mapping[str, tuple[str, JobState]] | None = None,
) -> None:
    """One line per point: ``[2/4] name: STATE`` (``point_state``; invalid points with their
    problems). ``jobs``: ``{name: (job id, JobState)}`` of the points' recorded SLURM jobs; a
    point whose job has not ended is ``job 1000_1 RUNNING``, one whose job has ended (or
    published the point and is still ending) has its state followed by ``; job 1000_1
    COMPLETED``."""
    jobs = jobs or {}
    last = _last_events(layout)
    total = len(entries)
    for position, entry in enumerate(entries, start=1):
        if entry.spec is None:
            state = f"INVALID: {'; '.join(entry.problems)}"
        elif (
            entry.spec.name in jobs
            and not jobs[entry.spec.name][1].ended
            and not is_published(
                layout.point_dir(entry.spec.name), evaluation_key(entry.spec, settings)
            )
        ):
            job_id, job = jobs[entry.spec.name]
            state = f"job {job_id} {job.state}"
        else:
            state = point_state(entry.spec, settings, layout, last.get(entry.spec.name))
            if entry.spec.name in jobs:
                job_id, job = jobs[entry.spec.name]
                state += f"; job {job_id} {job.state}"
        print(f"[{position}/{total}] {entry.label}: {state}", file=out)
