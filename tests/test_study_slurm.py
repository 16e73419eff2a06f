"""calib-study and calib-tune with ``executor: {kind: slurm}``: the real submitit SLURM code
path, against fake ``sbatch``, ``srun``, ``sacct`` and ``scancel`` (tests/support/fake_slurm)
that run the jobs on this machine and answer in SLURM's formats. The generated sbatch scripts
(array, %parallel, resources, afterok dependency), the recorded job ids, a failing job beside a
finished one, a second run following queued jobs instead of submitting them again, SIGTERM /
Ctrl-C cancelling the jobs (their processes gone) and a rerun starting a cancelled point again;
points under ``accelerate launch`` and the GPUs their jobs ask for; the slurm block's checks.
Faults, run in this process (a ``_Reacting`` standard output acts on what the study says):
a failing second ``sbatch``, a SUSPENDED job, a cluster whose sacct does not answer (squeue
does), a point changed while its job is queued, a second Ctrl-C and a failing scancel while
cancelling, calib-tune under several processes."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from support.tiny_model import build_tiny_model

from calib_tasks.study import slurm_jobs
from calib_tasks.study.cli import main as calib_study
from calib_tasks.study.layout import StudyLayout
from calib_tasks.study.runner import harness_args, harness_command, shown_command
from calib_tasks.study.spec import Executor, StudyError, load_study, parse_study

FAKE_SLURM = Path(__file__).parent / "support" / "fake_slurm"
_FIRST_IDS = itertools.count(1000, 1000)  # each test's job ids apart: submitit caches states


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("slurm_models") / "tiny")


@pytest.fixture
def slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake SLURM first on PATH; returns its state folder (``calls.jsonl``, ``hold``)."""
    state = tmp_path / "fake_slurm_state"
    state.mkdir()
    (state / "next_id").write_text(str(next(_FIRST_IDS)))
    monkeypatch.setenv("PATH", f"{FAKE_SLURM}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_STATE", str(state))
    monkeypatch.setenv("FAKE_SLURM_PYTHON", sys.executable)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return state


def _study_file(folder: Path, points: dict[str, Path], executor: str) -> Path:
    study = folder / "study.yaml"
    listed = "".join(f"  - {{name: {name}, model: {model}}}\n" for name, model in points.items())
    study.write_text(
        f"tasks: [calib_facts_mini]\nlimit: 4\ndevice: cpu\noutput_dir: {folder / 'out'}\n"
        f"executor: {executor}\npoints:\n{listed}",
        encoding="utf-8",
    )
    return study


EXECUTOR = (
    "{kind: slurm, parallel: 2, slurm: {partition: gpu, cpus_per_task: 2, mem_gb: 4, "
    "timeout_min: 30, setup: ['echo setting up'], additional_parameters: {account: calib}}}"
)


def _run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = calib_study(argv)
    return code, out.getvalue()


def _calls(state: Path, command: str) -> list[list[str]]:
    lines = (state / "calls.jsonl").read_text().splitlines()
    return [call[1:] for call in map(json.loads, lines) if call[0] == command]


def _job_ids(output: str) -> dict[str, str]:
    return dict(re.findall(r"\] (\w+): submitted as job (\d+_\d+)", output))


def _start_study(argv: list[str], output: Path) -> subprocess.Popen:
    with output.open("w") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "calib_tasks.study", *argv],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def _wait_for(output: Path, pattern: str, proc: subprocess.Popen, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = output.read_text()
        if re.search(pattern, text):
            return text
        assert proc.poll() is None, f"calib-study ended early:\n{text}"
        time.sleep(0.1)
    raise AssertionError(f"no {pattern!r} after {timeout} s:\n{output.read_text()}")


def test_the_grid_is_one_job_array_and_a_failed_job_does_not_stop_the_other(
    tiny: Path, slurm: Path, tmp_path: Path
):
    study = _study_file(tmp_path, {"fine": tiny, "broken": tmp_path / "no-such-model"}, EXECUTOR)
    layout = StudyLayout(tmp_path / "out")
    code, output = _run([str(study), "--no-report"])
    assert code == 1, output

    (sbatch,) = _calls(slurm, "sbatch")  # one submission for both points
    ids = _job_ids(output)
    assert set(ids) == {"fine", "broken"}
    array = ids["fine"].split("_")[0]
    script = (layout.slurm_dir / f"{array}_submission.sh").read_text()
    for option in (
        "--array=0-1%2",
        "--partition=gpu",
        "--cpus-per-task=2",
        "--mem=4GB",
        "--time=30",
        "--account=calib",
    ):
        assert f"#SBATCH {option}\n" in script, script
    assert "echo setting up" in script and "--dependency" not in script
    recorded = json.loads(layout.slurm_jobs.read_text())
    assert {name: entry["job_id"] for name, entry in recorded.items()} == ids

    assert f"fine: job {ids['fine']} done in" in output
    (failed,) = [line for line in output.splitlines() if "FAILED" in line]
    assert f"broken: job {ids['broken']} FAILED: field 'model': " in failed
    assert "no-such-model" in failed
    assert f"full output: {layout.log_file('broken')}" in output
    assert "1 of 2 point(s) finished; not finished: broken" in output
    assert layout.point_dir("fine").is_dir() and not layout.point_dir("broken").exists()
    # the job's own log holds the point's progress line
    job_log = (layout.slurm_dir / f"{ids['fine']}_0_log.out").read_text()
    assert "fine: running calib_facts_mini ... done in" in job_log

    code, status = _run(["--status", str(study)])
    assert code == 0
    lines = status.splitlines()
    # the job may still be ending (COMPLETING, or RUNNING here) once its point is published
    assert lines[0].startswith("[1/2] fine: done") and f"; job {ids['fine']} " in lines[0]
    assert lines[1].startswith("[2/2] broken: failed last time: field 'model': ")
    assert len(_calls(slurm, "sbatch")) == 1  # --status submits nothing


def test_a_second_run_follows_the_queued_jobs_and_sigterm_cancels_them(slurm: Path, tmp_path: Path):
    (slurm / "hold").touch()  # a busy cluster: the jobs stay queued, no harness runs
    points = {"p1": tmp_path / "model-1", "p2": tmp_path / "model-2"}
    study = _study_file(tmp_path, points, "{kind: slurm, slurm: {timeout_min: 5}}")
    first_output, second_output = tmp_path / "first.txt", tmp_path / "second.txt"
    first = _start_study([str(study), "--no-report"], first_output)
    second = None
    try:
        text = _wait_for(first_output, r"p1: job \S+ PENDING", first)
        ids = _job_ids(text)
        assert set(ids) == {"p1", "p2"}
        script = next(StudyLayout(tmp_path / "out").slurm_dir.glob("*_submission.sh")).read_text()
        assert "#SBATCH --array=0-1%2\n" in script  # no parallel given: every point at once

        second = _start_study([str(study), "--no-report"], second_output)
        text = _wait_for(second_output, r"p2: job \S+ submitted earlier, following it", second)
        assert f"[1/2] p1: job {ids['p1']} submitted earlier, following it" in text
        assert len(_calls(slurm, "sbatch")) == 1
        code, status = _run(["--status", str(study)])
        assert status.splitlines() == [
            f"[1/2] p1: job {ids['p1']} PENDING",
            f"[2/2] p2: job {ids['p2']} PENDING",
        ]

        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 130, first_output.read_text()
        assert second.wait(timeout=60) == 1, second_output.read_text()
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.kill()
                proc.wait()
    cancelled = sorted(arg for call in _calls(slurm, "scancel") for arg in call)
    assert cancelled == sorted(ids.values())
    assert f"cancelled SLURM job(s) {ids['p1']} (p1), {ids['p2']} (p2)" in first_output.read_text()
    text = second_output.read_text()
    for name in points:
        assert f"{name}: job {ids[name]} FAILED: job {ids[name]} ended CANCELLED" in text
    assert len(_calls(slurm, "sbatch")) == 1


def _processes_naming(text: str) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if text.encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
    return pids


def test_ctrl_c_cancels_the_running_job_its_harness_ends_and_a_rerun_starts_it_again(
    tiny: Path, slurm: Path, tmp_path: Path
):
    study = _study_file(tmp_path, {"p1": tiny}, "{kind: slurm, slurm: {timeout_min: 5}}")
    layout = StudyLayout(tmp_path / "out")
    partial = str(layout.partial_dir("p1"))
    output = tmp_path / "study.txt"
    proc = _start_study([str(study), "--no-report"], output)
    try:
        text = _wait_for(output, r"p1: job \S+ RUNNING", proc)
        (job_id,) = re.findall(r"p1: submitted as job (\S+)", text)
        deadline = time.monotonic() + 60
        while not _processes_naming(partial) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _processes_naming(partial), "the job's harness never started"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130, output.read_text()
    finally:
        proc.kill()
        proc.wait()
    assert _calls(slurm, "scancel") == [[job_id]]
    assert f"cancelled SLURM job(s) {job_id} (p1)" in output.read_text()
    deadline = time.monotonic() + 10
    while _processes_naming(partial) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _processes_naming(partial), "the job's harness outlived its cancellation"
    assert not layout.point_dir("p1").exists()

    code, rerun = _run([str(study), "--no-report"])  # the cancelled point starts again cleanly
    assert code == 0, rerun
    (again,) = re.findall(r"p1: submitted as job (\S+)", rerun)
    assert again != job_id and f"p1: job {again} done in" in rerun
    assert len(_calls(slurm, "sbatch")) == 2
    assert layout.point_dir("p1").is_dir() and not layout.partial_dir("p1").exists()


@pytest.mark.parametrize(
    ("executor", "message"),
    [
        (
            {"kind": "slurm", "slurm": {"timeout_min": 5, "partiton": "gpu"}},
            "field 'executor.slurm': unknown field 'partiton' (did you mean 'partition'?)",
        ),
        (
            {"kind": "slurm", "slurm": {"partition": "gpu"}},
            "'executor.slurm.timeout_min' is required",
        ),
        (
            {"kind": "slurm", "slurm": {"timeout_min": 5, "mem_gb": "lots"}},
            "field 'executor.slurm.mem_gb' must be a number > 0",
        ),
        (
            {"kind": "slurm", "slurm": {"timeout_min": 5, "additional_parameters": ["qos"]}},
            "field 'executor.slurm.additional_parameters' must be a mapping",
        ),
        (
            {"kind": "local", "slurm": {"timeout_min": 5}},
            "field 'executor.slurm' belongs to executor kind 'slurm' only",
        ),
        (
            {"kind": "slurm", "slurm": {"timeout_min": 5, "additional_parameters": {"array": 1}}},
            "field 'executor.slurm.additional_parameters': 'array' is set by submitit itself",
        ),
        (
            {"kind": "slurm", "slurm": {"timeout_min": 5, "exclude": ["n1", 2]}},
            "field 'executor.slurm.exclude' must be a node list",
        ),
    ],
)
def test_a_malformed_slurm_block_is_refused_naming_the_field(executor, message):
    raw = {"tasks": ["t"], "output_dir": "out", "points": [{"name": "a", "model": "m"}]}
    with pytest.raises(StudyError, match=re.escape(message)):
        parse_study({**raw, "executor": executor})


def test_the_slurm_block_reaches_submitit_under_its_names(tmp_path: Path):
    study = parse_study(
        {
            "tasks": ["t"],
            "output_dir": str(tmp_path),
            "points": [{"name": "a", "model": "m"}],
            "executor": {
                "kind": "slurm",
                "parallel": 3,
                "slurm": {"gpus_per_node": 2, "timeout_min": 240, "qos": "normal"},
            },
        }
    )
    assert study.executor == Executor(
        "slurm", 3, {"gpus_per_node": 2, "timeout_min": 240, "qos": "normal"}
    )


def test_a_study_on_slurm_without_submitit_fails_at_once_naming_the_extra(
    slurm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    study = _study_file(tmp_path, {"p1": tmp_path / "m"}, "{kind: slurm, slurm: {timeout_min: 5}}")
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    assert calib_study([str(study)]) == 2
    assert "pip install 'lm-eval-calibration[cluster]'" in capsys.readouterr().err
    assert not (slurm / "calls.jsonl").exists()


def test_a_point_under_accelerate_is_launched_as_accelerate_launch_of_the_harness(tmp_path: Path):
    study = parse_study(
        {
            "tasks": ["calib_facts_mini"],
            "output_dir": str(tmp_path),
            "points": [{"name": "a", "model": "m", "launcher": "accelerate", "num_processes": 2}],
        }
    )
    spec = study.points[0].spec
    args = harness_args(spec, study.settings, tmp_path / "a")
    command = harness_command(spec, args)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2"]
    assert command == [*launch, "-m", "calib_tasks.command_line.eval", *args]
    assert shown_command(spec, args).startswith(
        "accelerate launch --num_processes 2 -m calib_tasks.command_line.eval --model hf "
    )
    # accelerate launch really runs the harness's module (one process: no GPU needed here)
    one = harness_command(replace(spec, num_processes=1), ["--help"])
    done = subprocess.run(one, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--model_args" in done.stdout


@pytest.mark.parametrize(
    ("point", "message"),
    [
        ({"launcher": "torchrun", "num_processes": 2}, "field 'launcher': unknown launcher"),
        ({"launcher": "accelerate"}, "fields 'launcher' and 'num_processes' go together"),
        ({"launcher": "accelerate", "num_processes": 0}, "field 'num_processes' must be"),
    ],
)
def test_a_malformed_launcher_makes_the_point_invalid(point, message):
    raw = {"tasks": ["t"], "output_dir": "out", "points": [{"name": "a", "model": "m", **point}]}
    (entry,) = parse_study(raw).points
    assert entry.spec is None and any(message in problem for problem in entry.problems)


def test_points_under_accelerate_ask_slurm_for_a_gpu_per_process(slurm: Path, tmp_path: Path):
    (slurm / "hold").touch()
    study = tmp_path / "study.yaml"
    study.write_text(
        f"tasks: [calib_facts_mini]\noutput_dir: {tmp_path / 'out'}\n"
        "executor: {kind: slurm, slurm: {gpus_per_node: 1, timeout_min: 5}}\npoints:\n"
        "  - {name: one, model: m1}\n"
        "  - {name: four, model: m4, launcher: accelerate, num_processes: 4}\n"
        "  - {name: also-one, model: m2}\n",
        encoding="utf-8",
    )
    output = tmp_path / "study.txt"
    proc = _start_study([str(study), "--no-report"], output)
    try:
        # the points of one GPU are one sbatch, then the point of four GPUs another
        text = _wait_for(output, r"four: submitted as job", proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 130, output.read_text()
    finally:
        proc.kill()
        proc.wait()
    scripts = {
        script.name.split("_")[0]: script.read_text()
        for script in (tmp_path / "out" / "slurm").glob("*_submission.sh")
    }
    ids = dict(re.findall(r"\] ([\w-]+): submitted as job (\d+)", text))
    assert ids["one"] == ids["also-one"] != ids["four"] and len(scripts) == 2
    assert "#SBATCH --gpus-per-node=1\n" in scripts[ids["one"]]
    assert "#SBATCH --array=0-1%2\n" in scripts[ids["one"]]
    assert "#SBATCH --gpus-per-node=4\n" in scripts[ids["four"]]
    assert "--array" not in scripts[ids["four"]]  # a single job, not an array of one


def test_the_pythia_scale_study_file_for_slurm_has_the_grid_of_the_one_machine_file():
    studies = Path(__file__).resolve().parent.parent / "studies"
    on_slurm = load_study(studies / "pythia_scale_slurm.yaml")
    one_machine = load_study(studies / "pythia_scale.yaml")
    assert [e.spec for e in on_slurm.points] == [e.spec for e in one_machine.points]
    assert on_slurm.settings == one_machine.settings
    assert on_slurm.executor.kind == "slurm" and on_slurm.executor.parallel == 4
    assert on_slurm.executor.slurm["gpus_per_node"] == 1


def test_calib_tune_submits_a_job_per_method_and_the_chained_one_after_its_sft_job(
    tiny: Path, slurm: Path, tmp_path: Path
):
    (slurm / "hold").touch()  # nothing trains: the jobs stay queued until cancelled
    executor = tmp_path / "executor.yaml"
    executor.write_text("executor: {kind: slurm, parallel: 3, slurm: {timeout_min: 60}}\n")
    argv = [
        "-m", "calib_tasks.tune", "--model", str(tiny), "--out", str(tmp_path / "tune"),
        "--methods", "full.dpo,lora", "--tasks", "calib_facts_mini", "--executor", str(executor),
    ]  # fmt: skip
    output = tmp_path / "tune.txt"
    with output.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, *argv],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        text = _wait_for(output, r"full\.dpo: submitted as job", proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 130, output.read_text()
    finally:
        proc.kill()
        proc.wait()
    ids = dict(re.findall(r"^([\w.]+): submitted as job (\S+)$", text, re.MULTILINE))
    assert set(ids) == {"base", "full", "lora", "full.dpo"}
    array = ids["base"].split("_")[0]
    assert {ids["full"], ids["lora"]} == {f"{array}_1", f"{array}_2"}
    folder = tmp_path / "tune" / "slurm"
    first = (folder / f"{array}_submission.sh").read_text()
    assert "#SBATCH --array=0-2%3\n" in first and "--dependency" not in first
    chained = (folder / f"{ids['full.dpo']}_submission.sh").read_text()
    assert f"#SBATCH --dependency=afterok:{ids['full']}\n" in chained
    assert "#SBATCH --kill-on-invalid-dep=yes\n" in chained and "--array" not in chained
    cancelled = sorted(arg for call in _calls(slurm, "scancel") for arg in call)
    assert cancelled == sorted(ids.values())


def test_calib_tune_refuses_an_executor_file_it_cannot_use(tmp_path: Path):
    from calib_tasks.tune.jobs import load_executor

    local = tmp_path / "local.yaml"
    local.write_text("executor: {kind: local, parallel: 2}\n")
    with pytest.raises(StudyError, match="calib-tune trains local methods one after another"):
        load_executor(local)
    extra = tmp_path / "extra.yaml"
    extra.write_text("executor: {kind: slurm, slurm: {timeout_min: 5}}\ntasks: [x]\n")
    with pytest.raises(StudyError, match="must hold the field 'executor' alone"):
        load_executor(extra)
    fine = tmp_path / "fine.yaml"
    fine.write_text("executor: {kind: slurm, slurm: {timeout_min: 5, gpus_per_node: 1}}\n")
    assert load_executor(fine) == Executor("slurm", None, {"timeout_min": 5, "gpus_per_node": 1})


class _Reacting(io.StringIO):
    """Standard output that calls ``reactions[pattern](text so far)`` once, the first time its
    text matches the pattern (an action may raise KeyboardInterrupt: Ctrl-C at that moment)."""

    def __init__(self, reactions: dict[str, Callable[[str], None]]) -> None:
        super().__init__()
        self._reactions = dict(reactions)

    def write(self, text: str) -> int:
        written = super().write(text)
        for pattern, action in list(self._reactions.items()):
            if re.search(pattern, self.getvalue()):
                del self._reactions[pattern]
                action(self.getvalue())
        return written


def _ctrl_c(_text: str) -> None:
    raise KeyboardInterrupt


def _timed_out(signum: int, frame: object) -> None:
    raise TimeoutError("the study did not end in time")


def _run_reacting(
    argv: list[str], reactions: dict[str, Callable[[str], None]], main: Callable = calib_study
) -> tuple[int, str, str]:
    """Run ``main(argv)`` here with ``reactions`` on its standard output (``_Reacting``); its
    exit status, standard output and standard error. TimeoutError after 60 s."""
    out, err = _Reacting(reactions), io.StringIO()
    if signal.getitimer(signal.ITIMER_REAL)[0]:  # run within another: its time limit holds
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return main(argv), out.getvalue(), err.getvalue()
    previous = signal.signal(signal.SIGALRM, _timed_out)
    signal.alarm(60)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return code, out.getvalue(), err.getvalue()


def _first_id(state: Path) -> int:
    return int((state / "next_id").read_text())


def _fake_state(state: Path, job_id: str) -> str:
    return json.loads((state / "jobs" / f"{job_id}.json").read_text())["state"]


def test_a_failing_second_sbatch_cancels_the_jobs_submitted_and_records_them(
    slurm: Path, tmp_path: Path
):
    (slurm / "hold").touch()
    (slurm / "sbatch_fails_after").write_text("1")
    study = tmp_path / "study.yaml"
    study.write_text(
        f"tasks: [calib_facts_mini]\noutput_dir: {tmp_path / 'out'}\n"
        "executor: {kind: slurm, slurm: {timeout_min: 5}}\npoints:\n"
        "  - {name: a, model: m1}\n"
        "  - {name: b, model: m2, launcher: accelerate, num_processes: 2}\n",
        encoding="utf-8",
    )
    a_id = str(_first_id(slurm))
    code, output, errors = _run_reacting([str(study), "--no-report"], {})
    assert code == 1, output + errors
    assert f"[1/2] a: submitted as job {a_id}" in output
    assert "SLURM did not take the jobs" in errors and "Invalid account" in errors
    assert f"cancelled SLURM job(s) {a_id} (a)" in errors
    assert _calls(slurm, "scancel") == [[a_id]] and _fake_state(slurm, a_id) == "CANCELLED"
    recorded = json.loads(StudyLayout(tmp_path / "out").slurm_jobs.read_text())
    assert {name: entry["job_id"] for name, entry in recorded.items()} == {"a": a_id}


def test_a_suspended_job_is_followed_as_live_not_failed(slurm: Path, tmp_path: Path):
    (slurm / "hold").touch()
    study = _study_file(tmp_path, {"p1": tmp_path / "m"}, "{kind: slurm, slurm: {timeout_min: 5}}")
    job_id = str(_first_id(slurm))
    statuses: list[str] = []

    def suspend(_text: str) -> None:
        record = json.loads((slurm / "jobs" / f"{job_id}.json").read_text())
        (slurm / "jobs" / f"{job_id}.json").write_text(json.dumps({**record, "state": "SUSPENDED"}))

    def status_then_ctrl_c(_text: str) -> None:
        statuses.append(_run(["--status", str(study)])[1])
        raise KeyboardInterrupt

    reactions = {"submitted as job": suspend, "SUSPENDED": status_then_ctrl_c}
    code, output, errors = _run_reacting([str(study), "--no-report"], reactions)
    assert code == 130, output + errors
    assert f"[1/1] p1: job {job_id} SUSPENDED" in output and "FAILED" not in output
    assert statuses == [f"[1/1] p1: job {job_id} SUSPENDED\n"]
    assert f"cancelled SLURM job(s) {job_id} (p1)" in errors
    assert _calls(slurm, "scancel") == [[job_id]]


def test_without_sacct_squeue_tells_a_queued_job_live_and_a_gone_one_ended(
    slurm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    (slurm / "hold").touch()
    (slurm / "no_sacct").touch()  # no accounting (or slurmdbd lagging): every job UNKNOWN
    monkeypatch.setattr(slurm_jobs, "QUEUE_SECONDS", 0.0)
    study = _study_file(tmp_path, {"p1": tmp_path / "m"}, "{kind: slurm, slurm: {timeout_min: 5}}")
    job_id = str(_first_id(slurm))
    second: list[tuple[int, str, str]] = []

    def second_run(_text: str) -> None:  # follows the job, then Ctrl-C cancels it
        argv = [str(study), "--no-report"]
        second.append(_run_reacting(argv, {"PENDING": _ctrl_c}))

    code, output, errors = _run_reacting([str(study), "--no-report"], {"PENDING": second_run})
    [(second_code, second_output, second_errors)] = second
    assert second_code == 130, second_output + second_errors
    assert f"[1/1] p1: job {job_id} submitted earlier, following it" in second_output
    assert f"cancelled SLURM job(s) {job_id} (p1)" in second_errors
    assert len(_calls(slurm, "sbatch")) == 1 and _calls(slurm, "squeue")
    # the first run saw it PENDING (squeue), then gone from squeue: ended, without a result
    assert code == 1, output + errors
    assert f"[1/1] p1: job {job_id} PENDING" in output
    assert f"p1: job {job_id} FAILED: job {job_id} ended UNKNOWN" in output


def test_a_point_changed_while_its_job_is_queued_cancels_the_job_and_starts_after_it(
    slurm: Path, tmp_path: Path
):
    (slurm / "hold").touch()
    study = _study_file(tmp_path, {"p1": tmp_path / "m"}, "{kind: slurm, slurm: {timeout_min: 5}}")
    old = str(_first_id(slurm))
    second: list[tuple[int, str, str]] = []

    def change_and_run_again(_text: str) -> None:
        study.write_text(study.read_text().replace("limit: 4", "limit: 3"))
        argv = [str(study), "--no-report"]
        second.append(_run_reacting(argv, {"p1: submitted as job": _ctrl_c}))

    code, output, errors = _run_reacting(
        [str(study), "--no-report"], {"PENDING": change_and_run_again}
    )
    [(second_code, second_output, second_errors)] = second
    assert second_code == 130, second_output + second_errors
    assert f"[1/1] p1: job {old} evaluates earlier settings: cancelling it" in second_output
    (new,) = re.findall(r"p1: submitted as job (\S+)", second_output)
    script = (StudyLayout(tmp_path / "out").slurm_dir / f"{new}_submission.sh").read_text()
    assert f"#SBATCH --dependency=afterany:{old}\n" in script
    assert f"cancelled SLURM job(s) {old} (p1)" in second_errors
    assert f"cancelled SLURM job(s) {new} (p1)" in second_errors  # Ctrl-C while submitting
    assert _calls(slurm, "scancel") == [[old], [new]]
    assert code == 1 and f"p1: job {old} FAILED: job {old} ended CANCELLED" in output


def test_a_second_ctrl_c_does_not_cut_cancelling_short_and_a_failed_scancel_is_reported(
    slurm: Path, tmp_path: Path
):
    (slurm / "hold").touch()
    (slurm / "scancel_interrupts").touch()  # each scancel: Ctrl-C again
    first = _first_id(slurm)
    (slurm / "scancel_fails").write_text(f"{first}_1\n")
    executor = "{kind: slurm, slurm: {timeout_min: 5, exclude: [node1, node2]}}"
    study = _study_file(tmp_path, {"p1": tmp_path / "m1", "p2": tmp_path / "m2"}, executor)
    code, output, errors = _run_reacting(
        [str(study), "--no-report"], {"p2: job .* PENDING": _ctrl_c}
    )
    assert code == 130, output + errors
    assert _calls(slurm, "scancel") == [[f"{first}_0"], [f"{first}_1"]]
    assert f"cancelled SLURM job(s) {first}_0 (p1)" in errors
    assert f"could NOT cancel SLURM job(s) {first}_1 (p2: " in errors
    script = (StudyLayout(tmp_path / "out").slurm_dir / f"{first}_submission.sh").read_text()
    assert "#SBATCH --exclude=node1,node2\n" in script


def _tune_argv(tiny: Path, tmp_path: Path, executor: Path) -> list[str]:
    return [
        "--model", str(tiny), "--out", str(tmp_path / "tune"), "--methods", "full.dpo,lora",
        "--tasks", "calib_facts_mini", "--executor", str(executor),
    ]  # fmt: skip


def test_calib_tune_cancels_its_array_when_the_chained_sbatch_fails(
    tiny: Path, slurm: Path, tmp_path: Path
):
    from calib_tasks.tune.cli import main as calib_tune

    (slurm / "hold").touch()
    (slurm / "sbatch_fails_after").write_text("1")
    executor = tmp_path / "executor.yaml"
    executor.write_text("executor: {kind: slurm, slurm: {timeout_min: 60}}\n")
    argv = _tune_argv(tiny, tmp_path, executor)
    array = _first_id(slurm)
    code, output, errors = _run_reacting(argv, {}, calib_tune)
    assert code == 1, output + errors
    ids = dict(re.findall(r"^([\w.]+): submitted as job (\S+)$", output, re.MULTILINE))
    assert ids == {"base": f"{array}_0", "full": f"{array}_1", "lora": f"{array}_2"}
    assert "calib-tune: SLURM did not take the jobs" in errors
    assert f"cancelled SLURM job(s) {array}_0 (base), {array}_1 (full), {array}_2 (lora)" in errors
    assert sorted(arg for call in _calls(slurm, "scancel") for arg in call) == sorted(ids.values())


def test_calib_tune_on_slurm_under_several_processes_is_refused(
    slurm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    import accelerate

    from calib_tasks.tune.cli import main as calib_tune

    class TwoProcesses:
        num_processes = 2

    monkeypatch.setattr(accelerate, "PartialState", TwoProcesses)
    executor = tmp_path / "executor.yaml"
    executor.write_text("executor: {kind: slurm, slurm: {timeout_min: 60}}\n")
    assert calib_tune(_tune_argv(tmp_path / "no-model", tmp_path, executor)) == 2
    assert "kind 'slurm' submits the jobs from one process, not 2" in capsys.readouterr().err
    assert not (slurm / "calls.jsonl").exists()
