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
lock, so that two runs never submit a point twice. A job is live until SLURM reports it in one
of ``ENDED_JOB_STATES`` (so a SUSPENDED or requeued job is live) or its result is written; a
job that sacct does not know (yet, or at all, on a cluster without accounting) is as squeue
lists it, and has ended when squeue does not list it either (``JobStates``).

While following its jobs, the study prints a progress line whenever a point's job changes state
(PENDING, RUNNING, SUSPENDED...) and one when it ends (done, or FAILED with the last error of
its log and the field blamed). Ctrl-C or SIGTERM cancels (``scancel``) every job still live and
says which (and which could not be cancelled); a second Ctrl-C does not cut that short.
submitit is only imported for a study that asks for SLURM (``import_submitit``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
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
# SLURM states (sacct's first word) of a job that has ended for good; every other state is live
ENDED_JOB_STATES = (
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "BOOT_FAIL",
    "DEADLINE",
)
# states that sacct reports of a job whose fate squeue tells: UNKNOWN (sacct does not know the
# job, yet or at all, or fails) and PREEMPTED (ended, unless requeued)
QUEUE_CHECKED_STATES = ("UNKNOWN", "PREEMPTED")
# squeue is asked again about the same jobs at most this often
QUEUE_SECONDS = 10.0


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
    dependency: str | None = None,
) -> Any:
    """submitit's SLURM executor for ``count`` jobs (one array), keeping its files in
    ``folder``: the ``slurm`` block's resources (``exclude`` as SLURM's comma-separated list),
    with ``gpus`` GPUs per job when given (points run under ``accelerate launch``), at most
    ``executor.parallel`` jobs at once (all ``count`` when unset); ``dependency``: SLURM's
    ``--dependency`` of the jobs (with ``afterok``, SLURM cancels them when that job fails)."""
    try:
        made = submitit.AutoExecutor(folder=folder, cluster="slurm")
    except RuntimeError as error:  # submitit finds no srun
        raise SubmissionError(f"{error} (run it where SLURM's commands are)") from None
    resources = {**executor.slurm, **({"gpus_per_node": gpus} if gpus is not None else {})}
    if isinstance(resources.get("exclude"), list):
        resources["exclude"] = ",".join(resources["exclude"])
    if dependency is not None:
        resources["dependency"] = dependency
        if dependency.startswith("afterok:"):
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


@functools.cache
def _job_class(submitit: ModuleType) -> type:
    """submitit's ``SlurmJob`` with a watcher that keeps asking sacct about a job until it
    has ended (``ENDED_JOB_STATES``): submitit's own gives up on one SUSPENDED, STOPPED and
    the like."""
    slurm_watcher = type(submitit.SlurmJob.watcher)

    class Watcher(slurm_watcher):  # type: ignore[valid-type,misc]
        def is_done(self, job_id: str, mode: str = "standard") -> bool:
            return _first_word(self.get_state(job_id, mode=mode)) in ENDED_JOB_STATES

    class Job(submitit.SlurmJob):  # type: ignore[name-defined,misc]
        watcher = Watcher(delay_s=600)

    return Job


def slurm_job(submitit: ModuleType, folder: Path, job_id: str) -> Any:
    """The submitit job ``job_id`` whose files are in ``folder``, its state read through
    ``JobStates``."""
    return _job_class(submitit)(folder=folder, job_id=job_id)


def _first_word(state: str) -> str:
    return (state.split() or ["UNKNOWN"])[0]


def _state(job: Any) -> str:
    """The job's SLURM state as sacct last told it, its first word (``CANCELLED by 1000`` ->
    ``CANCELLED``; ``UNKNOWN`` when sacct has not told it)."""
    return _first_word(job.state)


def queue_states(job_ids: Sequence[str]) -> dict[str, str] | None:
    """squeue's state of each of ``job_ids`` that it lists (one ``squeue`` call; an array task
    as ``1000_1``); those it does not list are no longer in SLURM's queue. None when squeue
    could not answer."""
    command = ["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%i %T"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:  # squeue -j of one job it does not know fails
        return {} if "invalid job id" in done.stderr.lower() else None
    listed = (line.split() for line in done.stdout.splitlines())
    return {words[0]: words[1] for words in listed if len(words) == 2}


@dataclass(frozen=True)
class JobState:
    """A job's SLURM state (``PENDING``, ``SUSPENDED``, ``COMPLETED``...; ``UNKNOWN`` when
    neither sacct nor squeue knows it) and whether it has ended."""

    state: str
    ended: bool


class JobStates:
    """Reads jobs' states: sacct's, through submitit's watcher (one sacct for all the jobs, as
    often as the watcher sees fit, every few minutes for long jobs); a job whose result pickle
    exists or that sacct reports in ``ENDED_JOB_STATES`` has ended. For a job that sacct reports
    UNKNOWN or PREEMPTED, squeue is asked (at most every ``QUEUE_SECONDS`` about the same jobs):
    a job it lists is in the state it lists, one it does not list has ended (and one stays live
    while squeue cannot answer)."""

    def __init__(self) -> None:
        self._queue: dict[str, str] | None = None
        self._queue_asked: set[str] = set()
        self._queue_time = -math.inf

    def read(self, jobs: Sequence[Any]) -> dict[str, JobState]:
        """``{job id: JobState}`` of ``jobs``."""
        sacct = {job.job_id: _state(job) for job in jobs}
        finished = {job.job_id for job in jobs if job.paths.result_pickle.exists()}
        unsure = [
            job_id
            for job_id, state in sacct.items()
            if job_id not in finished and state in QUEUE_CHECKED_STATES
        ]
        stale = time.monotonic() - self._queue_time >= QUEUE_SECONDS
        if unsure and (stale or not set(unsure) <= self._queue_asked):
            self._queue = queue_states(unsure)
            self._queue_asked, self._queue_time = set(unsure), time.monotonic()
        states = {}
        for job_id, state in sacct.items():
            if job_id in unsure and self._queue is not None:
                state = self._queue.get(job_id, state)
                ended = job_id not in self._queue or _first_word(state) in ENDED_JOB_STATES
            else:
                ended = job_id in finished or state in ENDED_JOB_STATES
            states[job_id] = JobState(_first_word(state), ended)
        return states


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


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt as Ctrl-C does."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Within the block, Ctrl-C and SIGTERM wait (blocked): they interrupt once it is left, so
    that jobs submitted within it are recorded before anything interrupts."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


@contextlib.contextmanager
def _interrupts_ignored() -> Iterator[None]:
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cancel_jobs(jobs: Sequence[tuple[str, Any]]) -> None:
    """Cancel every job of ``jobs`` (label, submitit job) with ``scancel``, Ctrl-C and SIGTERM
    ignored meanwhile so that none cuts it short; says on standard error which jobs were
    cancelled and which could not be (scancel failed)."""
    cancelled, failed = [], []
    with _interrupts_ignored():
        for label, job in jobs:
            try:
                job.cancel(check=True)
            except (OSError, subprocess.CalledProcessError) as error:
                failed.append(f"{job.job_id} ({label}: {error})")
            else:
                cancelled.append(f"{job.job_id} ({label})")
    if cancelled:
        print(f"\ncancelled SLURM job(s) {', '.join(cancelled)}", file=sys.stderr, flush=True)
    if failed:
        print(
            f"\ncould NOT cancel SLURM job(s) {', '.join(failed)}: cancel them with scancel",
            file=sys.stderr,
            flush=True,
        )


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


def job_result(submitit: ModuleType, job: Any, state: str, other_log: Path | None = None) -> Any:
    """What an ended job's function returned; ``JobFailed`` when it returned nothing (see
    there; ``state``: the job's last SLURM state; ``other_log``: a log the job wrote besides its
    own, e.g. the point's)."""
    try:
        # a job that SLURM ended (cancelled, timed out, out of memory) wrote no result: fail it
        # at once rather than give the shared filesystem time to show it (as job.result does)
        if state != "COMPLETED" and not job.paths.result_pickle.exists():
            raise submitit.core.utils.UncompletedJobError(job.job_id)
        return job.result()
    except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError):
        stderr = job.stderr() or ""
        try:
            other = other_log.read_text(encoding="utf-8", errors="replace") if other_log else ""
        except OSError:
            other = ""
        error = last_error(stderr) or last_error(other)
        reason = f"job {job.job_id} ended {state}" + (f": {error}" if error else "")
        raise JobFailed(reason, [*output_tail(stderr), f"job log: {job.paths.stderr}"]) from None


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


def follow_jobs(
    jobs: Sequence[tuple[str, Any]],
    on_state: Callable[[str, Any, str], None],
    on_end: Callable[[str, Any, str], None],
) -> None:
    """Wait until every job of ``jobs`` (label, job of ``slurm_job``) has ended (``JobStates``),
    looking every ``POLL_SECONDS``: calls ``on_state(label, job, state)`` whenever a job's SLURM
    state changes (PENDING, RUNNING, SUSPENDED...; UNKNOWN is passed over) and ``on_end(label,
    job, state)`` once it has ended. When interrupted (KeyboardInterrupt: Ctrl-C, or SIGTERM
    within ``sigterm_interrupts``), cancels every job that has not ended (``cancel_jobs``) and
    raises KeyboardInterrupt again."""
    waiting = list(jobs)
    seen: dict[str, str] = {}
    states = JobStates()
    try:
        while waiting:
            now = states.read([job for _, job in waiting])
            for label, job in list(waiting):
                state = now[job.job_id]
                if state.ended:
                    waiting.remove((label, job))
                    on_end(label, job, state.state)
                elif state.state not in (seen.get(label), "UNKNOWN"):
                    seen[label] = state.state
                    on_state(label, job, state.state)
            if waiting:
                time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        cancel_jobs(waiting)
        raise


def _progress_text(outcome: PointOutcome) -> str:
    if outcome.status == "done":
        return f"done in {outcome.seconds:.1f} s"
    if outcome.status == "skipped":
        return "skipped: finished earlier"
    return f"FAILED: {outcome.reason}"


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


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
