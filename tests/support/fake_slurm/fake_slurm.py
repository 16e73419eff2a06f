"""A fake SLURM on this machine for the tests: ``sbatch``, ``srun``, ``sacct``, ``squeue`` and
``scancel`` (the scripts beside this file, which run it) as submitit and the study call them.

``sbatch SCRIPT`` reads the script's ``#SBATCH`` options, answers ``Submitted batch job N``
and runs the script locally in the background, as a job array when it asks for ``--array``
(at most ``%N`` tasks at once), each task after the jobs its ``--dependency=afterok:...``
names have completed (``afterany:...``: have ended), with the environment SLURM gives a job
(``SLURM_JOB_ID``, ``SLURM_ARRAY_JOB_ID``, ``SLURM_ARRAY_TASK_ID``, ...) and its output in the
files of ``--output`` / ``--error``. ``sacct -o JobID,State,NodeList --parsable2 -j N`` answers in
SLURM's format, a pending array's tasks as one ``N_[2-3%2]`` line as SLURM does. ``squeue -h
-r -j ID,ID -o FORMAT`` (``%i``, ``%T``) lists the jobs named that have not ended (of one job
id alone that it does not list, it says ``Invalid job id specified`` and fails, as SLURM's does).
``scancel ID`` cancels a job, an array task or a whole array (SIGTERM to the running task's
process group, SIGKILL one second later).

State lives in ``$FAKE_SLURM_STATE``: ``jobs/<id>.json`` per job or array task (its state, pid,
exit status) and ``calls.jsonl`` (every command's arguments, one JSON list a line). While a
file ``hold`` is there, no task starts (a busy cluster: every job stays PENDING). Faults, by
files there: ``no_sacct`` (sacct fails, as without accounting), ``sbatch_fails_after`` (holding
N: every sbatch after the first N fails), ``scancel_fails`` (job ids, one a line, that scancel
fails to cancel), ``scancel_interrupts`` (scancel sends SIGINT to the process that called it, a
second Ctrl-C while cancelling).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ.get("FAKE_SLURM_STATE", "/tmp/fake_slurm"))
JOBS = STATE / "jobs"
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")
NODE = "fakenode1"
GIVE_UP_SECONDS = 600


@contextlib.contextmanager
def _locked():
    STATE.mkdir(parents=True, exist_ok=True)
    with (STATE / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _calls() -> list[list[str]]:
    path = STATE / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _read(task: str) -> dict:
    return json.loads((JOBS / f"{task}.json").read_text())


def _write(task: str, record: dict) -> None:
    path = JOBS / f"{task}.json"
    path.with_suffix(".tmp").write_text(json.dumps(record))
    path.with_suffix(".tmp").replace(path)


def _update(task: str, **changes) -> dict:
    with _locked():
        record = {**_read(task), **changes}
        _write(task, record)
    return record


def _tasks(job: str) -> list[str]:
    """The task records a job id names: ``1000_2`` one task, ``1000`` the job or its array."""
    if (JOBS / f"{job}.json").exists():
        return [job]
    return sorted(
        (p.stem for p in JOBS.glob(f"{job}_*.json")), key=lambda t: int(t.rsplit("_", 1)[1])
    )


def _options(script: str) -> dict[str, str]:
    options = {}
    for line in script.splitlines():
        match = re.match(r"#SBATCH\s+--([\w-]+)(?:=(.*))?$", line.strip())
        if match:
            options[match.group(1)] = match.group(2) or ""
    return options


def _fail(message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(1)


def sbatch(args: list[str]) -> None:
    fails_after = STATE / "sbatch_fails_after"
    if fails_after.exists():
        earlier = sum(1 for call in _calls() if call[0] == "sbatch") - 1
        if earlier >= int(fails_after.read_text()):
            _fail("sbatch: error: Batch job submission failed: Invalid account specified")
    script_text = Path(args[-1]).read_text()
    options = _options(script_text)
    with _locked():
        counter = STATE / "next_id"
        first = int(counter.read_text()) if counter.exists() else 1000
        array = options.get("array")
        indices, parallel = [None], 1
        if array:
            match = re.fullmatch(r"(\d+)-(\d+)(?:%(\d+))?", array)
            low, high = int(match.group(1)), int(match.group(2))
            indices = list(range(low, high + 1))
            parallel = int(match.group(3) or len(indices))
        counter.write_text(str(first + len(indices) + 1))
        JOBS.mkdir(parents=True, exist_ok=True)
        (STATE / f"{first}.sh").write_text(script_text)
        for index in indices:
            task = str(first) if index is None else f"{first}_{index}"
            _write(task, {"state": "PENDING", "index": index, "pid": None, "exit": None})
    subprocess.Popen(
        [sys.executable, __file__, "_schedule", str(first), str(parallel)],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=(STATE / "scheduler.log").open("a"),
        env=os.environ,
    )
    print(f"Submitted batch job {first}")


def _expand(pattern: str, env: dict[str, str]) -> str:
    array_id = env.get("SLURM_ARRAY_JOB_ID", env["SLURM_JOB_ID"])
    return (
        pattern.replace("%A", array_id)
        .replace("%a", env.get("SLURM_ARRAY_TASK_ID", ""))
        .replace("%j", env["SLURM_JOB_ID"])
        .replace("%t", "0")
    )


def _dependencies_met(dependency: str | None) -> bool | None:
    """True when every ``afterok`` job completed (every ``afterany`` job ended), False when an
    ``afterok`` one cannot (it failed or was cancelled), None while waiting."""
    if not dependency:
        return True
    kind, *jobs = dependency.split(":")
    states = [_read(task)["state"] for job in jobs for task in _tasks(job)]
    if kind == "afterany":
        return True if all(state in TERMINAL for state in states) else None
    if any(state in ("FAILED", "CANCELLED") for state in states):
        return False
    return True if all(state == "COMPLETED" for state in states) else None


def _start(first: int, task: str, record: dict, options: dict[str, str]) -> subprocess.Popen:
    index = record["index"]
    env = {
        **os.environ,
        "SLURM_JOB_ID": str(first + (index or 0)),
        "SLURM_JOB_NAME": options.get("job-name", "sbatch"),
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_NODEID": "0",
        "SLURM_JOB_NODELIST": NODE,
        "SLURM_SUBMIT_DIR": os.getcwd(),
    }
    if index is not None:
        env |= {"SLURM_ARRAY_JOB_ID": str(first), "SLURM_ARRAY_TASK_ID": str(index)}
    output = _expand(options.get("output", "slurm-%j.out"), env)
    error = _expand(options.get("error", options.get("output", "slurm-%j.out")), env)
    with open(output, "a") as stdout, open(error, "a") as stderr:
        return subprocess.Popen(
            ["bash", str(STATE / f"{first}.sh")],
            env=env,
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def schedule(first: int, parallel: int) -> None:
    """Run the tasks of job ``first``, at most ``parallel`` at once, until all have ended (or
    ``GIVE_UP_SECONDS`` have passed, so that a test that fails leaves no scheduler behind)."""
    options = _options((STATE / f"{first}.sh").read_text())
    tasks = _tasks(str(first))
    running: dict[str, subprocess.Popen] = {}
    give_up = time.monotonic() + GIVE_UP_SECONDS
    while time.monotonic() < give_up:
        for task, proc in list(running.items()):
            if proc.poll() is not None:
                del running[task]
                with _locked():
                    record = _read(task)
                    if record["state"] == "RUNNING":
                        record["state"] = "COMPLETED" if proc.returncode == 0 else "FAILED"
                    record["exit"] = proc.returncode
                    _write(task, record)
        pending = [t for t in tasks if _read(t)["state"] == "PENDING"]
        if not pending and not running:
            return
        met = _dependencies_met(options.get("dependency"))
        held = (STATE / "hold").exists()
        for task in pending[: max(0, parallel - len(running))] if met and not held else []:
            with _locked():
                record = _read(task)
                if record["state"] != "PENDING":  # cancelled meanwhile
                    continue
                proc = _start(first, task, record, options)
                _write(task, {**record, "state": "RUNNING", "pid": proc.pid})
            running[task] = proc
        if met is False:
            for task in pending:
                _update(task, state="CANCELLED")
        time.sleep(0.1)


def sacct(args: list[str]) -> None:
    if (STATE / "no_sacct").exists():
        _fail("sacct: error: Problem talking to the database: Connection refused")
    jobs = [args[i + 1] for i, arg in enumerate(args) if arg == "-j"]
    print("JobID|State|NodeList")
    for job in jobs:
        records = {task: _read(task) for task in _tasks(job)}
        pending = [r["index"] for r in records.values() if r["state"] == "PENDING"]
        for task, record in records.items():
            if record["state"] != "PENDING" or record["index"] is None:
                print(f"{task}|{record['state']}|{NODE}")
        if pending and pending[0] is not None:
            print(f"{job}_[{min(pending)}-{max(pending)}]|PENDING|None assigned")
        elif pending:
            print(f"{job}|PENDING|None assigned")


def squeue(args: list[str]) -> None:
    jobs = args[args.index("-j") + 1].split(",")
    fields = {"%i": lambda task, record: task, "%T": lambda task, record: record["state"]}
    columns = args[args.index("-o") + 1].split()
    listed = [
        (task, record)
        for job in jobs
        for task in _tasks(job)
        if (record := _read(task))["state"] not in TERMINAL
    ]
    if len(jobs) == 1 and not listed:
        _fail("slurm_load_jobs error: Invalid job id specified")
    for task, record in listed:
        print(" ".join(fields[column](task, record) for column in columns))


def scancel(args: list[str]) -> None:
    if (STATE / "scancel_interrupts").exists():
        os.kill(os.getppid(), signal.SIGINT)
        time.sleep(0.5)
    fails = STATE / "scancel_fails"
    refused = fails.read_text().split() if fails.exists() else []
    killed = []
    for job in (arg for arg in args if not arg.startswith("-")):
        if job in refused:
            _fail(f"scancel: error: Kill job error on job id {job}: Access/permission denied")
        for task in _tasks(job):
            with _locked():
                record = _read(task)
                if record["state"] in TERMINAL:
                    continue
                _write(task, {**record, "state": "CANCELLED"})
            if record["pid"] is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(record["pid"], signal.SIGTERM)
                killed.append(record["pid"])
    if killed:
        time.sleep(1)
        for pid in killed:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def srun(args: list[str]) -> None:
    """``srun --unbuffered --output FILE --error FILE COMMAND...``: run COMMAND as the job's one
    task (rank 0) with its output in those files."""
    env = {**os.environ, "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_STEP_ID": "0"}
    files = {"--output": None, "--error": None}
    while args and args[0].startswith("--"):
        flag = args.pop(0)
        if flag in files:
            files[flag] = _expand(args.pop(0), env)
    for flag, fd in (("--output", 1), ("--error", 2)):
        if files[flag]:
            os.dup2(os.open(files[flag], os.O_WRONLY | os.O_CREAT | os.O_APPEND), fd)
    os.execvpe(args[0], args, env)


if __name__ == "__main__":
    command, arguments = sys.argv[1], sys.argv[2:]
    if command != "_schedule":
        with _locked(), (STATE / "calls.jsonl").open("a") as calls:
            calls.write(json.dumps([command, *arguments]) + "\n")
    if command == "_schedule":
        schedule(int(arguments[0]), int(arguments[1]))
    else:
        commands = {
            "sbatch": sbatch,
            "sacct": sacct,
            "squeue": squeue,
            "scancel": scancel,
            "srun": srun,
        }
        commands[command](arguments)
