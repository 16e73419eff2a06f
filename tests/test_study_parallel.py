"""calib-study with ``executor: {kind: local, parallel: 2}``: a 4-point grid of tiny local models
through the real harness, two harness processes at once (observed, not assumed), the same
numbers as in sequence, Ctrl-C ending every running harness and a rerun repeating no finished
point; and ``calib-study --status``."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.tiny_model import build_tiny_model

from calib_tasks.study.cli import main as calib_study
from calib_tasks.study.layout import StudyLayout
from calib_tasks.study.lifetime import take_lock
from calib_tasks.study.runner import cpu_count

NAMES = ("p1", "p2", "p3", "p4")
_THREADS = max(1, cpu_count() // 2)
SHARE = f"on {_THREADS} thread{'s' if _THREADS > 1 else ''}"  # what each of 2 points gets


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("parallel_models")
    return {
        "small": build_tiny_model(root / "tiny-1m"),
        "large": build_tiny_model(root / "tiny-4m", n_embd=64),
    }


@pytest.fixture(scope="module", autouse=True)
def offline_env():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("HF_DATASETS_OFFLINE", "1")
        yield


def _study_file(folder: Path, models: dict[str, Path], parallel: int | None) -> Path:
    """The 4-point grid (two of each tiny model) on a few facts, output in ``folder/out``."""
    folder.mkdir(parents=True, exist_ok=True)
    study = folder / "study.yaml"
    kinds = ("small", "large", "small", "large")
    listed = "".join(
        f"  - {{name: {name}, model: {models[kind]}}}\n"
        for name, kind in zip(NAMES, kinds, strict=True)
    )
    executor = f"executor: {{kind: local, parallel: {parallel}}}\n" if parallel else ""
    study.write_text(
        f"tasks: [calib_facts_mini]\nlimit: 4\ndevice: cpu\noutput_dir: {folder / 'out'}\n"
        f"{executor}points:\n{listed}",
        encoding="utf-8",
    )
    return study


def _run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = calib_study(argv)
    return code, out.getvalue()


def _sigint_as_in_a_terminal() -> None:
    """SIGINT back to its default in the child, so that its Python raises KeyboardInterrupt: a
    test suite started as a shell's background job (``make test &``) inherits SIGINT ignored,
    and Python keeps an ignored SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_study(study: Path, output: Path) -> subprocess.Popen:
    with output.open("w") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "calib_tasks.study", str(study), "--no-report"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=_sigint_as_in_a_terminal,
        )


def _running_points(layout: StudyLayout) -> set[str]:
    """The points whose partial folder a live process names on its command line (the harness's
    --output_path)."""
    partials = {name: str(layout.partial_dir(name)).encode() for name in NAMES}
    running = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            text = cmdline.read_bytes()
            running |= {name for name, partial in partials.items() if partial in text}
    return running


def _watch(proc: subprocess.Popen, layout: StudyLayout, until, timeout: float) -> int:
    """Poll the running points until ``until(running, published)`` holds or ``proc`` ends;
    returns the most points seen running at once."""
    most = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = _running_points(layout)
        most = max(most, len(running))
        published = {name for name in NAMES if layout.point_dir(name).exists()}
        if until(running, published) or proc.poll() is not None:
            return most
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s")


def _numbers(layout: StudyLayout, name: str) -> dict:
    (results,) = layout.point_dir(name).rglob("results_*.json")
    return json.loads(results.read_text())["results"]


def test_two_points_run_at_once_and_give_the_numbers_of_a_run_in_sequence(
    models: dict[str, Path], tmp_path: Path
):
    study = _study_file(tmp_path / "parallel", models, parallel=2)
    layout = StudyLayout(tmp_path / "parallel" / "out")
    output = tmp_path / "parallel.txt"
    proc = _start_study(study, output)
    try:
        most = _watch(proc, layout, lambda running, published: False, timeout=300)
        assert proc.wait(timeout=60) == 0, output.read_text()
    finally:
        proc.kill()
        proc.wait()
    text = output.read_text()
    assert most == 2, f"at most {most} harness process(es) seen at once"
    for position, name in enumerate(NAMES, start=1):
        assert f"[{position}/4] {name}: running calib_facts_mini {SHARE} ... done in" in text
    assert "4 of 4 point(s) finished" in text

    sequential = _study_file(tmp_path / "sequential", models, parallel=None)
    code, seq_output = _run([str(sequential), "--no-report"])
    assert code == 0, seq_output
    assert "running calib_facts_mini ... done in" in seq_output  # no share named in sequence
    in_sequence = StudyLayout(tmp_path / "sequential" / "out")
    for name in NAMES:
        got, expected = _numbers(layout, name), _numbers(in_sequence, name)
        assert got.keys() == expected.keys()
        for task in expected:
            numeric = {k: v for k, v in expected[task].items() if isinstance(v, float)}
            assert numeric, expected[task]
            assert {k: got[task][k] for k in numeric} == pytest.approx(numeric, rel=1e-9, abs=1e-12)

    code, status = _run(["--status", str(study)])
    assert code == 0
    assert [line.split(": ", 1)[1].split(" (")[0] for line in status.splitlines()] == ["done"] * 4


def test_ctrl_c_ends_every_running_harness_and_a_rerun_repeats_no_finished_point(
    models: dict[str, Path], tmp_path: Path
):
    study = _study_file(tmp_path, models, parallel=2)
    layout = StudyLayout(tmp_path / "out")
    output = tmp_path / "first.txt"
    proc = _start_study(study, output)
    try:
        _watch(
            proc,
            layout,
            lambda running, published: len(published) >= 1 and len(running) == 2,
            timeout=300,
        )
        assert proc.poll() is None, output.read_text()
        running = _running_points(layout)
        published = {name for name in NAMES if layout.point_dir(name).exists()}
        assert len(running) == 2 and published and not running & published
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130, output.read_text()
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 5
    while _running_points(layout) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running_points(layout), "a harness process outlived the interrupted study"
    assert "interrupted" in output.read_text()
    finished_at = {
        name: next(layout.point_dir(name).rglob("results_*.json")).stat().st_mtime_ns
        for name in published
    }

    code, status = _run(["--status", str(study)])
    assert code == 0
    states = dict(line.split("] ", 1)[1].split(": ", 1) for line in status.splitlines())
    for name in NAMES:
        assert states[name].startswith("done") == (name in published), status

    code, rerun = _run([str(study), "--no-report"])
    assert code == 0, rerun
    for position, name in enumerate(NAMES, start=1):
        if name in published:
            assert f"[{position}/4] {name}: skipped: finished earlier" in rerun
            (results,) = layout.point_dir(name).rglob("results_*.json")
            assert results.stat().st_mtime_ns == finished_at[name]
        else:
            assert f"[{position}/4] {name}: running calib_facts_mini {SHARE} ... done" in rerun
    events = [json.loads(line) for line in layout.run_log.read_text().splitlines()]
    assert sorted(e["point"] for e in events if e["status"] == "done") == sorted(NAMES)


def test_status_tells_each_points_state_and_runs_nothing(models: dict[str, Path], tmp_path: Path):
    study = _study_file(tmp_path, models, parallel=2)
    layout = StudyLayout(tmp_path / "out")
    layout.lock_file("p1").parent.mkdir(parents=True)
    layout.run_log.write_text(
        json.dumps({"point": "p2", "status": "failed", "reason": "RuntimeError: out of cheese"})
        + "\n"
    )
    layout.partial_dir("p3").mkdir(parents=True)
    with take_lock(layout.lock_file("p1")):
        code, status = _run(["--status", str(study)])
    assert code == 0
    assert status.splitlines() == [
        f"[1/4] p1: running elsewhere (calib-study pid {os.getpid()})",
        "[2/4] p2: failed last time: RuntimeError: out of cheese",
        "[3/4] p3: not finished (its last attempt was interrupted)",
        "[4/4] p4: not started",
    ]
    assert (layout.lock_file("p1").read_text().strip()) == str(os.getpid())
    assert not layout.point_dir("p4").exists() and not layout.log_file("p4").exists()


def test_a_failed_point_is_reported_with_its_error_while_the_others_finish(
    models: dict[str, Path], tmp_path: Path
):
    study = tmp_path / "study.yaml"
    study.write_text(
        f"tasks: [calib_facts_mini]\nlimit: 4\ndevice: cpu\noutput_dir: {tmp_path / 'out'}\n"
        "executor: {kind: local, parallel: 2}\npoints:\n"
        f"  - {{name: broken, model: {tmp_path / 'no-such-model'}}}\n"
        f"  - {{name: fine, model: {models['small']}}}\n",
        encoding="utf-8",
    )
    code, output = _run([str(study), "--no-report"])
    assert code == 1
    lines = output.splitlines()
    (failed,) = [line for line in lines if line.startswith("[1/2] broken: ")]
    assert "FAILED: field 'model': " in failed
    assert f"[2/2] fine: running calib_facts_mini {SHARE} ... done in" in output
    assert "1 of 2 point(s) finished; not finished: broken" in output
    code, status = _run(["--status", str(study)])
    assert code == 0
    assert "[1/2] broken: failed last time: " in status
    assert "[2/2] fine: done" in status
