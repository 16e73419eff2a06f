"""SLURM jobs through submitit, as calib-study and calib-tune run them: the executor from a
study file's ``executor`` block, the jobs' states, following them until they end, their results,
and cancelling them.

A job is live until SLURM reports it in one of ``ENDED_JOB_STATES`` (so a SUSPENDED or requeued
job is live) or its result is written; a job that sacct does not know (yet, or at all, on a
cluster without accounting) is as squeue lists it, and has ended when squeue does not list it
either (``JobStates``). submitit is only imported for a study that asks for SLURM
(``import_submitit``).
"""

from __future__ import annotations

import contextlib
import functools
import math
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from calib_tasks.study.failure import last_error, output_tail
from calib_tasks.study.spec import Executor, StudyError

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


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
