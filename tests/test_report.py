"""calib-report end to end, on real harness output folders.

Two "runs" of calib_mmlu_mini with the dummy model (different model_args and seeds) are
written exactly as the ``lm_eval`` CLI writes them (``simple_evaluate`` with an
``EvaluationTracker``, then ``save_results_aggregated`` and ``save_results_samples``). The
report's numbers are checked against calib_metrics recomputed from the samples files, and every
kind of bad input against its message.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from html import escape
from pathlib import Path

import numpy as np
import pytest
from support.runs import save_run

import calib_metrics as cm
import calib_tasks
from calib_metrics.histogram import canonical_order
from calib_tasks.report.cli import main

TASK = "calib_mmlu_mini"
SMALL_ARGS = "pretrained=EleutherAI/pythia-70m,revision=step3000"
SMALL_LABEL = "pythia-70m@step3000"
LARGE_ARGS = "pretrained=EleutherAI/pythia-410m"
LARGE_LABEL = "pythia-410m"
PROJECT_ROOT = Path(calib_tasks.__file__).resolve().parent.parent


def _harness_run(output_path: Path, model_args: str, seed: int, task_manager) -> Path:
    """One dummy-model run written the way ``lm_eval run --output_path --log_samples`` does;
    returns the run's folder (``<output_path>/<model name>``)."""
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker

    tracker = EvaluationTracker(output_path=str(output_path))
    results = simple_evaluate(
        model="dummy",
        model_args=model_args,
        tasks=[TASK],
        task_manager=task_manager,
        limit=40,
        log_samples=True,
        evaluation_tracker=tracker,
        random_seed=seed,
    )
    save_run(results, output_path, tracker)
    (run_dir,) = output_path.iterdir()
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, task_manager) -> dict[str, Path]:
    """Two runs of calib_mmlu_mini: the larger model first (the report must reorder them)."""
    root = tmp_path_factory.mktemp("harness_runs")
    return {
        LARGE_LABEL: _harness_run(root / "large", LARGE_ARGS, 1, task_manager),
        SMALL_LABEL: _harness_run(root / "small", SMALL_ARGS, 2, task_manager),
    }


def _records(run_dir: Path, task: str = TASK) -> list[dict]:
    (path,) = run_dir.glob(f"samples_{task}_*.jsonl")
    return [json.loads(line)["ece"] for line in path.read_text().splitlines()]


def _arrays(records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.array([r["confidence"] for r in records]),
        np.array([r["correct"] for r in records], dtype=float),
    )


def _report(run_dirs: list[Path], out: Path, *extra: str, capsys=None) -> tuple[int, str, str]:
    """Run calib-report in-process: (exit code, summary.md, stderr)."""
    code = main([*map(str, run_dirs), "--out", str(out), *extra])
    stderr = capsys.readouterr().err if capsys is not None else ""
    summary = (out / "summary.md").read_text() if (out / "summary.md").exists() else ""
    return code, summary, stderr


def _section(summary: str, task: str) -> str:
    """The part of summary.md about ``task`` (up to the next task)."""
    return summary.split(f"## Task {task}\n", 1)[1].split("\n## ", 1)[0]


def _row(summary: str, task: str, label: str) -> list[str]:
    """The cells of ``label``'s row in the (first) table of ``task``."""
    lines = _section(summary, task).splitlines()
    line = next(x for x in lines if x.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split(" | ")]


def _ci_text(estimate: float, interval: cm.ConfidenceInterval) -> str:
    return f"{estimate:.3f} [{interval.low:.3f}, {interval.high:.3f}]"


def test_report_numbers_match_calib_metrics_on_the_samples(runs, tmp_path, capsys) -> None:
    out = tmp_path / "report"
    code, summary, _ = _report(list(runs.values()), out, capsys=capsys)
    assert code == 0
    for label, run_dir in runs.items():
        records = _records(run_dir)
        confidence, correct = _arrays(records)
        interval = cm.bootstrap_ci(confidence, correct, metric="ece")
        probs = [r["probs"] for r in records]
        labels = [r["label"] for r in records]
        row = _row(summary, TASK, label)
        assert row[1] == "40"
        assert row[2] == f"{correct.mean():.3f}"
        assert row[3] == _ci_text(cm.ece(confidence, correct), interval)
        assert row[4] == f"{cm.mce(confidence, correct):.3f}"
        assert row[5] == f"{cm.brier_multiclass(probs, labels):.3f}"
        assert row[6] == f"{cm.auroc(confidence, correct):.3f}"
        # the task's own numbers in results_*.json agree with the recomputation
        (results_file,) = run_dir.glob("results_*.json")
        reported = json.loads(results_file.read_text())["results"][TASK]
        assert reported["ece,none"] == pytest.approx(cm.ece(confidence, correct), abs=1e-12)
        assert reported["ece_ci_low,none"] == pytest.approx(interval.low, abs=1e-12)
    # model size orders the runs: 70m before 410m, in the runs table and in the task table
    assert summary.index(f"| {SMALL_LABEL} |") < summary.index(f"| {LARGE_LABEL} |")
    assert "In report order (by model size)." in summary
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert figures == sorted(
        [f"comparison.{ext}" for ext in ("png", "svg")]
        + [
            f"reliability{after}__{TASK}__run{i}-{slug}.{ext}"
            for i, slug in ((1, "pythia-70m-step3000"), (2, "pythia-410m"))
            for ext in ("png", "svg")
            for after in ("", "_recalibrated")  # before and after cross-fitted temperature
        ]
    )
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5
    assert '<img src="figures' not in html


def test_breakdown_tables_match_a_direct_recomputation(runs, tmp_path, capsys) -> None:
    out = tmp_path / "report"
    _report([runs[LARGE_LABEL]], out, capsys=capsys)
    text = (out / "breakdowns" / f"{TASK}__run1-{LARGE_LABEL}.md").read_text()
    records = _records(runs[LARGE_LABEL])
    for field in ("subject", "category"):
        table = text.split(f"## Per {field}\n", 1)[1].split("\n## ", 1)[0]
        rows = {
            cells[0]: cells[1:]
            for cells in (
                [c.strip() for c in line.strip("|").split(" | ")]
                for line in table.splitlines()
                if line.startswith("| ")
                and not line.startswith(f"| {field} |")
                and not line.startswith("| ---")
            )
        }
        groups = sorted({r[field] for r in records})
        assert sorted(rows) == groups
        for group in groups:
            confidence, correct = _arrays([r for r in records if r[field] == group])
            assert rows[group] == [
                str(confidence.size),
                f"{correct.mean():.3f}",
                f"{confidence.mean():.3f}",
                f"{cm.ece(confidence, correct):.3f}",
            ]


def test_equal_mass_binning(runs, tmp_path, capsys) -> None:
    out = tmp_path / "report"
    code, summary, _ = _report(
        [runs[SMALL_LABEL]],
        out,
        "--binning",
        "equal_mass",
        "--bins",
        "5",
        "--seed",
        "3",
        capsys=capsys,
    )
    assert code == 0
    confidence, correct = _arrays(_records(runs[SMALL_LABEL]))
    estimate = cm.ece(confidence, correct, n_bins=5, strategy="equal_mass")
    interval = cm.bootstrap_ci(
        confidence,
        correct,
        metric=lambda c, y: cm.ece(c, y, n_bins=5, strategy="equal_mass"),
        seed=3,
    )
    assert _row(summary, TASK, SMALL_LABEL)[3] == _ci_text(estimate, interval)
    assert "5 equal-mass bins" in summary


def test_same_inputs_give_identical_bytes(runs, tmp_path, capsys) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    _report(list(runs.values()), first, capsys=capsys)
    _report(list(runs.values()), second, capsys=capsys)
    written = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert written == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert any(p.suffix == ".png" for p in written) and any(p.suffix == ".svg" for p in written)
    for path in written:
        assert (first / path).read_bytes() == (second / path).read_bytes(), path


# ----------------------------------------------------------------------------- bad input


def _copy_run(run_dir: Path, to: Path) -> Path:
    shutil.copytree(run_dir, to)
    return to


def test_folder_without_results_exits_2_with_a_message(tmp_path) -> None:
    empty = tmp_path / "empty"
    (empty / "nested").mkdir(parents=True)
    (empty / "nested" / "notes.txt").write_text("not a run")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "calib_tasks.report", str(empty), "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{empty}: no results_*.json or samples_*.jsonl found" in proc.stderr
    assert "Nothing could be reported" in (tmp_path / "r" / "summary.md").read_text()


def test_corrupt_samples_lines_are_named_and_the_rest_reported(runs, tmp_path, capsys) -> None:
    run_dir = _copy_run(runs[LARGE_LABEL], tmp_path / "run")
    (samples_file,) = run_dir.glob("samples_*.jsonl")
    lines = samples_file.read_text().splitlines(keepends=True)
    lines[2] = "{this is not json\n"
    lines[-1] = lines[-1][: len(lines[-1]) // 2]  # a truncated last line, no newline
    samples_file.write_text("".join(lines))
    code, summary, stderr = _report([run_dir], tmp_path / "report", capsys=capsys)
    assert code == 0
    assert f"{samples_file}:3: not valid JSON" in stderr
    assert f"{samples_file}:40: not valid JSON" in stderr
    assert f"{samples_file}:3: not valid JSON" in summary
    kept = [r for i, r in enumerate(_records(runs[LARGE_LABEL])) if i not in (2, 39)]
    confidence, correct = _arrays(kept)
    row = _row(summary, TASK, LARGE_LABEL)
    assert row[1] == "38 **INCOMPLETE: 38 of 40 samples**"
    assert f"INCOMPLETE: 38 of 40 samples — {samples_file} has 38 usable sample lines" in stderr
    assert row[3].startswith(f"{cm.ece(confidence, correct):.3f} [")
    assert row[7] == "samples (38 of 40 lines usable)"


def test_bad_records_are_named_with_file_and_line(runs, tmp_path, capsys) -> None:
    run_dir = _copy_run(runs[LARGE_LABEL], tmp_path / "run")
    (samples_file,) = run_dir.glob("samples_*.jsonl")
    lines = [json.loads(line) for line in samples_file.read_text().splitlines()]
    lines[0]["ece"]["confidence"] = 1.5
    del lines[1]["ece"]
    samples_file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    code, _, stderr = _report([run_dir], tmp_path / "report", capsys=capsys)
    assert code == 0
    assert f"{samples_file}:1: confidence must be a number in [0, 1], got 1.5" in stderr
    assert f"{samples_file}:2: no calib record under 'ece'" in stderr


def test_run_without_log_samples_uses_the_results_file(runs, tmp_path, capsys) -> None:
    run_dir = _copy_run(runs[SMALL_LABEL], tmp_path / "no_samples")
    for path in run_dir.glob("samples_*.jsonl"):
        path.unlink()
    out = tmp_path / "report"
    code, summary, stderr = _report([run_dir, runs[LARGE_LABEL]], out, capsys=capsys)
    assert code == 0
    assert f"{TASK} ({SMALL_LABEL}): samples are missing (run without --log_samples?)" in stderr
    (results_file,) = run_dir.glob("results_*.json")
    reported = json.loads(results_file.read_text())["results"][TASK]
    row = _row(summary, TASK, SMALL_LABEL)
    assert row[3] == (
        f"{reported['ece,none']:.3f} [{reported['ece_ci_low,none']:.3f}, "
        f"{reported['ece_ci_high,none']:.3f}]"
    )
    assert row[7:] == ["results file only", "none", "none"]
    assert not list((out / "figures").glob(f"reliability__*{SMALL_LABEL.split('@')[0]}*"))
    assert (out / "figures" / "comparison.png").is_file()


def test_corrupt_results_file_keeps_the_samples(runs, tmp_path, capsys) -> None:
    run_dir = _copy_run(runs[LARGE_LABEL], tmp_path / "run")
    (results_file,) = run_dir.glob("results_*.json")
    results_file.write_text(results_file.read_text()[:200])
    code, summary, stderr = _report([run_dir], tmp_path / "report", capsys=capsys)
    assert code == 0
    assert f"{results_file}:" in stderr and "not valid JSON" in stderr
    assert f"## Task {TASK}" in summary


def test_non_calib_task_is_skipped_with_a_note(runs, tmp_path, capsys) -> None:
    run_dir = _copy_run(runs[LARGE_LABEL], tmp_path / "run")
    (results_file,) = run_dir.glob("results_*.json")
    results = json.loads(results_file.read_text())
    results["results"]["arc_easy"] = {"alias": "arc_easy", "acc,none": 0.5}
    results["results"]["calib_mini"] = {"alias": "calib_mini", "ece,none": 0.1}
    results["group_subtasks"]["calib_mini"] = [TASK]
    results_file.write_text(json.dumps(results))
    date_id = results_file.name[len("results_") : -len(".json")]
    sample = {"doc_id": 0, "doc": {"q": "?"}, "acc": 1.0}
    (run_dir / f"samples_arc_easy_{date_id}.jsonl").write_text(json.dumps(sample) + "\n")
    code, summary, stderr = _report([run_dir], tmp_path / "report", capsys=capsys)
    assert code == 0
    assert f"arc_easy ({LARGE_LABEL}): not a calib task" in stderr
    assert f"calib_mini ({LARGE_LABEL}): a group" in stderr
    assert "## Task arc_easy" not in summary and "## Task calib_mini\n" not in summary
    assert f"## Task {TASK}" in summary


def _histogram_run(root: Path, model_args: str, seed: int) -> Path:
    """A calib_clm_mini run in the harness's layout, its records built by hand: one
    ``ConfidenceHistogram`` record per document, as calib_tasks.tasks.clm writes them."""
    rng = np.random.default_rng(seed)
    date_id = f"2025-01-0{seed}T00-00-00.000000"
    run_dir = root / "EleutherAI__pythia-1.4b"
    run_dir.mkdir(parents=True)
    histograms = []
    with (run_dir / f"samples_calib_clm_mini_{date_id}.jsonl").open("w") as f:
        for doc_id in range(12):
            confidence = rng.beta(2, 2, size=int(rng.integers(20, 60)))
            correct = rng.random(confidence.size) < confidence * 0.8
            hist = cm.ConfidenceHistogram.from_samples(confidence, correct, resolution=100)
            histograms.append(hist)
            record = {"histogram": hist.to_dict(), "n_tokens": confidence.size, "n_bytes": 100}
            line = {"doc_id": doc_id, "doc": {"page": "..."}, "ece": record, "mce": record}
            f.write(json.dumps(line) + "\n")
    results = {
        "results": {"calib_clm_mini": {"alias": "calib_clm_mini", "ece,none": 0.0}},
        "group_subtasks": {"calib_clm_mini": []},
        "n-samples": {"calib_clm_mini": {"original": 12, "effective": 12}},
        "config": {"model": "hf", "model_args": model_args},
    }
    (run_dir / f"results_{date_id}.json").write_text(json.dumps(results))
    return run_dir


def test_runs_of_different_tasks_and_histogram_records(runs, tmp_path, capsys) -> None:
    clm_run = _histogram_run(tmp_path / "clm", "pretrained=EleutherAI/pythia-1.4b", seed=1)
    out = tmp_path / "report"
    code, summary, stderr = _report(
        [runs[LARGE_LABEL], clm_run], out, "--binning", "equal_mass", capsys=capsys
    )
    assert code == 0
    hists = [
        cm.ConfidenceHistogram.from_dict(r["histogram"])
        for r in _records(clm_run, "calib_clm_mini")
    ]
    merged = cm.ConfidenceHistogram.merge(hists)
    metrics = cm.histogram_metrics(merged)
    interval = cm.bootstrap_ci(histograms=canonical_order(hists), metric="ece")
    row = _row(summary, "calib_clm_mini", "pythia-1.4b")
    assert row[1] == str(merged.n)
    assert row[2] == f"{metrics['acc']:.3f}"
    assert row[3] == _ci_text(metrics["ece"], interval)
    assert row[7] == "samples (12 documents)"
    assert "equal-mass binning is not available for token histogram records" in stderr
    # each task is reported for the runs that have it
    assert "| pythia-1.4b |" not in _section(summary, TASK)
    assert f"| {LARGE_LABEL} |" not in _section(summary, "calib_clm_mini")
    assert (out / "figures" / "reliability__calib_clm_mini__run2-pythia-1.4b.png").is_file()
    assert (out / "figures" / "comparison.png").is_file()


# ------------------------------------------------- completeness, option probabilities, degenerate


def _mmlu_records(n: int, seed: int, k: int = 4) -> list[dict]:
    """``n`` top-label records as calib_mmlu writes them (option probabilities, gold label)."""
    rng = np.random.default_rng(seed)
    records = []
    for _ in range(n):
        probs = rng.dirichlet(np.ones(k))
        label = int(rng.integers(k))
        pred = int(np.argmax(probs))
        records.append(
            {
                "confidence": float(probs[pred]),
                "correct": int(pred == label),
                "probs": probs.tolist(),
                "label": label,
                "subject": "anatomy",
                "category": "other",
            }
        )
    return records


def _synthetic_run(
    root: Path,
    tasks: dict[str, dict[str, list[dict]]],
    *,
    effective: dict[str, int],
    key: str = "ece",
    groups: dict[str, list[str]] | None = None,
) -> Path:
    """A run in the harness's layout, records built by hand: ``tasks`` maps each task to its
    filters' records (lines are written filter after filter, as the harness writes them), each
    under sample key ``key`` ("bypass" as in a --predict_only run, whose results file then holds
    ``bypass`` = 999 and no ECE). ``effective`` is the results file's n-samples count per task;
    ``groups`` adds groups (name -> subtasks) with a mean ECE, as the harness reports them."""
    date_id = "2025-02-01T00-00-00.000000"
    run_dir = root / "EleutherAI__pythia-160m"
    run_dir.mkdir(parents=True)
    results: dict = {}
    for task, by_filter in tasks.items():
        with (run_dir / f"samples_{task}_{date_id}.jsonl").open("w") as f:
            for filter_key, records in by_filter.items():
                for doc_id, record in enumerate(records):
                    line = {"doc_id": doc_id, "doc": {"q": "?"}, "filter": filter_key}
                    line |= {"metrics": [key], key: record}
                    f.write(json.dumps(line) + "\n")
        metrics: dict = {"alias": task, "sample_len": effective[task]}
        for filter_key, records in by_filter.items():
            if key == "bypass":
                metrics |= {f"bypass,{filter_key}": 999, f"bypass_stderr,{filter_key}": "N/A"}
            else:
                confidence, correct = _arrays(records)
                metrics[f"ece,{filter_key}"] = cm.ece(confidence, correct)
        results[task] = metrics
    subtasks = {task: [] for task in tasks} | (groups or {})
    for group in groups or {}:
        results[group] = {"alias": group, "ece,none": 0.1}
    document = {
        "results": results,
        "group_subtasks": subtasks,
        "n-samples": {t: {"original": 100, "effective": n} for t, n in effective.items()},
        "config": {"model": "hf", "model_args": "pretrained=EleutherAI/pythia-160m"},
    }
    (run_dir / f"results_{date_id}.json").write_text(json.dumps(document))
    return run_dir


def _samples_file(run_dir: Path, task: str) -> Path:
    (path,) = run_dir.glob(f"samples_{task}_*.jsonl")
    return path


def _keep_lines(path: Path, keep) -> None:
    """Rewrite ``path`` with the lines (0-based index, text) for which ``keep`` is true."""
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(line for i, line in enumerate(lines) if keep(i, line)))


LABEL_160M = "pythia-160m"


def test_samples_file_cut_at_a_line_boundary_is_marked_incomplete(tmp_path, capsys) -> None:
    records = _mmlu_records(20, seed=1)
    run_dir = _synthetic_run(tmp_path / "run", {TASK: {"none": records}}, effective={TASK: 20})
    code, summary, stderr = _report([run_dir], tmp_path / "whole", capsys=capsys)
    assert code == 0 and "INCOMPLETE" not in summary + stderr
    samples_file = _samples_file(run_dir, TASK)
    _keep_lines(samples_file, lambda i, _: i < 5)
    out = tmp_path / "report"
    code, summary, stderr = _report([run_dir], out, capsys=capsys)
    assert code == 0
    (results_file,) = run_dir.glob("results_*.json")
    problem = (
        f"{TASK} ({LABEL_160M}): INCOMPLETE: 5 of 20 samples — {samples_file} has 5 usable sample "
        f"lines, {results_file} counts 20 (n-samples, effective)"
    )
    assert problem in stderr and problem in summary
    row = _row(summary, TASK, LABEL_160M)
    assert row[1] == "5 **INCOMPLETE: 5 of 20 samples**"
    confidence, correct = _arrays(records[:5])
    assert row[3].startswith(f"{cm.ece(confidence, correct):.3f} [")
    warnings = summary.split("## Warnings\n", 1)[1].split("\n## ", 1)[0]
    assert f"- **{TASK}, {LABEL_160M}: INCOMPLETE: 5 of 20 samples**" in warnings
    assert f"- **{LABEL_160M}: INCOMPLETE: 5 of 20 samples**" in _section(summary, TASK)
    html = (out / "report.html").read_text()
    assert '<strong class="alert">INCOMPLETE: 5 of 20 samples</strong>' in html
    breakdown = (out / "breakdowns" / f"{TASK}__run1-{LABEL_160M}.md").read_text()
    assert "**INCOMPLETE: 5 of 20 samples**" in breakdown


def test_more_samples_than_the_results_file_counts_are_inconsistent(tmp_path, capsys) -> None:
    records = _mmlu_records(20, seed=2)
    run_dir = _synthetic_run(tmp_path / "run", {TASK: {"none": records}}, effective={TASK: 20})
    samples_file = _samples_file(run_dir, TASK)
    samples_file.write_text(samples_file.read_text() * 2)  # appended to twice
    code, summary, stderr = _report([run_dir], tmp_path / "report", capsys=capsys)
    assert code == 0
    assert f"INCONSISTENT: 40 samples, the results file counts 20 — {samples_file}" in stderr
    assert _row(summary, TASK, LABEL_160M)[1].endswith(
        "**INCONSISTENT: 40 samples, the results file counts 20**"
    )


def test_each_filter_is_reported_and_checked_on_its_own(tmp_path, capsys) -> None:
    by_filter = {"strict": _mmlu_records(20, seed=3), "loose": _mmlu_records(20, seed=4)}
    run_dir = _synthetic_run(tmp_path / "run", {TASK: by_filter}, effective={TASK: 20})
    code, summary, stderr = _report([run_dir], tmp_path / "whole", capsys=capsys)
    assert code == 0 and "INCOMPLETE" not in summary + stderr
    for filter_key, records in by_filter.items():
        name = f"{TASK}, filter {filter_key}"
        row = _row(summary, name, LABEL_160M)
        confidence, correct = _arrays(records)
        assert row[1] == "20"
        assert row[3].startswith(f"{cm.ece(confidence, correct):.3f} [")
        assert row[7] == f"samples, filter {filter_key} (20 documents)"
    assert f"## Task {TASK}\n" not in summary
    # the second filter's lines cut short: only that filter is incomplete
    _keep_lines(_samples_file(run_dir, TASK), lambda i, _: i < 32)
    code, summary, stderr = _report([run_dir], tmp_path / "report", capsys=capsys)
    assert _row(summary, f"{TASK}, filter strict", LABEL_160M)[1] == "20"
    loose = _row(summary, f"{TASK}, filter loose", LABEL_160M)
    assert loose[1] == "12 **INCOMPLETE: 12 of 20 samples**"
    assert f"{TASK}, filter loose ({LABEL_160M}): INCOMPLETE: 12 of 20 samples" in stderr


def test_tasks_of_a_group_are_checked_against_their_own_counts(tmp_path, capsys) -> None:
    tasks = {
        "calib_a": {"none": _mmlu_records(20, seed=5)},
        "calib_b": {"none": _mmlu_records(10, seed=6)},
    }
    run_dir = _synthetic_run(
        tmp_path / "run",
        tasks,
        effective={"calib_a": 20, "calib_b": 10},
        groups={"calib_ab": ["calib_a", "calib_b"]},
    )
    _keep_lines(_samples_file(run_dir, "calib_b"), lambda i, _: i < 4)
    code, summary, stderr = _report([run_dir], tmp_path / "report", capsys=capsys)
    assert code == 0
    assert _row(summary, "calib_a", LABEL_160M)[1] == "20"
    assert _row(summary, "calib_b", LABEL_160M)[1] == "4 **INCOMPLETE: 4 of 10 samples**"
    assert f"calib_ab ({LABEL_160M}): a group" in stderr
    assert "## Task calib_ab\n" not in summary and stderr.count("INCOMPLETE") == 1
    # the group pooled from its tasks' samples carries the missing ones too
    assert (
        _row(summary, "calib_ab (pooled)", LABEL_160M)[1] == "24 **INCOMPLETE: 24 of 30 samples**"
    )


def test_nan_in_option_probabilities_is_a_problem_line(tmp_path, capsys) -> None:
    records = _mmlu_records(20, seed=7)
    records[2] = {**records[2], "probs": [0.5, float("nan"), 0.25, 0.25]}
    records[5] = {**records[5], "label": 4}
    run_dir = _synthetic_run(tmp_path / "run", {TASK: {"none": records}}, effective={TASK: 20})
    samples_file = _samples_file(run_dir, TASK)
    code, summary, stderr = _report([run_dir], tmp_path / "report", capsys=capsys)
    assert code == 0
    assert f"{samples_file}:3: probs[1] must be a number in [0, 1], got nan" in stderr
    assert f"{samples_file}:6: label must be an index into probs (0 to 3), got 4" in stderr
    kept = [r for i, r in enumerate(records) if i not in (2, 5)]
    row = _row(summary, TASK, LABEL_160M)
    assert row[1] == "18 **INCOMPLETE: 18 of 20 samples**"
    probs, labels = [r["probs"] for r in kept], [r["label"] for r in kept]
    assert row[5] == f"{cm.brier_multiclass(probs, labels):.3f}"  # still multiclass
    assert "Brier: multiclass." in _section(summary, TASK)


def _tied_records(n: int, k: int = 4) -> list[dict]:
    """What a backend without usable log-probabilities gives: every option tied."""
    return [
        {"confidence": 1 / k, "correct": int(i % k == 0), "probs": [1 / k] * k, "label": i % k}
        for i in range(n)
    ]


def test_uninformative_scores_are_marked_not_measured(runs, tmp_path, capsys) -> None:
    run_dir = _synthetic_run(
        tmp_path / "run", {TASK: {"none": _tied_records(20)}}, effective={TASK: 20}
    )
    out = tmp_path / "report"
    code, summary, stderr = _report([runs[LARGE_LABEL], run_dir], out, capsys=capsys)
    assert code == 0
    marker = (
        "NOT MEASURED: all 20 confidences equal 0.25 — the backend's scores carry no information"
    )
    assert f"{TASK} ({LABEL_160M}): NOT MEASURED: all 20 confidences equal 0.25 in " in stderr
    row = _row(summary, TASK, LABEL_160M)
    assert row[3].startswith("**NOT MEASURED** (0.000 [") and row[4] == "(0.000)"
    assert f"- **{LABEL_160M}: {marker}**" in _section(summary, TASK)
    assert f"- **{TASK}, {LABEL_160M}: {marker}**" in summary.split("## Warnings\n", 1)[1]
    # the informative run of the same task is reported as measured
    assert not _row(summary, TASK, LARGE_LABEL)[3].startswith("**NOT MEASURED**")
    assert f"{LARGE_LABEL}: NOT MEASURED" not in summary
    html = (out / "report.html").read_text()
    assert f'<strong class="alert">{LABEL_160M}: {escape(marker)}</strong>' in html
    assert '<td class="num"><strong class="alert">NOT MEASURED</strong> (0.000 [' in html
    assert (out / "figures" / "comparison.png").is_file()


def test_options_tied_in_every_document_are_not_measured(tmp_path, capsys) -> None:
    records = _tied_records(6, k=2) + _tied_records(6, k=4)  # confidences 0.5 and 0.25
    run_dir = _synthetic_run(tmp_path / "run", {TASK: {"none": records}}, effective={TASK: 12})
    code, summary, stderr = _report([run_dir], tmp_path / "report", capsys=capsys)
    assert code == 0
    assert "NOT MEASURED: every option tied in all 12 documents" in _section(summary, TASK)
    assert "Brier is top-label, not multiclass: the records' 'probs' do not all have" in stderr


def test_uninformative_token_histograms_are_marked_not_measured(tmp_path, capsys) -> None:
    run_dir = tmp_path / "clm" / "EleutherAI__pythia-1.4b"
    run_dir.mkdir(parents=True)
    date_id = "2025-01-01T00-00-00.000000"
    with (run_dir / f"samples_calib_clm_mini_{date_id}.jsonl").open("w") as f:
        for doc_id in range(3):
            hist = cm.ConfidenceHistogram.from_samples([1.0] * 10, [1, 0] * 5, resolution=100)
            record = {"histogram": hist.to_dict(), "n_tokens": 10, "n_bytes": 40}
            f.write(json.dumps({"doc_id": doc_id, "ece": record}) + "\n")
    code, summary, _ = _report([run_dir], tmp_path / "report", capsys=capsys)
    assert code == 0
    row = _row(summary, "calib_clm_mini", run_dir.name)  # no results file: the folder's name
    assert row[3].startswith("**NOT MEASURED** (0.500")
    assert "NOT MEASURED: all 30 confidences equal 1 — the backend's scores" in summary


def test_predict_only_run_is_reported_from_its_samples(tmp_path, capsys) -> None:
    records = _mmlu_records(20, seed=8)
    run_dir = _synthetic_run(
        tmp_path / "run", {TASK: {"none": records}}, effective={TASK: 20}, key="bypass"
    )
    code, summary, stderr = _report([run_dir], tmp_path / "report", capsys=capsys)
    assert code == 0
    confidence, correct = _arrays(records)
    interval = cm.bootstrap_ci(confidence, correct, metric="ece")
    row = _row(summary, TASK, LABEL_160M)
    assert row[1] == "20"
    assert row[3] == _ci_text(cm.ece(confidence, correct), interval)
    assert row[7] == "samples (20 documents)"
    assert f"{TASK} ({LABEL_160M}): a --predict_only run" in stderr
    assert "not a calib task" not in stderr
    # cut short, it is checked against the results file's count like any run
    _keep_lines(_samples_file(run_dir, TASK), lambda i, _: i < 5)
    _, summary, _ = _report([run_dir], tmp_path / "cut", capsys=capsys)
    assert _row(summary, TASK, LABEL_160M)[1] == "5 **INCOMPLETE: 5 of 20 samples**"
    # without its samples, the results file of such a run has nothing to report
    _samples_file(run_dir, TASK).unlink()
    code, _, stderr = _report([run_dir], tmp_path / "none", capsys=capsys)
    assert code == 2
    assert f"{TASK} ({LABEL_160M}): a --predict_only run (" in stderr
    assert "without usable samples; nothing to report" in stderr
