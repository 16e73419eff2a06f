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
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_model import build_tiny_model

from calib_tasks.report.build import write_report
from calib_tasks.report.entries import ReportOptions
from calib_tasks.report.notes import Notes
from calib_tasks.report.runs import find_run_files
from calib_tasks.study import runner
from calib_tasks.study.cli import main as calib_study
from calib_tasks.study.layout import POINT_RECORD, StudyLayout
from calib_tasks.study.results import point_results
from calib_tasks.study.spec import EvalSettings, PointSpec

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
    assert "arc_easy (m): not a calib task" in stderr
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


def _start_study(study: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "calib_tasks.study", str(study), "--no-report"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
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


def test_a_second_run_leaves_alone_the_point_that_a_live_run_is_evaluating(
    models: dict[str, Path], offline_env, tmp_path: Path
):
    study = _study_file(tmp_path, {"only": models["small"]})
    layout = StudyLayout(tmp_path / "out")
    partial = layout.partial_dir("only")
    first = _start_study(study)
    try:
        _wait_for(lambda: _processes_naming(partial), timeout=90, what="the harness to start")
        os.kill(first.pid, signal.SIGSTOP)  # so that it cannot publish the point meanwhile
        (partial / "first-run").touch()

        code, output = _run([str(study), "--no-report"])

        assert code == 1, output
        assert (
            f"[1/1] only: FAILED: another calib-study run (pid {first.pid}), or a harness "
            f"process it started, holds this point's lock {layout.lock_file('only')}"
        ) in output
        assert (partial / "first-run").exists()
        os.kill(first.pid, signal.SIGCONT)
        assert first.wait(timeout=120) == 0
    finally:
        first.kill()
        first.wait()
    assert (layout.point_dir("only") / "first-run").exists()
    assert len(list(layout.point_dir("only").rglob("results_*.json"))) == 1
    assert [json.loads(line)["status"] for line in layout.run_log.read_text().splitlines()] == [
        "failed",
        "done",
    ]
