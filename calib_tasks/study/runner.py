"""Evaluating the points of a study, each in its own harness process, resumably.

A point is evaluated by ``calib-eval`` (``python -m calib_tasks.command_line.eval``) in a subprocess
writing into ``points/.<name>.partial``, renamed to ``points/<name>`` once the harness has
written a results file with every requested task and the samples of each. So a crash, an
out-of-memory kill or an interrupted study never leaves a half-written point behind: the next
run removes the partial folder and evaluates the point again, while a finished point is skipped
unless the settings it was evaluated with (tasks, limit, few-shot, model and its arguments)
have changed since.

A point belongs to one live run of the study at a time: the run holds the point's lock file
(``locks/<name>.lock``) while it decides about the point and evaluates it, and passes it on
to the harness process, which cannot outlive the run (``calib_tasks.study.lifetime``). Another
run finding the lock held leaves the point to the run holding it ("running elsewhere") and comes
back to it after its other points: it waits for that run to let go of the point, then skips the
point if that run finished it and evaluates it otherwise. So two runs of one study share its
points out between them, and each ends with every point settled. A point is only published when
its folder holds exactly one harness run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import queue
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TextIO

from calib_tasks.report.notes import Notes
from calib_tasks.report.runs import find_run_files, read_run
from calib_tasks.study.failure import blamed_fields, failure_reason, output_tail
from calib_tasks.study.layout import POINT_RECORD, StudyLayout
from calib_tasks.study.lifetime import LockHeld, kill_running, run_tied, take_lock
from calib_tasks.study.spec import EvalSettings, PointEntry, PointSpec

HARNESS_MODULE = "calib_tasks.command_line.eval"
Status = Literal["done", "skipped", "failed", "invalid"]


@dataclass(frozen=True)
class PointOutcome:
    """What became of one point in this run of the study; ``evaluation`` is what its results
    must have been evaluated with to count (``evaluation_key``; None for an invalid point)."""

    label: str
    spec: PointSpec | None
    status: Status
    seconds: float = 0.0
    reason: str = ""
    evaluation: Mapping[str, Any] | None = None

    @property
    def finished(self) -> bool:
        """Whether the point has results (evaluated now or earlier)."""
        return self.status in ("done", "skipped")


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def harness_args(spec: PointSpec, settings: EvalSettings, output_path: Path) -> list[str]:
    """The ``calib-eval`` arguments that evaluate ``spec`` into ``output_path``."""
    model_args = ",".join(f"{k}={v}" for k, v in spec.harness_model_args().items())
    args = ["--model", spec.backend, "--model_args", model_args]
    args += ["--tasks", ",".join(settings.tasks)]
    if settings.num_fewshot is not None:
        args += ["--num_fewshot", str(settings.num_fewshot)]
    if isinstance(settings.limit, Mapping):
        first = {task: list(range(n)) for task, n in settings.limit.items()}
        args += ["--samples", json.dumps(first, separators=(",", ":"))]
    elif settings.limit is not None:
        args += ["--limit", _number_text(settings.limit)]
    if settings.batch_size is not None:
        args += ["--batch_size", settings.batch_size]
    if settings.device is not None:
        args += ["--device", settings.device]
    return [*args, "--output_path", str(output_path), "--log_samples"]


def harness_command(spec: PointSpec, args: Sequence[str]) -> list[str]:
    """The command that runs the harness (``calib-eval``) on ``spec`` with ``args``
    (``harness_args``): this Python with ``-m calib_tasks.command_line.eval``, or, for a point
    with ``launcher: accelerate``, under ``accelerate launch --num_processes N``."""
    if spec.launcher == "accelerate":
        launch = ["-m", "accelerate.commands.launch", "--num_processes", str(spec.num_processes)]
        return [sys.executable, *launch, "-m", HARNESS_MODULE, *args]
    return [sys.executable, "-m", HARNESS_MODULE, *args]


def shown_command(spec: PointSpec, args: Sequence[str]) -> str:
    """``harness_command`` as a person would type it (``calib-eval ARGS``, ``accelerate launch
    --num_processes N -m calib_tasks.command_line.eval ARGS``), for the point's log and
    record."""
    command = harness_command(spec, args)
    if spec.launcher == "accelerate":
        return shlex.join(["accelerate", "launch", *command[3:]])
    return shlex.join(["calib-eval", *command[3:]])


def folder_fingerprint(path: str) -> str | None:
    """A digest of the files in the local folder ``path`` (relative path, size and modification
    time of each), None when ``path`` is not a local folder (e.g. a hub name)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        info = file.stat()
        digest.update(f"{file.relative_to(folder)}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def evaluation_key(spec: PointSpec, settings: EvalSettings) -> dict[str, Any]:
    """What a point's numbers depend on (batch size and device are left out), including the
    files of a local model or adapter folder, so that a checkpoint rewritten in place (e.g. by
    calib-tune retraining) is evaluated again."""
    local = {"model": spec.model, "peft": spec.peft}
    return {
        "backend": spec.backend,
        "model_args": spec.harness_model_args(),
        "local_files": {
            field: fingerprint
            for field, path in local.items()
            if path is not None and (fingerprint := folder_fingerprint(path)) is not None
        },
        "tasks": list(settings.tasks),
        "num_fewshot": settings.num_fewshot,
        "limit": dict(settings.limit) if isinstance(settings.limit, Mapping) else settings.limit,
    }


def results_problem(folder: Path, tasks: Sequence[str]) -> str | None:
    """None when ``folder`` holds exactly one harness run, and that run has a readable results
    file with every task (or group) in ``tasks`` and a samples file for each task (not group)
    it reports; else what is wrong, as a clause (``it wrote no complete results``)."""
    notes = Notes()
    runs = find_run_files([folder], notes)
    if len(runs) > 1:
        listed = ", ".join(f"{run.folder.relative_to(folder)}/*_{run.date_id}" for run in runs)
        return f"its output folder holds {len(runs)} runs ({listed}), not one"
    for files in runs:
        run = read_run(files, notes)
        reported = set(run.metrics) | run.groups
        if files.results_file is None or not set(tasks) <= reported:
            continue
        if all(task in files.samples_files for task in set(run.metrics) - run.groups):
            return None
    return "it wrote no complete results"


def _changed_settings(folder: Path, key: Mapping[str, Any]) -> list[str] | None:
    """The settings that differ from those the finished point in ``folder`` was evaluated
    with (empty: none), or None when the folder holds no finished point."""
    try:
        record = json.loads((folder / POINT_RECORD).read_text(encoding="utf-8"))
        earlier = record["evaluation"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(earlier, dict):
        return None
    return [name for name in key if earlier.get(name) != key[name]]


def is_published(folder: Path, evaluation: Mapping[str, Any]) -> bool:
    """Whether ``folder`` holds a finished point evaluated with ``evaluation``
    (``evaluation_key``, recorded in its point.json) and complete results of its tasks."""
    return (
        _changed_settings(folder, evaluation) == []
        and results_problem(folder, evaluation["tasks"]) is None
    )


def log_event(layout: StudyLayout, outcome: PointOutcome) -> None:
    """Append what became of a point (its status, seconds, reason) to the study's run log."""
    layout.run_log.parent.mkdir(parents=True, exist_ok=True)
    event = {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "point": outcome.label,
        "status": outcome.status,
        "seconds": round(outcome.seconds, 2),
        "reason": outcome.reason,
    }
    with layout.run_log.open("a", encoding="utf-8") as log:
        log.write(json.dumps(event) + "\n")


def with_blamed_fields(reason: str, spec: PointSpec, settings: EvalSettings) -> str:
    """``reason`` led by the fields of the point (or the study's per-task limit) that it points
    at (``field 'model': ...``; ``blamed_fields``), as it is when it points at none."""
    per_task_limit = {"limit"} if isinstance(settings.limit, Mapping) else set()
    fields = blamed_fields(reason, spec.given_fields() | per_task_limit)
    return f"field {' / '.join(map(repr, fields))}: {reason}" if fields else reason


def _evaluate(
    spec: PointSpec,
    settings: EvalSettings,
    evaluation: Mapping[str, Any],
    layout: StudyLayout,
    lock: TextIO,
    out: TextIO,
    slot: Slot,
) -> PointOutcome:
    """Evaluate the point into its partial folder and publish it, recording ``evaluation``
    (its ``evaluation_key``); ``lock``, the point's open lock file, is passed on to the harness
    process, which runs with ``slot``'s environment."""
    partial = layout.partial_dir(spec.name)
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    log_file = layout.log_file(spec.name)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    args = harness_args(spec, settings, partial)
    start = time.monotonic()
    with log_file.open("w", encoding="utf-8") as log:
        log.write(f"$ {shown_command(spec, args)}\n")
        log.flush()
        returncode = run_tied(
            harness_command(spec, args),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false", **slot.env},
            pass_fds=(lock.fileno(),),
        )
    seconds = time.monotonic() - start
    output = log_file.read_text(encoding="utf-8", errors="replace")
    problem = results_problem(partial, settings.tasks) if returncode == 0 else None
    if returncode != 0 or problem is not None:
        reason = (
            failure_reason(output, returncode)
            if returncode != 0
            else f"the harness exited normally, but {problem}"
        )
        reason = with_blamed_fields(reason, spec, settings)
        shutil.rmtree(partial, ignore_errors=True)
        print(f"FAILED: {reason}", file=out)
        for line in output_tail(output):
            print(f"      | {line}", file=out)
        print(f"      full output: {log_file}", file=out, flush=True)
        return PointOutcome(spec.name, spec, "failed", seconds, reason, evaluation)
    final = layout.point_dir(spec.name)
    record = {
        "name": spec.name,
        "command": shown_command(spec, harness_args(spec, settings, final)),
        "evaluation": evaluation,
        "seconds": round(seconds, 2),
    }
    (partial / POINT_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)
    print(f"done in {seconds:.1f} s", file=out, flush=True)
    return PointOutcome(spec.name, spec, "done", seconds, evaluation=evaluation)


@dataclass(frozen=True)
class Slot:
    """Where a point's harness process runs: the environment variables that give it its share
    of the machine (``CUDA_VISIBLE_DEVICES``, thread counts), and that share in words for its
    progress line (empty: the whole machine, as in a study run in sequence)."""

    env: Mapping[str, str] = field(default_factory=dict)
    share: str = ""


def visible_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs that ``CUDA_VISIBLE_DEVICES`` lists (none when it is unset, empty or -1); read
    from the environment only, so that the study process need not import torch."""
    text = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES", "")
    gpus = [gpu.strip() for gpu in text.split(",") if gpu.strip()]
    return [] if not gpus or gpus[0].startswith("-") else gpus


def cpu_count() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def slots(
    parallel: int,
    settings: EvalSettings,
    environ: Mapping[str, str] | None = None,
    cores: int | None = None,
) -> list[Slot]:
    """The ``parallel`` slots that points run in at once. With one slot, the harness gets the
    whole machine as it always did. With several, each gets ``cores // parallel`` threads (at
    least 1; ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS``, which torch follows); and where
    ``CUDA_VISIBLE_DEVICES`` lists GPUs and the study sets no device other than ``cuda``, one
    of them each, round-robin (so that points share a GPU only when there are more slots than
    GPUs)."""
    if parallel <= 1:
        return [Slot()]
    threads = str(max(1, (cores or cpu_count()) // parallel))
    gpus = visible_gpus(environ)
    own_gpu = gpus and settings.device in (None, "cuda")
    made = []
    for index in range(parallel):
        env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        share = f"{threads} thread{'s' if threads != '1' else ''}"
        if own_gpu:
            gpu = gpus[index % len(gpus)]
            env["CUDA_VISIBLE_DEVICES"] = gpu
            share = f"GPU {gpu}, {share}"
        made.append(Slot(env, share))
    return made


def _holder(held: LockHeld) -> str:
    """`` (calib-study pid N)``: the run holding a lock, when its lock file names it."""
    return f" (calib-study pid {held.holder})" if held.holder is not None else ""


def run_point(
    spec: PointSpec,
    settings: EvalSettings,
    layout: StudyLayout,
    out: TextIO | None = None,
    *,
    wait: bool = True,
    slot: Slot | None = None,
) -> PointOutcome:
    """Evaluate one point unless it finished earlier with the same settings; writes the rest
    of its progress line (``running TASKS ... done in 1.2 s``, ``skipped: finished earlier``,
    ``running TASKS ... FAILED: reason`` and the end of the harness's output) to ``out``
    (default: standard output).

    When another live run holds the point's lock (the point is running elsewhere): with
    ``wait``, says so (``running elsewhere (calib-study pid N), waiting for it ...``) and waits
    until that run lets go of the point, then goes on as above (skipped when that run finished
    it); without ``wait``, raises ``LockHeld`` and leaves the point alone. ``slot``: the
    environment of the harness process (default: the whole machine); its share is named in the
    progress line (``running TASKS on 1 thread ...``)."""
    out = out or sys.stdout
    slot = slot or Slot()
    lock_file = layout.lock_file(spec.name)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        lock = take_lock(lock_file)
    except LockHeld as held:
        if not wait:
            raise
        print(
            f"running elsewhere{_holder(held)}, waiting for it ... ", end="", file=out, flush=True
        )
        lock = take_lock(lock_file, wait=True)
    with lock:
        final = layout.point_dir(spec.name)
        evaluation = evaluation_key(spec, settings)
        if is_published(final, evaluation):
            print("skipped: finished earlier", file=out, flush=True)
            return PointOutcome(spec.name, spec, "skipped", evaluation=evaluation)
        changed = _changed_settings(final, evaluation)
        if changed:
            print(f"settings changed since it finished ({', '.join(changed)}), ", end="", file=out)
        on = f" on {slot.share}" if slot.share else ""
        print(f"running {','.join(settings.tasks)}{on} ... ", end="", file=out, flush=True)
        return _evaluate(spec, settings, evaluation, layout, lock, out, slot)


def run_points(
    entries: Sequence[PointEntry],
    settings: EvalSettings,
    layout: StudyLayout,
    out: TextIO | None = None,
    *,
    parallel: int = 1,
) -> list[PointOutcome]:
    """Evaluate every valid point in order, one progress line each on ``out`` (default:
    standard output); invalid points are reported and skipped. A point running elsewhere
    (another live run holds its lock) is left to that run and come back to after the other
    points (``run_point`` waits for it then). Returns the outcomes in the order of ``entries``;
    each is appended to the study's run log once settled. With ``parallel`` above 1, up to that
    many points are evaluated at once (``run_points_parallel``)."""
    if parallel > 1:
        return run_points_parallel(entries, settings, layout, out, parallel=parallel)
    out = out or sys.stdout
    outcomes: dict[int, PointOutcome] = {}
    elsewhere: list[tuple[int, PointSpec]] = []
    total = len(entries)
    for position, entry in enumerate(entries, start=1):
        prefix = f"[{position}/{total}]"
        if entry.spec is None:
            print(f"{prefix} {entry.label}: INVALID: {'; '.join(entry.problems)}", file=out)
            outcome = PointOutcome(entry.label, None, "invalid", reason="; ".join(entry.problems))
        else:
            print(f"{prefix} {entry.spec.description()}: ", end="", file=out)
            try:
                outcome = run_point(entry.spec, settings, layout, out, wait=False)
            except LockHeld as held:
                print(f"running elsewhere{_holder(held)}; back to it later", file=out, flush=True)
                elsewhere.append((position, entry.spec))
                continue
        log_event(layout, outcome)
        outcomes[position] = outcome
    for position, spec in elsewhere:
        print(f"[{position}/{total}] {spec.description()}: ", end="", file=out)
        outcomes[position] = run_point(spec, settings, layout, out)
        log_event(layout, outcomes[position])
    return [outcomes[position] for position in sorted(outcomes)]


def run_points_parallel(
    entries: Sequence[PointEntry],
    settings: EvalSettings,
    layout: StudyLayout,
    out: TextIO | None = None,
    *,
    parallel: int,
) -> list[PointOutcome]:
    """``run_points`` with up to ``parallel`` points evaluated at once, each by its own harness
    process in a ``slots`` share of the machine, under the same locks and publishing as in
    sequence. A point's progress line is written whole once the point has settled, so lines
    come in the order points end; a point running elsewhere is put back at the end of the
    queue and waited for then. A failed point does not stop the others. When interrupted
    (Ctrl-C), every running harness process is killed, no further point is started, and the
    KeyboardInterrupt goes on to the caller."""
    out = out or sys.stdout
    total = len(entries)
    outcomes: dict[int, PointOutcome] = {}
    todo: queue.Queue[tuple[int, PointSpec, bool]] = queue.Queue()
    printing = threading.Lock()
    stop = threading.Event()

    def settle(position: int, line: str, outcome: PointOutcome | None) -> None:
        with printing:
            if stop.is_set():
                return
            print(f"[{position}/{total}] {line}", end="" if line.endswith("\n") else "\n", file=out)
            out.flush()
            if outcome is not None:
                log_event(layout, outcome)
                outcomes[position] = outcome

    for position, entry in enumerate(entries, start=1):
        if entry.spec is None:
            reason = "; ".join(entry.problems)
            settle(
                position,
                f"{entry.label}: INVALID: {reason}",
                PointOutcome(entry.label, None, "invalid", reason=reason),
            )
        else:
            todo.put((position, entry.spec, False))

    errors: list[BaseException] = []

    def work(slot: Slot) -> None:
        try:
            take_points(slot)
        except BaseException as error:  # handed on to the main thread, which raises it
            errors.append(error)
            stop.set()

    def take_points(slot: Slot) -> None:
        while not stop.is_set():
            try:
                position, spec, wait = todo.get_nowait()
            except queue.Empty:
                return
            line = io.StringIO()
            line.write(f"{spec.description()}: ")
            try:
                outcome = run_point(spec, settings, layout, line, wait=wait, slot=slot)
            except LockHeld as held:
                line.write(f"running elsewhere{_holder(held)}; back to it later")
                settle(position, line.getvalue(), None)
                todo.put((position, spec, True))
                continue
            settle(position, line.getvalue(), outcome)

    workers = [
        threading.Thread(target=work, args=(slot,), name=f"calib-study slot {index}", daemon=True)
        for index, slot in enumerate(slots(parallel, settings))
    ]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            while worker.is_alive() and not errors:
                worker.join(0.2)
        if errors:
            raise errors[0]
    except BaseException:
        stop.set()
        kill_running()
        for worker in workers:
            worker.join(5)  # a worker waiting for a lock held elsewhere is left behind
        raise
    return [outcomes[position] for position in sorted(outcomes)]
