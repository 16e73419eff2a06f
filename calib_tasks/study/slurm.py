"""Running a study's points as SLURM jobs through submitit (``executor: {kind: slurm}``).

Every point still to evaluate becomes one job, and all of them one job array (submitit's
``batch``), at most ``parallel`` at once (the array's ``%N``), with the resources of the study
file's ``slurm`` block; points run under ``accelerate launch`` ask for one GPU per process, in
an array of their own per number of processes.

A job runs ``run_point`` on its node, so the guarantees of a study run in one process hold
across jobs: the job holds the point's lock, evaluates into the partial folder, publishes only
a folder with exactly one run, skips a point finished earlier and evaluates a changed one
again. The study folder must therefore be on a filesystem that the
nodes share, as must submitit's folder (``StudyLayout.slurm_dir``) inside it.

The job submitted for each point is recorded in ``slurm_jobs.json`` with the settings it
evaluates (``evaluation_key``). A later run of the study follows a recorded job for the same
settings that is still queued or running, instead of submitting the point again; deciding and
recording happen under the study's submit lock, so that two runs never submit a point twice.

While following its jobs, the study prints a progress line whenever a point's job changes state
(PENDING, RUNNING) and one when it ends (done, or FAILED with the last error of its log and the
field blamed). Ctrl-C or SIGTERM cancels (``scancel``) every job still queued or running and
says which. submitit is only imported for a study that asks for SLURM (``import_submitit``).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any, TextIO

from calib_tasks.study.failure import last_error, output_tail
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
from calib_tasks.study.spec import EvalSettings, Executor, PointEntry, PointSpec, StudyError

CLUSTER_EXTRA = "pip install 'lm-eval-calibration[cluster]'"
# executor.slurm fields that submitit's AutoExecutor takes as they are; the others are SLURM's
# own and take the "slurm_" prefix
_GENERIC_PARAMETERS = ("timeout_min", "mem_gb", "gpus_per_node", "cpus_per_task")
POLL_SECONDS = 1.0
# SLURM states of a job that has not ended (those submitit waits on, less UNKNOWN: a job that
# sacct does not know, e.g. one purged from its records, is not followed)
LIVE_JOB_STATES = ("PENDING", "RUNNING", "REQUEUED", "COMPLETING", "PREEMPTED", "READY")


class SubmissionError(RuntimeError):
    """SLURM did not take the jobs (no SLURM commands here, sbatch failed or answered
    nonsense)."""


def import_submitit() -> ModuleType:
    """submitit, which only studies run on SLURM need; ``StudyError`` naming the extra to
    install when it is missing."""
    try:
        import submitit
    except ImportError:
        raise StudyError(
            f"executor kind 'slurm' needs submitit, which is not installed: {CLUSTER_EXTRA}"
        ) from None
    return submitit


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


def slurm_executor(
    submitit: ModuleType,
    executor: Executor,
    folder: Path,
    count: int,
    *,
    gpus: int | None = None,
    after: str | None = None,
) -> Any:
    """submitit's SLURM executor for ``count`` jobs (one array), keeping its files in
    ``folder``: the ``slurm`` block's resources, with ``gpus`` GPUs per job when given (points
    run under ``accelerate launch``), at most ``executor.parallel`` jobs at once (all ``count``
    when unset); with ``after``, a job id, they start once that job has completed
    (``afterok``), and SLURM cancels them when it fails."""
    try:
        made = submitit.AutoExecutor(folder=folder, cluster="slurm")
    except RuntimeError as error:  # submitit finds no srun
        raise SubmissionError(f"{error} (run it where SLURM's commands are)") from None
    resources = {**executor.slurm, **({"gpus_per_node": gpus} if gpus is not None else {})}
    if after is not None:
        resources["dependency"] = f"afterok:{after}"
        extra = resources.get("additional_parameters", {})
        resources["additional_parameters"] = {**extra, "kill-on-invalid-dep": "yes"}
    parameters = {
        key if key in _GENERIC_PARAMETERS else f"slurm_{key}": value
        for key, value in resources.items()
    }
    made.update_parameters(
        name=f"calib-{folder.resolve().parent.name}",
        slurm_array_parallelism=executor.parallel or count,
        **parameters,
    )
    return made


def submission_errors(submitit: ModuleType) -> tuple[type[Exception], ...]:
    """What submitting through submitit raises when SLURM does not take a job."""
    utils = submitit.core.utils
    return (OSError, utils.FailedJobError, utils.FailedSubmissionError)


def _job(submitit: ModuleType, layout: StudyLayout, job_id: str) -> Any:
    return submitit.SlurmJob(folder=layout.slurm_dir, job_id=job_id)


def _state(job: Any) -> str:
    """The job's SLURM state, its first word (``CANCELLED by 1000`` -> ``CANCELLED``)."""
    return (job.state.split() or ["UNKNOWN"])[0]


def _is_live(job: Any) -> bool:
    """Whether a recorded job is still queued or running, as far as SLURM knows it."""
    return _state(job) in LIVE_JOB_STATES and not job.done()


def recorded_job_states(submitit: ModuleType, layout: StudyLayout) -> dict[str, tuple[str, str]]:
    """``{point name: (job id, SLURM state)}`` of the jobs recorded for the study, asked of
    SLURM (one ``sacct`` for all) without submitting anything."""
    jobs = {
        name: _job(submitit, layout, record.job_id)
        for name, record in read_job_records(layout).items()
    }
    return {name: (job.job_id, _state(job)) for name, job in jobs.items()}


@dataclass(frozen=True)
class _Followed:
    position: int
    spec: PointSpec
    evaluation: Mapping[str, Any]
    job: Any


class JobFailed(Exception):
    """A job ended without a result (an exception in the job, or SLURM ended it: cancelled,
    time limit, out of memory). ``reason``: ``job 1000_1 ended TIMEOUT: LAST ERROR``, the last
    error of its standard error or, failing that, of ``other_log``; ``tail``: the end of its
    standard error, then where that is."""

    def __init__(self, reason: str, tail: list[str]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tail = tail


def job_result(submitit: ModuleType, job: Any, other_log: Path | None = None) -> Any:
    """What an ended job's function returned; ``JobFailed`` when it returned nothing (see
    there; ``other_log``: a log the job wrote besides its own, e.g. the point's)."""
    try:
        # a job that SLURM ended (cancelled, timed out, out of memory) wrote no result: fail it
        # at once rather than give the shared filesystem time to show it (as job.result does)
        if _state(job) != "COMPLETED" and not job.paths.result_pickle.exists():
            raise submitit.core.utils.UncompletedJobError(job.job_id)
        return job.result()
    except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError):
        stderr = job.stderr() or ""
        try:
            other = other_log.read_text(encoding="utf-8", errors="replace") if other_log else ""
        except OSError:
            other = ""
        error = last_error(stderr) or last_error(other)
        reason = f"job {job.job_id} ended {_state(job)}" + (f": {error}" if error else "")
        raise JobFailed(reason, [*output_tail(stderr), f"job log: {job.paths.stderr}"]) from None


def _ended_outcome(
    followed: _Followed, settings: EvalSettings, layout: StudyLayout, submitit: ModuleType
) -> tuple[PointOutcome, list[str]]:
    """The outcome of a point whose job has ended, and the lines to show under its progress
    line when it failed: the end of the log that tells why, then where that log is."""
    job, spec = followed.job, followed.spec
    log_file = layout.log_file(spec.name)
    try:
        outcome = job_result(submitit, job, log_file)
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


def follow_jobs(
    jobs: Sequence[tuple[str, Any]],
    on_state: Callable[[str, Any, str], None],
    on_end: Callable[[str, Any], None],
) -> None:
    """Wait until every job of ``jobs`` (label, submitit job) has ended, looking every
    ``POLL_SECONDS`` (SLURM is asked as often as submitit's watcher sees fit): calls
    ``on_state(label, job, state)`` whenever a job's SLURM state changes (PENDING, RUNNING;
    UNKNOWN is passed over) and ``on_end(label, job)`` once it has ended. When interrupted
    (Ctrl-C, or SIGTERM, which is made to interrupt meanwhile), cancels every job that has not
    ended (``scancel``), says which on standard error and raises KeyboardInterrupt."""
    waiting = list(jobs)
    seen: dict[str, str] = {}
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while waiting:
            for label, job in list(waiting):
                if job.done():
                    waiting.remove((label, job))
                    on_end(label, job)
                    continue
                state = _state(job)
                if state not in (seen.get(label), "UNKNOWN"):
                    seen[label] = state
                    on_state(label, job, state)
            if waiting:
                time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        for _, job in waiting:
            job.cancel(check=False)
        if waiting:
            cancelled = ", ".join(f"{job.job_id} ({label})" for label, job in waiting)
            print(f"\ncancelled SLURM job(s) {cancelled}", file=sys.stderr, flush=True)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def _progress_text(outcome: PointOutcome) -> str:
    if outcome.status == "done":
        return f"done in {outcome.seconds:.1f} s"
    if outcome.status == "skipped":
        return "skipped: finished earlier"
    return f"FAILED: {outcome.reason}"


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _submit(
    submitit: ModuleType,
    executor: Executor,
    layout: StudyLayout,
    settings: EvalSettings,
    specs: Sequence[PointSpec],
) -> list[Any]:
    """Submit one job per point of ``specs``, as one job array per number of GPUs the points
    ask for (``num_processes``; the others, the ``slurm`` block's); returns the jobs in the
    order of ``specs``."""
    root = str(layout.root.resolve())
    jobs: dict[int, Any] = {}
    for gpus in dict.fromkeys(spec.num_processes for spec in specs):
        group = [index for index, spec in enumerate(specs) if spec.num_processes == gpus]
        made = slurm_executor(submitit, executor, layout.slurm_dir, len(group), gpus=gpus)
        try:
            with made.batch():
                for index in group:
                    jobs[index] = made.submit(evaluate_in_job, specs[index], settings, root)
        except submission_errors(submitit) as error:
            raise SubmissionError(f"SLURM did not take the jobs: {error}") from None
    return [jobs[index] for index in range(len(specs))]


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
    points are reported and skipped. Raises ``SubmissionError`` when SLURM does not take the
    jobs, and KeyboardInterrupt when interrupted (Ctrl-C or SIGTERM), after cancelling every
    job still queued or running (and saying which on standard error)."""
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
    with take_lock(layout.submit_lock, wait=True):
        records = read_job_records(layout)
        # every recorded job made before any is asked about: one sacct answers for all
        recorded = {name: _job(submitit, layout, record.job_id) for name, record in records.items()}
        todo: list[tuple[int, PointSpec, Mapping[str, Any]]] = []
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
            if is_published(layout.point_dir(spec.name), evaluation):
                settle(
                    position,
                    "skipped: finished earlier",
                    PointOutcome(spec.name, spec, "skipped", evaluation=evaluation),
                )
                continue
            record = records.get(spec.name)
            if record is not None and record.evaluation == evaluation:
                job = recorded[spec.name]
                if _is_live(job):
                    followed.append(_Followed(position, spec, evaluation, job))
                    say(position, spec.name, f"job {job.job_id} submitted earlier, following it")
                    continue
            todo.append((position, spec, evaluation))
        if todo:
            jobs = _submit(submitit, executor, layout, settings, [spec for _, spec, _ in todo])
            for (position, spec, evaluation), job in zip(todo, jobs, strict=True):
                records[spec.name] = JobRecord(job.job_id, evaluation)
                followed.append(_Followed(position, spec, evaluation, job))
                say(position, spec.name, f"submitted as job {job.job_id}")
            _write_job_records(layout, records)
    out.flush()

    by_label = {item.spec.name: item for item in followed}

    def on_state(label: str, job: Any, state: str) -> None:
        say(by_label[label].position, label, f"job {job.job_id} {state}")

    def on_end(label: str, job: Any) -> None:
        item = by_label[label]
        outcome, tail = _ended_outcome(item, settings, layout, submitit)
        settle(item.position, f"job {job.job_id} {_progress_text(outcome)}", outcome, tail)

    follow_jobs([(item.spec.name, item.job) for item in followed], on_state, on_end)
    return [outcomes[position] for position in sorted(outcomes)]
