"""calib-study end to end: tiny local models through the real harness, one process per point.

The grid mixes model sizes (``tiny-1m`` and ``tiny-2m`` in the names) and training steps
(revisions ``step100``/``step200`` of the hub model ``local/tiny-2m`` held in a local hub cache,
read offline exactly as a Pythia checkpoint would be), and bad points: a typo in a key, a
revision of a local folder, a revision missing from the hub cache, an adapter trained for
another base model and an unknown model path. A second study is killed in the middle and
resumed; a third is run twice at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from support.tiny_model import build_tiny_model

from calib_tasks.report.build import write_report
from calib_tasks.report.entries import ReportOptions
from calib_tasks.report.notes import Notes
from calib_tasks.report.runs import find_run_files
from calib_tasks.study import report as study_report
from calib_tasks.study import runner
from calib_tasks.study.cli import main as calib_study
from calib_tasks.study.layout import POINT_RECORD, StudyLayout
from calib_tasks.study.lifetime import lock_holder, take_lock
from calib_tasks.study.results import point_results
from calib_tasks.study.spec import EvalSettings, PointSpec, load_study

TASKS = "[calib_facts_mini, calib_mmlu_mini]"
HUB_MODEL = "local/tiny-2m"


def _fake_hub_cache(cache: Path, revisions: dict[str, Path]) -> None:
    """A hub cache (huggingface_hub's layout) holding ``HUB_MODEL`` at the given revisions."""
    repo = cache / f"models--{HUB_MODEL.replace('/', '--')}"
    for number, (revision, source) in enumerate(sorted(revisions.items())):
        commit = f"{number:040x}"
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / revision).write_text(commit)
        shutil.copytree(source, repo / "snapshots" / commit)


def _lora_adapter(base: Path, out: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(r=2, target_modules=["c_attn"], task_type="CAUSAL_LM"),
    )
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny GPT-2s of different widths, a hub cache with two revisions, and a LoRA adapter
    made for the narrower model."""
    root = tmp_path_factory.mktemp("study_models")
    small = build_tiny_model(root / "tiny-1m")
    large = build_tiny_model(root / "tiny-4m", n_embd=64)
    _fake_hub_cache(root / "hub", {"step100": small, "step200": large})
    return {
        "small": small,
        "large": large,
        "hub": root / "hub",
        "adapter": _lora_adapter(small, root / "lora-for-tiny-1m"),
    }


@pytest.fixture(scope="module")
def offline_env(models: dict[str, Path]):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("HF_DATASETS_OFFLINE", "1")
        patch.setenv("HF_HUB_CACHE", str(models["hub"]))
        yield


def _run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = calib_study(argv)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def grid(models: dict[str, Path], offline_env, tmp_path_factory: pytest.TempPathFactory):
    """The grid study, run once: (exit code, progress output, layout)."""
    root = tmp_path_factory.mktemp("grid")
    study = root / "grid.yaml"
    study.write_text(
        f"""\
tasks: {TASKS}
limit: 6
batch_size: 8
device: cpu
output_dir: {root / "out"}
points:
  - {{name: hub-step200, model: {HUB_MODEL}, revision: step200}}
  - {{name: hub-step100, model: {HUB_MODEL}, revision: step100}}
  - {{name: tiny-1m, model: {models["small"]}}}
  - {{name: typo, model: {models["small"]}, revison: step100}}
  - {{name: local-revision, model: {models["small"]}, revision: step100}}
  - {{name: missing-revision, model: {HUB_MODEL}, revision: step999}}
  - {{name: wrong-adapter, model: {models["large"]}, peft: {models["adapter"]}}}
  - {{name: unknown-model, model: {root / "no-such-model"}}}
""",
        encoding="utf-8",
    )
    code, output = _run([str(study)])
    return code, output, StudyLayout(root / "out")


GOOD = ["hub-step200", "hub-step100", "tiny-1m"]


def test_good_points_finish_and_bad_points_fail_with_their_reason(grid):
    code, output, layout = grid
    lines = output.splitlines()
    assert code == 1
    for position, name in enumerate(GOOD, start=1):
        line = next(line for line in lines if line.startswith(f"[{position}/8] {name}"))
        assert "running calib_facts_mini,calib_mmlu_mini ... done in" in line
        assert (layout.point_dir(name) / POINT_RECORD).exists()
    expected = {
        "[4/8] typo: INVALID: point 'typo': unknown field 'revison' (did you mean 'revision'?)",
        "[5/8] local-revision: INVALID: point 'local-revision': field 'revision': 'step100' "
        "cannot be loaded from the local folder",
        "[6/8] missing-revision (revision step999): running calib_facts_mini,calib_mmlu_mini "
        "... FAILED: field 'model' / 'revision': OSError: We couldn't connect to "
        "'https://huggingface.co' to load the files",
        "[7/8] wrong-adapter (peft ",
        "[8/8] unknown-model: running calib_facts_mini,calib_mmlu_mini ... FAILED: "
        "field 'model': OSError:",
    }
    for start in expected:
        assert any(line.startswith(start) for line in lines), (start, output)
    adapter_line = next(line for line in lines if line.startswith("[7/8]"))
    assert (
        "FAILED: field 'peft': RuntimeError: Error(s) in loading state_dict for "
        "PeftModelForCausalLM: " in adapter_line
    )
    assert "size mismatch" in adapter_line
    for name in ("missing-revision", "wrong-adapter", "unknown-model"):
        assert not layout.point_dir(name).exists()
        assert layout.log_file(name).exists()
    assert f"full output: {layout.log_file('unknown-model')}" in output
    assert not list(layout.points_dir.glob(".*.partial"))
    assert "3 of 8 point(s) finished; not finished: typo, local-revision, missing-revision" in (
        output
    )
    events = [json.loads(line) for line in layout.run_log.read_text().splitlines()]
    assert [e["status"] for e in events] == ["done"] * 3 + ["invalid"] * 2 + ["failed"] * 3


def test_report_orders_runs_and_draws_the_study_figures(grid):
    _, _, layout = grid
    report = layout.report_dir
    summary = (report / "summary.md").read_text()
    assert "(by model size)" in summary
    # the study lists the 2m revisions first; the report orders by the size in the names
    assert summary.index("points/tiny-1m/") < summary.index("points/hub-step200/")
    for name in GOOD:  # the runs are labelled with the points' names
        assert f"| {name} | hf |" in summary
    for figure in ("ece_vs_params", "ece_vs_step"):
        assert (report / f"{figure}.png").stat().st_size > 10_000
        assert f"[![{figure.replace('_', ' ')}]({figure}.png)]" in (report / "study.md").read_text()
    study_md = (report / "study.md").read_text()
    for name in GOOD:
        assert f"| {name} |" in study_md
    assert "| typo |" in study_md and "INVALID: point 'typo'" in study_md
    assert "FAILED: field 'peft': RuntimeError" in study_md


def test_points_reveal_their_size_and_step(grid, tmp_path: Path):
    _, _, layout = grid
    folders = [layout.point_dir("tiny-1m"), layout.point_dir("hub-step200")]
    report = write_report(folders, tmp_path / "report", ReportOptions())
    small = point_results(PointSpec("tiny-1m", "/x/tiny-1m"), report.entries_under(folders[0]))
    late = point_results(
        PointSpec("hub-step200", HUB_MODEL, revision="step200"), report.entries_under(folders[1])
    )
    assert (small.parameters, small.step) == (1e6, None)
    assert (late.parameters, late.step) == (2e6, 200)
    assert set(small.entries) == {"calib_facts_mini", "calib_mmlu_mini"}
    assert small.entries["calib_facts_mini"].numbers.n == 6


def test_a_point_whose_folder_holds_two_runs_is_neither_published_nor_skipped(
    grid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    _, _, grid_layout = grid
    one_run = shutil.copytree(
        grid_layout.point_dir("tiny-1m"),
        tmp_path / "one-run",
        ignore=shutil.ignore_patterns(POINT_RECORD),
    )
    two_runs = shutil.copytree(one_run, tmp_path / "two-runs")
    (run,) = find_run_files([two_runs], Notes())
    for file in [run.results_file, *run.samples_files.values()]:
        shutil.copy(file, file.with_name(file.name.replace(run.date_id, "2000-01-01T00-00-00.0")))
    harness_output = [two_runs]

    def harness(command: list[str], **popen) -> int:
        """Stands in for calib-eval: leaves the files of ``harness_output[0]``."""
        output_path = command[command.index("--output_path") + 1]
        shutil.copytree(harness_output[0], output_path, dirs_exist_ok=True)
        return 0

    monkeypatch.setattr(runner, "run_tied", harness)
    layout = StudyLayout(tmp_path / "out")
    spec = PointSpec("twice", "/x/twice")
    settings = EvalSettings(tasks=("calib_facts_mini", "calib_mmlu_mini"))
    final = layout.point_dir("twice")

    failed = runner.run_point(spec, settings, layout, io.StringIO())
    assert failed.status == "failed"
    assert failed.reason.startswith(
        "the harness exited normally, but its output folder holds 2 runs ("
    )
    assert "*_2000-01-01T00-00-00.0" in failed.reason
    assert not final.exists() and not layout.partial_dir("twice").exists()

    harness_output[0] = one_run
    assert runner.run_point(spec, settings, layout, io.StringIO()).status == "done"
    assert len(list(final.rglob("results_*.json"))) == 1
    shutil.copytree(two_runs, final, dirs_exist_ok=True)
    out = io.StringIO()
    assert runner.run_point(spec, settings, layout, out).status == "done"
    assert out.getvalue().startswith("running calib_facts_mini,calib_mmlu_mini ... done in")
    assert len(list(final.rglob("results_*.json"))) == 1


def test_a_study_whose_report_reports_nothing_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    harness_output = tmp_path / "harness" / "model"
    harness_output.mkdir(parents=True)
    date_id = "2025-01-01T00-00-00.000000"
    results = {"results": {"arc_easy": {"acc,none": 0.5}}, "config": {"model_args": "pretrained=m"}}
    (harness_output / f"results_{date_id}.json").write_text(json.dumps(results))
    sample = {"doc_id": 0, "acc": 1.0}
    (harness_output / f"samples_arc_easy_{date_id}.jsonl").write_text(json.dumps(sample) + "\n")

    def harness(command: list[str], **popen) -> int:
        """Stands in for calib-eval: a complete run of a task that is no calib task."""
        output_path = command[command.index("--output_path") + 1]
        shutil.copytree(harness_output.parent, output_path, dirs_exist_ok=True)
        return 0

    monkeypatch.setattr(runner, "run_tied", harness)
    study = tmp_path / "study.yaml"
    study.write_text(
        f"tasks: [arc_easy]\noutput_dir: {tmp_path / 'out'}\npoints: [{{name: p, model: m}}]\n"
    )

    code, output = _run([str(study)])

    assert code == 1, output
    assert "[1/1] p: running arc_easy ... done in" in output
    stderr = capsys.readouterr().err
    assert "arc_easy (p): not a calib task" in stderr  # labelled with the point's name
    assert "calib-study: calib-report could report nothing on the finished points" in stderr


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def _processes_naming(folder: Path) -> list[int]:
    """The live processes whose command line names ``folder`` (the harness's --output_path)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if str(folder).encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
    return pids


def _study_file(folder: Path, points: dict[str, Path]) -> Path:
    """A study of the tiny ``points`` (name: model folder) on a few facts, output in
    ``folder/out``."""
    study = folder / "study.yaml"
    listed = "".join(f"  - {{name: {name}, model: {model}}}\n" for name, model in points.items())
    study.write_text(
        f"""\
tasks: [calib_facts_mini]
limit: 4
device: cpu
output_dir: {folder / "out"}
points:
{listed}""",
        encoding="utf-8",
    )
    return study


def _start_study(study: Path, output: Path | None = None) -> subprocess.Popen:
    """calib-study on ``study`` in a process of its own: without a report and its output
    dropped, or with the report and its output (stdout and stderr) written to ``output``."""
    if output is None:
        return subprocess.Popen(
            [sys.executable, "-m", "calib_tasks.study", str(study), "--no-report"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    with output.open("w") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "calib_tasks.study", str(study)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def test_a_killed_study_resumes_without_repeating_finished_points(
    models: dict[str, Path], offline_env, tmp_path: Path
):
    study = _study_file(tmp_path, {"first": models["small"], "second": models["large"]})
    layout = StudyLayout(tmp_path / "out")
    second = layout.partial_dir("second")
    proc = _start_study(study)
    try:
        _wait_for(
            lambda: layout.point_dir("first").exists() and _processes_naming(second),
            timeout=90,
            what="the first point to finish and the second's harness process to start",
        )
    finally:
        proc.kill()  # the study process alone, by SIGKILL
        proc.wait()
    _wait_for(lambda: not _processes_naming(second), timeout=5, what="the harness to die")
    # a dying process leaves /proc's command lines before the kernel closes its files: until
    # then the point is still locked, and a rerun rightly finds it running elsewhere
    _wait_for(
        lambda: lock_holder(layout.lock_file("second")) is None,
        timeout=5,
        what="the killed harness to let go of the point's lock",
    )
    assert second.exists() and not layout.point_dir("second").exists()
    (first_results,) = layout.point_dir("first").rglob("results_*.json")
    finished_at = first_results.stat().st_mtime_ns

    code, output = _run([str(study)])

    assert code == 0, output
    assert "[1/2] first: skipped: finished earlier" in output
    assert "[2/2] second: running calib_facts_mini ... done in" in output
    assert first_results.stat().st_mtime_ns == finished_at
    assert list(layout.point_dir("first").rglob("results_*.json")) == [first_results]
    assert len(list(layout.point_dir("second").rglob("results_*.json"))) == 1
    assert not second.exists()
    events = [json.loads(line) for line in layout.run_log.read_text().splitlines()]
    assert [(e["point"], e["status"]) for e in events] == [
        ("first", "done"),
        ("first", "skipped"),
        ("second", "done"),
    ]


def test_a_second_run_leaves_alone_the_point_that_a_live_run_is_evaluating_and_waits_for_it(
    models: dict[str, Path], offline_env, tmp_path: Path
):
    study = _study_file(tmp_path, {"only": models["small"]})
    layout = StudyLayout(tmp_path / "out")
    partial = layout.partial_dir("only")
    first = _start_study(study)
    second_output = tmp_path / "second.txt"
    second = None
    try:
        _wait_for(lambda: _processes_naming(partial), timeout=90, what="the harness to start")
        os.kill(first.pid, signal.SIGSTOP)  # so that it cannot publish the point meanwhile
        (partial / "first-run").touch()
        second = _start_study(study, second_output)
        waiting = (
            f"[1/1] only: running elsewhere (calib-study pid {first.pid}), waiting for it ... "
        )
        _wait_for(lambda: waiting in second_output.read_text(), timeout=90, what="the wait")
        time.sleep(1)
        assert second.poll() is None and (partial / "first-run").exists()
        os.kill(first.pid, signal.SIGCONT)
        assert first.wait(timeout=120) == 0
        assert second.wait(timeout=120) == 0, second_output.read_text()
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.kill()
                proc.wait()
    output = second_output.read_text()
    assert f"[1/1] only: running elsewhere (calib-study pid {first.pid}); back to it later" in (
        output
    )
    assert waiting + "skipped: finished earlier" in output
    assert "FAILED" not in output
    assert (layout.point_dir("only") / "first-run").exists()
    assert len(list(layout.point_dir("only").rglob("results_*.json"))) == 1
    statuses = [json.loads(line)["status"] for line in layout.run_log.read_text().splitlines()]
    assert sorted(statuses) == ["done", "skipped"]


def test_two_runs_of_one_study_share_its_points_and_both_report_every_point(
    models: dict[str, Path], offline_env, tmp_path: Path
):
    study = _study_file(tmp_path, {"first": models["small"], "second": models["large"]})
    layout = StudyLayout(tmp_path / "out")
    outputs = [tmp_path / "a.txt", tmp_path / "b.txt"]
    a = _start_study(study, outputs[0])
    b = None
    try:
        _wait_for(
            lambda: _processes_naming(layout.partial_dir("first")),
            timeout=90,
            what="the first run's harness to start on the first point",
        )
        os.kill(a.pid, signal.SIGSTOP)  # holding the first point while the other run starts
        b = _start_study(study, outputs[1])
        _wait_for(
            lambda: (
                "[1/2] first: running elsewhere" in outputs[1].read_text()
                and layout.point_dir("second").exists()
            ),
            timeout=120,
            what="the second run to evaluate the second point",
        )
        os.kill(a.pid, signal.SIGCONT)
        codes = [a.wait(timeout=180), b.wait(timeout=180)]
    finally:
        for proc in (a, b):
            if proc is not None:
                proc.kill()
                proc.wait()
    texts = [output.read_text() for output in outputs]
    assert codes == [0, 0], texts
    for text in texts:
        assert "FAILED" not in text
        assert "2 of 2 point(s) finished" in text
    assert "[1/2] first: running calib_facts_mini ... done in" in texts[0]
    assert "[2/2] second: skipped: finished earlier" in texts[0]
    assert "[2/2] second: running calib_facts_mini ... done in" in texts[1]
    # the report on disk is one run's whole report, and it lists every point
    assert sorted(p.name for p in layout.root.iterdir()) == [
        "locks",
        "logs",
        "points",
        "report",
        "study_log.jsonl",
    ]
    report = layout.report_dir
    study_md = (report / "study.md").read_text()
    summary = (report / "summary.md").read_text()
    for name in ("first", "second"):
        row = next(line for line in study_md.splitlines() if line.startswith(f"| {name} |"))
        assert "evaluated (" in row or "finished earlier" in row, row
        assert f"| {name} |" in summary
    figures = {p.name for p in (report / "figures").iterdir()}
    linked = {name.rsplit("/", 1)[-1] for name in re.findall(r"\(figures/([^)]+)\)", summary)}
    assert linked and linked <= figures
    assert {name.rsplit(".", 1)[0] for name in figures} == {
        name.rsplit(".", 1)[0] for name in linked
    }


# ------------------------------------------ the report, on points a stand-in harness publishes


def _facts_run(folder: Path, seed: int) -> None:
    """A complete calib_facts_mini run of 30 random top-label records, as the harness lays it
    out under ``--output_path folder``."""
    rng = np.random.default_rng(seed)
    run = folder / "model"
    run.mkdir(parents=True)
    date_id = "2025-01-01T00-00-00.000000"
    with (run / f"samples_calib_facts_mini_{date_id}.jsonl").open("w") as samples:
        for doc_id in range(30):
            confidence = float(rng.uniform(0.3, 1.0))
            record = {"confidence": confidence, "correct": int(rng.random() < confidence)}
            samples.write(json.dumps({"doc_id": doc_id, "filter": "none", "ece": record}) + "\n")
    results = {
        "results": {"calib_facts_mini": {"alias": "calib_facts_mini", "ece,none": 0.1}},
        "group_subtasks": {"calib_facts_mini": []},
        "n-samples": {"calib_facts_mini": {"original": 30, "effective": 30}},
        "config": {"model": "hf", "model_args": f"pretrained=m{seed}"},
    }
    (run / f"results_{date_id}.json").write_text(json.dumps(results))


@pytest.fixture
def stand_in_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A study file of points ``p1`` and ``p2`` on calib_facts_mini whose harness is a stand-in
    writing a small complete run at once; returns a function writing it with the points given
    (default both) and its layout."""

    def harness(command: list[str], **popen) -> int:
        output_path = Path(command[command.index("--output_path") + 1])
        _facts_run(output_path, seed=int(output_path.name.split(".")[1][1:]))
        return 0

    monkeypatch.setattr(runner, "run_tied", harness)
    study = tmp_path / "study.yaml"

    def write(points: tuple[str, ...] = ("p1", "p2")) -> Path:
        listed = "".join(f"  - {{name: {name}, model: m{name[1:]}}}\n" for name in points)
        study.write_text(
            f"tasks: [calib_facts_mini]\noutput_dir: {tmp_path / 'out'}\npoints:\n{listed}"
        )
        return study

    return write, StudyLayout(tmp_path / "out")


def _report_files(report: Path) -> dict[str, bytes]:
    return {str(p.relative_to(report)): p.read_bytes() for p in report.rglob("*") if p.is_file()}


def test_a_report_that_fails_to_build_leaves_the_previous_report_whole(
    stand_in_study, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    write, layout = stand_in_study
    assert _run([str(write(("p1",)))])[0] == 0
    before = _report_files(layout.report_dir)
    assert "| p1 |" in (layout.report_dir / "summary.md").read_text()

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(study_report, "study_summary", no_space)
    code, output = _run([str(write())])

    assert code == 1, output
    assert "[2/2] p2: running calib_facts_mini ... done in" in output
    assert "calib-study: cannot write the report into" in capsys.readouterr().err
    assert _report_files(layout.report_dir) == before  # not the new summary.md with p2
    assert not layout.report_partial.exists() and not layout.report_old.exists()


def test_the_report_waits_for_another_run_writing_it(stand_in_study):
    write, layout = stand_in_study
    study = load_study(write())
    outcomes = runner.run_points(study.points, study.settings, layout, io.StringIO())
    written = []
    with take_lock(layout.report_lock):  # another run writing the report
        writer = threading.Thread(
            target=lambda: written.append(study_report.write_study_report(outcomes, layout))
        )
        writer.start()
        writer.join(timeout=2)
        assert writer.is_alive() and not layout.report_dir.exists()
    writer.join(timeout=60)
    assert not writer.is_alive()
    assert set(written[0].results) == {"p1", "p2"}
    assert written[0].report.summary == layout.report_dir / "summary.md"
    assert written[0].report.summary.is_file()


def test_the_report_lists_the_points_on_disk_not_this_runs_outcomes(stand_in_study):
    write, layout = stand_in_study
    study = load_study(write())
    first, second = runner.run_points(study.points, study.settings, layout, io.StringIO())
    # this run failed p2, which another run then published with the same settings; and p1
    # on disk is not what this run's settings (another limit) would have evaluated
    failed_here = dataclasses.replace(second, status="failed", reason="killed by SIGKILL")
    other_settings = dataclasses.replace(
        first, status="failed", reason="x", evaluation={**first.evaluation, "limit": 5.0}
    )

    written = study_report.write_study_report([other_settings, failed_here], layout)

    assert set(written.results) == {"p2"}
    study_md = (layout.report_dir / "study.md").read_text()
    assert "| p2 | `m2` |  |  |  | finished by another run |" in study_md
    assert "| p1 | `m1` |  |  |  | FAILED: x |" in study_md
    summary = (layout.report_dir / "summary.md").read_text()
    assert "| p2 |" in summary and "| p1 |" not in summary
