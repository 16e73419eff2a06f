"""calib-study end to end: tiny local models through the real harness, one process per point.

The grid mixes model sizes (``tiny-1m`` and ``tiny-2m`` in the names) and training steps
(revisions ``step100``/``step200`` of the hub model ``local/tiny-2m`` held in a local hub cache,
read offline exactly as a Pythia checkpoint would be), and bad points: a typo in a key, a
revision of a local folder, a revision missing from the hub cache, an adapter trained for
another base model and an unknown model path. A second study is killed in the middle and
resumed.
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

from calib_tasks.study.cli import main as calib_study
from calib_tasks.study.layout import POINT_RECORD, StudyLayout
from calib_tasks.study.results import read_point
from calib_tasks.study.spec import PointSpec

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


def test_points_reveal_their_size_and_step(grid):
    _, _, layout = grid
    small = read_point(PointSpec("tiny-1m", "/x/tiny-1m"), layout.point_dir("tiny-1m"))
    late = read_point(
        PointSpec("hub-step200", HUB_MODEL, revision="step200"), layout.point_dir("hub-step200")
    )
    assert (small.parameters, small.step) == (1e6, None)
    assert (late.parameters, late.step) == (2e6, 200)
    assert set(small.entries) == {"calib_facts_mini", "calib_mmlu_mini"}
    assert small.entries["calib_facts_mini"].numbers.n == 6


def _wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the study")
        time.sleep(0.1)


def test_a_killed_study_resumes_without_repeating_finished_points(
    models: dict[str, Path], offline_env, tmp_path: Path
):
    study = tmp_path / "resume.yaml"
    study.write_text(
        f"""\
tasks: [calib_facts_mini]
limit: 4
device: cpu
output_dir: {tmp_path / "out"}
points:
  - {{name: first, model: {models["small"]}}}
  - {{name: second, model: {models["large"]}}}
""",
        encoding="utf-8",
    )
    layout = StudyLayout(tmp_path / "out")
    proc = subprocess.Popen(
        [sys.executable, "-m", "calib_tasks.study", str(study)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for(
            lambda: layout.point_dir("first").exists() and layout.partial_dir("second").exists(),
            timeout=90,
        )
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the study and its harness process
        proc.wait()
    assert layout.partial_dir("second").exists() and not layout.point_dir("second").exists()
    (first_results,) = layout.point_dir("first").rglob("results_*.json")
    finished_at = first_results.stat().st_mtime_ns

    code, output = _run([str(study)])

    assert code == 0, output
    assert "[1/2] first: skipped: finished earlier" in output
    assert "[2/2] second: running calib_facts_mini ... done in" in output
    assert first_results.stat().st_mtime_ns == finished_at
    assert list(layout.point_dir("first").rglob("results_*.json")) == [first_results]
    assert not layout.partial_dir("second").exists()
    events = [json.loads(line) for line in layout.run_log.read_text().splitlines()]
    assert [(e["point"], e["status"]) for e in events] == [
        ("first", "done"),
        ("first", "skipped"),
        ("second", "done"),
    ]
