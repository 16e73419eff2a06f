"""Running a study's points as SLURM jobs through submitit (``executor: {kind: slurm}``).

Every point still to evaluate becomes one job, and all of them one job array (submitit's
``batch``), at most ``parallel`` at once (the array's ``%N``), with the resources of the study
file's ``slurm`` block; points run under ``accelerate launch`` ask for one GPU per process, in
an array of their own per number of processes.

A job runs ``run_point`` on its node, so the guarantees of a study run in one process hold
across jobs: the job holds the point's lock, evaluates into the partial folder, publishes only
a folder with exactly one run, skips a point finished earlier and evaluates a changed one
again. These rest on ``flock`` locks: the study folder, and submitit's folder
(``StudyLayout.slurm_dir``) inside it, must be on a filesystem that the nodes share and whose
locks hold across nodes.

The jobs of each ``sbatch`` are recorded in ``slurm_jobs.json`` as soon as SLURM took them,
with the settings each evaluates (``evaluation_key``); when a later ``sbatch`` fails, or Ctrl-C
or SIGTERM comes while submitting, the jobs already submitted are cancelled. A later run of the
study follows a recorded job for the same settings that is still live, instead of submitting
the point again; a live job evaluating earlier settings is cancelled, and the point's new job
starts once it has ended (``afterany``). Deciding and recording happen under the study's submit
lock, so that two runs never submit a point twice. Whether a job is live, and how jobs are
followed and cancelled: ``calib_tasks.study.slurm_jobs``.

While following its jobs, the study prints a progress line whenever a point's job changes state
(PENDING, RUNNING, SUSPENDED...) and one when it ends (done, or FAILED with the last error of
its log and the field blamed). Ctrl-C or SIGTERM cancels (``scancel``) every job still live and
says which (and which could not be cancelled); a second Ctrl-C does not cut that short.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

from calib_tasks.study.failure import output_tail
from calib_tasks.study.layout import StudyLayout
from calib_tasks.study.lifetime import take_lock
from calib_tasks.study.runner import (
    PointOutcome,
    evaluation_key,
    is_published,
    log_event,
    run_point,
    with_blamed_fields,
)
from calib_tasks.study.slurm_jobs import (
    JobFailed,
    JobState,
    JobStates,
    SubmissionError,
    cancel_jobs,
    follow_jobs,
    import_submitit,
    interrupts_deferred,
    job_result,
    sigterm_interrupts,
    slurm_executor,
    slurm_job,
    submission_errors,
)
from calib_tasks.study.spec import EvalSettings, Executor, PointEntry, PointSpec


def evaluate_in_job(spec: PointSpec, settings: EvalSettings, root: str) -> PointOutcome:
    """What a point's job runs on its node: ``run_point`` for the study folder ``root``, its
    progress line on the job's standard output (the harness's output goes to the point's log,
    as in a local run)."""
    print(f"{spec.description()}: ", end="", flush=True)
    return run_point(spec, settings, StudyLayout(Path(root)))


@dataclass(frozen=True)
class JobRecord:
    """The job last submitted for a point, and the settings it evaluates the point with."""

    job_id: str
    evaluation: Mapping[str, Any]


def read_job_records(layout: StudyLayout) -> dict[str, JobRecord]:
    """The jobs recorded in the study's ``slurm_jobs.json`` by point name (none when missing
    or unreadable)."""
    try:
        raw = json.loads(layout.slurm_jobs.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    return {
        name: JobRecord(str(entry["job_id"]), entry.get("evaluation") or {})
        for name, entry in raw.items()
        if isinstance(entry, dict) and "job_id" in entry
    }


def _write_job_records(layout: StudyLayout, records: Mapping[str, JobRecord]) -> None:
    data = {
        name: {"job_id": record.job_id, "evaluation": dict(record.evaluation)}
        for name, record in records.items()
    }
    partial = layout.slurm_jobs.with_suffix(".json.partial")
    partial.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    partial.replace(layout.slurm_jobs)


def recorded_job_states(
    submitit: ModuleType, layout: StudyLayout
) -> dict[str, tuple[str, JobState]]:
    """``{point name: (job id, JobState)}`` of the jobs recorded for the study, asked of SLURM
    (one ``sacct`` for all, ``squeue`` for those sacct does not know) without submitting
    anything."""
    jobs = {
        name: slurm_job(submitit, layout.slurm_dir, record.job_id)
        for name, record in read_job_records(layout).items()
    }
    states = JobStates().read(list(jobs.values()))
    return {name: (job.job_id, states[job.job_id]) for name, job in jobs.items()}


@dataclass(frozen=True)
class _Followed:
    position: int
    spec: PointSpec
    evaluation: Mapping[str, Any]
    job: Any


def _ended_outcome(
    followed: _Followed,
    state: str,
    settings: EvalSettings,
    layout: StudyLayout,
    submitit: ModuleType,
) -> tuple[PointOutcome, list[str]]:
    """The outcome of a point whose job has ended in ``state``, and the lines to show under its
    progress line when it failed: the end of the log that tells why, then where that log is."""
    job, spec = followed.job, followed.spec
    log_file = layout.log_file(spec.name)
    try:
        outcome = job_result(submitit, job, state, log_file)
    except JobFailed as failed:
        reason = with_blamed_fields(failed.reason, spec, settings)
        return PointOutcome(
            spec.name, spec, "failed", 0.0, reason, followed.evaluation
        ), failed.tail
    if outcome.status != "failed":
        return outcome, []
    try:
        point_log = log_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        point_log = ""
    return outcome, [*output_tail(point_log), f"full output: {log_file}"]


def _progress_text(outcome: PointOutcome) -> str:
    if outcome.status == "done":
        return f"done in {outcome.seconds:.1f} s"
    if outcome.status == "skipped":
        return "skipped: finished earlier"
    return f"FAILED: {outcome.reason}"


def _submit_group(
    submitit: ModuleType,
    executor: Executor,
    layout: StudyLayout,
    settings: EvalSettings,
    specs: Sequence[PointSpec],
    dependency: str | None,
) -> list[Any]:
    """Submit one job per point of ``specs`` (points asking for the same number of GPUs,
    ``num_processes``) as one job array (one ``sbatch``), after ``dependency`` when given;
    returns the jobs (``slurm_job``) in the order of ``specs``."""
    root = str(layout.root.resolve())
    gpus = specs[0].num_processes
    made = slurm_executor(
        submitit, executor, layout.slurm_dir, len(specs), gpus=gpus, dependency=dependency
    )
    try:
        with made.batch():
            jobs = [made.submit(evaluate_in_job, spec, settings, root) for spec in specs]
    except submission_errors(submitit) as error:
        raise SubmissionError(f"SLURM did not take the jobs: {error}") from None
    return [slurm_job(submitit, layout.slurm_dir, job.job_id) for job in jobs]


@dataclass(frozen=True)
class _ToSubmit:
    position: int
    spec: PointSpec
    evaluation: Mapping[str, Any]
    after: str | None  # the job id of a cancelled job evaluating earlier settings


def _submit_all(
    submitit: ModuleType,
    executor: Executor,
    layout: StudyLayout,
    settings: EvalSettings,
    todo: Sequence[_ToSubmit],
    records: dict[str, JobRecord],
    say: Callable[[int, str, str], None],
) -> list[_Followed]:
    """Submit the points of ``todo``, one job array per number of GPUs they ask for (a group
    whose points replace cancelled jobs starts after those have ended: ``afterany``), each
    group recorded in ``records`` and ``slurm_jobs.json`` as soon as SLURM took it (Ctrl-C and
    SIGTERM wait meanwhile). When anything goes wrong or interrupts before every group is
    submitted, cancels the jobs submitted (``cancel_jobs``) and raises it again."""
    submitted: list[_Followed] = []
    try:
        for gpus in dict.fromkeys(item.spec.num_processes for item in todo):
            group = [item for item in todo if item.spec.num_processes == gpus]
            stale = [item.after for item in group if item.after is not None]
            dependency = f"afterany:{':'.join(stale)}" if stale else None
            with interrupts_deferred():
                specs = [item.spec for item in group]
                jobs = _submit_group(submitit, executor, layout, settings, specs, dependency)
                for item, job in zip(group, jobs, strict=True):
                    records[item.spec.name] = JobRecord(job.job_id, item.evaluation)
                    submitted.append(_Followed(item.position, item.spec, item.evaluation, job))
                _write_job_records(layout, records)
            for item in submitted[-len(group) :]:
                say(item.position, item.spec.name, f"submitted as job {item.job.job_id}")
    except BaseException:
        cancel_jobs([(item.spec.name, item.job) for item in submitted])
        raise
    return submitted


def run_points_slurm(
    entries: Sequence[PointEntry],
    settings: EvalSettings,
    layout: StudyLayout,
    executor: Executor,
    out: TextIO | None = None,
) -> list[PointOutcome]:
    """Evaluate every valid point as a SLURM job (see the module docstring), one progress line
    on ``out`` (default: standard output) per point and change of its job's state; returns the
    outcomes in the order of ``entries`` once every job has ended, each appended to the study's
    run log. A point finished earlier with the same settings is skipped without a job; invalid
    points are reported and skipped. A recorded job still live that evaluates a point with
    earlier settings is cancelled, and the point's new job starts once it has ended. Raises
    ``SubmissionError`` when SLURM does not take the jobs, after cancelling those it took, and
    KeyboardInterrupt when interrupted (Ctrl-C or SIGTERM), after cancelling the jobs submitted
    (while submitting) or every job followed that has not ended (while following); either way
    saying which on standard error."""
    submitit = import_submitit()
    out = out or sys.stdout
    total = len(entries)
    outcomes: dict[int, PointOutcome] = {}
    followed: list[_Followed] = []

    def say(position: int, label: str, text: str) -> None:
        print(f"[{position}/{total}] {label}: {text}", file=out, flush=True)

    def settle(position: int, text: str, outcome: PointOutcome, tail: Sequence[str] = ()) -> None:
        say(position, outcome.label, text)
        *log_lines, where = tail or [""]
        for line in log_lines:
            print(f"      | {line}", file=out)
        if where:
            print(f"      {where}", file=out)
        out.flush()
        log_event(layout, outcome)
        outcomes[position] = outcome

    layout.submit_lock.parent.mkdir(parents=True, exist_ok=True)
    with sigterm_interrupts():
        with take_lock(layout.submit_lock, wait=True):
            records = read_job_records(layout)
            recorded = {
                name: slurm_job(submitit, layout.slurm_dir, record.job_id)
                for name, record in records.items()
            }
            states = JobStates().read(list(recorded.values()))  # one sacct for all
            todo: list[_ToSubmit] = []
            for position, entry in enumerate(entries, start=1):
                if entry.spec is None:
                    reason = "; ".join(entry.problems)
                    settle(
                        position,
                        f"INVALID: {reason}",
                        PointOutcome(entry.label, None, "invalid", reason=reason),
                    )
                    continue
                spec = entry.spec
                evaluation = evaluation_key(spec, settings)
                job = recorded.get(spec.name)
                live = job is not None and not states[job.job_id].ended
                if live and records[spec.name].evaluation == evaluation:
                    followed.append(_Followed(position, spec, evaluation, job))
                    say(position, spec.name, f"job {job.job_id} submitted earlier, following it")
                    continue
                if live:
                    say(
                        position,
                        spec.name,
                        f"job {job.job_id} evaluates earlier settings: cancelling it",
                    )
                    cancel_jobs([(spec.name, job)])
                if is_published(layout.point_dir(spec.name), evaluation):
                    settle(
                        position,
                        "skipped: finished earlier",
                        PointOutcome(spec.name, spec, "skipped", evaluation=evaluation),
                    )
                    continue
                todo.append(_ToSubmit(position, spec, evaluation, job.job_id if live else None))
            if todo:
                followed += _submit_all(submitit, executor, layout, settings, todo, records, say)
        out.flush()

        by_label = {item.spec.name: item for item in followed}

        def on_state(label: str, job: Any, state: str) -> None:
            say(by_label[label].position, label, f"job {job.job_id} {state}")

        def on_end(label: str, job: Any, state: str) -> None:
            item = by_label[label]
            outcome, tail = _ended_outcome(item, state, settings, layout, submitit)
            settle(item.position, f"job {job.job_id} {_progress_text(outcome)}", outcome, tail)

        follow_jobs([(item.spec.name, item.job) for item in followed], on_state, on_end)
    return [outcomes[position] for position in sorted(outcomes)]
