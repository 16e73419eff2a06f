"""calib-tune's methods as SLURM jobs (``--executor FILE``, ``kind: slurm``), through the
study's SLURM machinery (``calib_tasks.study.slurm_jobs``).

Each method is one job that trains it (``train``: a finished run with the same config and data
is reused, an unfinished one resumed) and then evaluates its own checkpoints as points of the
tuning's study folder (``eval/``); the base model's point is one more job. These are one job
array, at most ``parallel`` at once, with the ``slurm`` block's resources. A chained method
(``full.dpo``, ``lora.dpo``) is a job of its own that starts once its SFT method's job has
completed (SLURM's ``afterok``; SLURM cancels it when that job fails); it finds that SFT run
finished and reuses it. submitit keeps the jobs' scripts and logs in ``slurm/`` of the output
folder. When the chained jobs' ``sbatch`` fails, or Ctrl-C or SIGTERM comes while submitting,
the jobs already submitted are cancelled; Ctrl-C or SIGTERM while following cancels the jobs not
yet ended.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

from calib_tasks.study.layout import StudyLayout
from calib_tasks.study.runner import PointOutcome, run_points
from calib_tasks.study.slurm import evaluate_in_job
from calib_tasks.study.slurm_jobs import (
    JobFailed,
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
from calib_tasks.study.spec import (
    EvalSettings,
    Executor,
    PointEntry,
    StudyError,
    parse_executor,
    read_yaml,
)
from calib_tasks.tune.base_model import BaseModel
from calib_tasks.tune.data import Example, Preference, PromptTemplate
from calib_tasks.tune.points import checkpoint_points
from calib_tasks.tune.train import CHAINED, TrainConfig, train

BASE = "base"


def load_executor(path: Path) -> Executor:
    """The ``executor`` block of the YAML file ``path`` (a study file's block, alone in the
    file: ``executor: {kind: slurm, parallel: N, slurm: {...}}``); ``StudyError`` names what is
    wrong. Methods run locally one after another, so kind ``local`` takes no ``parallel``."""
    raw = read_yaml(path)
    if not isinstance(raw, Mapping) or set(raw) != {"executor"}:
        raise StudyError(f"{path}: must hold the field 'executor' alone, got {raw!r}")
    try:
        executor = parse_executor(raw["executor"])
    except StudyError as error:
        raise StudyError(f"{path}: {error}") from None
    if executor.kind == "local" and executor.parallel != 1:
        raise StudyError(
            f"{path}: field 'executor.parallel': calib-tune trains local methods one after "
            "another; parallel applies to kind 'slurm'"
        )
    return executor


@dataclass(frozen=True)
class MethodRun:
    """What training one method takes: its config, its data and its run folder."""

    config: TrainConfig
    data: Sequence[Example] | Sequence[Preference]
    run_dir: Path


@dataclass(frozen=True)
class MethodResult:
    """What a method's job returns: its checkpoints, and the outcomes of their evaluation."""

    checkpoints: list[Path]
    outcomes: list[PointOutcome]


@dataclass(frozen=True)
class JobsEnded:
    """What the jobs of ``run_methods_slurm`` did: the checkpoints of each method whose job
    finished, the outcomes of every point evaluated (the base model's first), and the jobs that
    failed (``base`` or a method)."""

    checkpoints: dict[str, list[Path]]
    outcomes: list[PointOutcome]
    failed: list[str]


def method_job(
    base: BaseModel,
    template: PromptTemplate,
    run: MethodRun,
    sft: MethodRun | None,
    settings: EvalSettings | None,
    eval_root: str,
) -> MethodResult:
    """What a method's job runs on its node: train ``run`` (a chained method from the last
    checkpoint of the ``sft`` run, which is found finished and reused), then evaluate the
    method's own checkpoints in the study folder ``eval_root`` (not when ``settings`` is
    None)."""
    sft_checkpoints = train(base, sft.data, template, sft.config, sft.run_dir) if sft else []
    start = sft_checkpoints[-1] if sft_checkpoints else None
    checkpoints = train(base, run.data, template, run.config, run.run_dir, None, start)
    method = run.config.method
    if settings is None:
        return MethodResult(checkpoints, [])
    trained = ({sft.config.method: sft_checkpoints} if sft else {}) | {method: checkpoints}
    entries = [
        PointEntry(spec.name, spec)
        for of, _, spec in checkpoint_points(base, trained)
        if of == method
    ]
    outcomes = run_points(entries, settings, StudyLayout(Path(eval_root)))
    return MethodResult(checkpoints, outcomes)


def _taken(
    submitit: ModuleType, folder: Path, made: Any, calls: Sequence[tuple[Callable[..., Any], tuple]]
) -> list[Any]:
    """Submit ``calls`` (function, arguments) through the executor ``made``, in one ``sbatch``;
    the jobs (``slurm_job``), or ``SubmissionError`` when SLURM did not take them."""
    try:
        with made.batch():
            jobs = [made.submit(function, *arguments) for function, arguments in calls]
    except submission_errors(submitit) as error:
        raise SubmissionError(f"SLURM did not take the jobs: {error}") from None
    return [slurm_job(submitit, folder, job.job_id) for job in jobs]


def _submit_methods(
    submitit: ModuleType,
    executor: Executor,
    base: BaseModel,
    template: PromptTemplate,
    runs: Mapping[str, MethodRun],
    settings: EvalSettings | None,
    out_dir: Path,
    out: TextIO,
) -> dict[str, Any]:
    """Submit the jobs of ``run_methods_slurm`` (``{label: job}``, the base model's as
    ``base``): the array of the base model and the unchained methods, then each chained method
    after its SFT method's job; each ``sbatch``'s jobs are said on ``out`` once SLURM took them
    (Ctrl-C and SIGTERM wait meanwhile). When an ``sbatch`` fails or an interrupt comes, cancels
    the jobs already submitted (``cancel_jobs``) and raises again."""
    folder = out_dir / "slurm"
    eval_root = str((out_dir / "eval").resolve())
    first = [method for method in runs if method not in CHAINED]
    calls: dict[str, tuple[Callable[..., Any], tuple]] = {}
    if settings is not None:
        calls[BASE] = (evaluate_in_job, (checkpoint_points(base, {})[0][2], settings, eval_root))
    for method in first:
        calls[method] = (method_job, (base, template, runs[method], None, settings, eval_root))
    jobs: dict[str, Any] = {}

    def say(*labels: str) -> None:
        for label in labels:
            print(f"{label}: submitted as job {jobs[label].job_id}", file=out, flush=True)

    try:
        array = slurm_executor(submitit, executor, folder, len(calls))
        with interrupts_deferred():
            jobs.update(zip(calls, _taken(submitit, folder, array, [*calls.values()]), strict=True))
        say(*calls)
        for method, sft in CHAINED.items():
            if method not in runs:
                continue
            after = f"afterok:{jobs[sft].job_id}"
            made = slurm_executor(submitit, executor, folder, 1, dependency=after)
            chained = (method_job, (base, template, runs[method], runs[sft], settings, eval_root))
            with interrupts_deferred():
                (jobs[method],) = _taken(submitit, folder, made, [chained])
            say(method)
    except BaseException:
        cancel_jobs(list(jobs.items()))
        raise
    return jobs


def run_methods_slurm(
    executor: Executor,
    base: BaseModel,
    template: PromptTemplate,
    runs: Mapping[str, MethodRun],
    settings: EvalSettings | None,
    out_dir: Path,
    out: TextIO | None = None,
) -> JobsEnded:
    """Train and evaluate every method of ``runs`` (an SFT method before the chained method
    after it), and evaluate the base model, as SLURM jobs (see the module docstring); with
    ``settings`` None, train only. One progress line on ``out`` (default: standard output) per
    job and change of its state. Returns what the jobs did once every one has ended. Raises
    ``SubmissionError`` when SLURM does not take the jobs, and KeyboardInterrupt when
    interrupted (Ctrl-C or SIGTERM), after cancelling the jobs submitted and not yet ended (and
    saying which on standard error)."""
    submitit = import_submitit()
    out = out or sys.stdout
    with sigterm_interrupts():
        jobs = _submit_methods(submitit, executor, base, template, runs, settings, out_dir, out)
        return _follow_methods(submitit, jobs, runs, out)


def _follow_methods(
    submitit: ModuleType, jobs: Mapping[str, Any], runs: Mapping[str, MethodRun], out: TextIO
) -> JobsEnded:
    """Follow the jobs of ``_submit_methods`` until every one has ended (``follow_jobs``),
    saying on ``out`` when each changes state and how it ended; what they did."""
    checkpoints: dict[str, list[Path]] = {}
    outcomes: dict[str, list[PointOutcome]] = {}
    failed_jobs: list[str] = []

    def on_state(label: str, job: Any, state: str) -> None:
        print(f"{label}: job {job.job_id} {state}", file=out, flush=True)

    def on_end(label: str, job: Any, state: str) -> None:
        try:
            result = job_result(submitit, job, state)
        except JobFailed as failed:
            failed_jobs.append(label)
            print(f"{label}: job {job.job_id} FAILED: {failed.reason}", file=out)
            *lines, where = failed.tail
            for line in lines:
                print(f"      | {line}", file=out)
            print(f"      {where}", file=out, flush=True)
            return
        if isinstance(result, MethodResult):
            checkpoints[label] = result.checkpoints
            outcomes[label] = result.outcomes
        else:
            outcomes[label] = [result]
        evaluated = sum(o.finished for o in outcomes[label])
        print(
            f"{label}: job {job.job_id} done ({evaluated} of {len(outcomes[label])} point(s) "
            "evaluated)",
            file=out,
            flush=True,
        )

    follow_jobs(list(jobs.items()), on_state, on_end)
    return JobsEnded(
        checkpoints={m: checkpoints[m] for m in runs if m in checkpoints},
        outcomes=[outcome for label in jobs for outcome in outcomes.get(label, [])],
        failed=failed_jobs,
    )
