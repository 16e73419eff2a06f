"""calib-report on runs made without this package: any multiple-choice task of the harness is
scored from the option log-likelihoods its samples logged, under the rules of ``acc`` and
``acc_norm``; other tasks are skipped with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import lm_eval
import numpy as np
import pytest
from lm_eval.loggers import EvaluationTracker
from lm_eval.tasks import TaskManager

import calib_metrics as cm
from calib_tasks.report.build import write_report
from calib_tasks.report.entries import ReportOptions
from calib_tasks.report.logged_choices import read_choice_records

QUESTIONS = [
    ("Which is a colour?", ["red", "table", "seven", "walking home"], 0),
    ("Which is a number?", ["blue", "seven", "chair"], 1),
    ("Which is a city?", ["Paris", "green"], 0),
    ("Which is an animal?", ["stone", "cloud", "the quick brown fox", "run"], 2),
    ("Which is a fruit?", ["apple", "iron", "sky", "music", "door"], 0),
] * 4  # 2 to 5 options, a per-document number of options


def _plain_task(folder: Path) -> TaskManager:
    """A stock harness multiple_choice task with acc and acc_norm, on local data."""
    data = folder / "plain.jsonl"
    data.write_text(
        "".join(
            json.dumps({"question": q, "choices": c, "answer": a}) + "\n" for q, c, a in QUESTIONS
        )
    )
    (folder / "plain_mc.yaml").write_text(
        "task: plain_mc\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "Q: {{question}}\\nA:"\ndoc_to_choice: "{{choices}}"\n'
        "doc_to_target: answer\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\nmetadata:\n  version: 1.0\n"
    )
    return TaskManager(include_path=str(folder), include_defaults=False)


def _save_run(out: dict, folder: Path) -> None:
    """The harness's own output files of ``out`` (results and samples), as --output_path does."""
    tracker = EvaluationTracker(output_path=str(folder))
    samples = out.pop("samples")
    tracker.save_results_aggregated(results=out, samples=samples)
    for task, task_samples in samples.items():
        tracker.save_results_samples(task_name=task, samples=task_samples)


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory, tiny_long_lm) -> Path:
    folder = tmp_path_factory.mktemp("plain_run")
    manager = _plain_task(folder)
    out = lm_eval.simple_evaluate(
        model=tiny_long_lm, tasks=["plain_mc"], task_manager=manager, log_samples=True,
        bootstrap_iters=0,
    )  # fmt: skip
    _save_run(out, folder / "out")
    return folder / "out"


def test_a_plain_multiple_choice_run_is_scored_under_both_rules(plain_run, tmp_path):
    report = write_report([plain_run], tmp_path / "report", ReportOptions())
    entries = {entry.task: entry for entry in report.entries}
    assert set(entries) == {"plain_mc [sum]", "plain_mc [norm]"}
    (results_file,) = plain_run.rglob("results_*.json")
    metrics = json.loads(results_file.read_text())["results"]["plain_mc"]
    # each rule's prediction is the harness's own: pooled acc equals acc and acc_norm
    assert entries["plain_mc [sum]"].numbers.acc == pytest.approx(metrics["acc,none"])
    assert entries["plain_mc [norm]"].numbers.acc == pytest.approx(metrics["acc_norm,none"])
    # and the ECE is a brute-force recomputation from the logged log-likelihoods
    (samples_file,) = plain_run.rglob("samples_plain_mc_*.jsonl")
    for rule, normalise in (("sum", False), ("norm", True)):
        confidence, correct = [], []
        for line in samples_file.read_text().splitlines():
            sample = json.loads(line)
            lls = np.array([float(r[0]) for r in sample["filtered_resps"]])
            if normalise:
                lls = lls / np.array([len(c) for c in sample["doc"]["choices"]])
            p = np.exp(lls - lls.max()) / np.exp(lls - lls.max()).sum()
            confidence.append(p.max())
            correct.append(int(np.argmax(lls) == sample["doc"]["answer"]))
        numbers = entries[f"plain_mc [{rule}]"].numbers
        assert numbers.ece == pytest.approx(cm.ece(confidence, correct), abs=1e-12)
        assert numbers.n == len(QUESTIONS)
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "plain_mc [norm]" in summary and "not a calib task; calibration computed" in summary


def test_the_wrapped_task_and_its_logged_run_agree(tmp_path, tiny_long_lm, task_manager):
    """calib_mmlu_mini's own numbers equal those calib-report finds in the same run stripped
    of everything this package wrote (a run made as if without the package)."""
    out = lm_eval.simple_evaluate(
        model=tiny_long_lm, tasks=["calib_mmlu_mini"], task_manager=task_manager, limit=40,
        log_samples=True, bootstrap_iters=0,
    )  # fmt: skip
    calib = out["results"]["calib_mmlu_mini"]
    keys = set(calib) | {"ece", "ece_ci_low", "ece_ci_high", "mce", "brier", "nll", "auroc"}
    for sample in out["samples"]["calib_mmlu_mini"]:
        for key in list(sample):
            if key in keys or key == "uninformative_scores":
                sample.pop(key)
    out["results"]["calib_mmlu_mini"] = {"acc,none": calib["acc,none"], "alias": "mmlu"}
    _save_run(out, tmp_path / "out")
    report = write_report([tmp_path / "out"], tmp_path / "report", ReportOptions())
    (entry,) = [e for e in report.entries if e.task == "calib_mmlu_mini [sum]"]
    assert entry.numbers.ece == calib["ece,none"]
    assert entry.numbers.mce == calib["mce,none"]
    assert entry.numbers.brier == pytest.approx(calib["brier,none"], abs=1e-15)
    assert entry.numbers.acc == calib["acc,none"]


def test_other_tasks_are_skipped_with_their_reason(tmp_path):
    run = tmp_path / "run" / "model"
    run.mkdir(parents=True)
    date = "2026-01-01T00-00-00.000000"
    results = {
        "results": {"gen_task": {"exact_match,none": 0.5}},
        "configs": {"gen_task": {"output_type": "generate_until"}},
        "n-samples": {"gen_task": {"original": 1, "effective": 1}},
        "config": {"model": "hf", "model_args": "pretrained=x"},
    }
    (run / f"results_{date}.json").write_text(json.dumps(results))
    line = {"doc_id": 0, "target": "a", "filtered_resps": ["b"], "arguments": {}}
    (run / f"samples_gen_task_{date}.jsonl").write_text(json.dumps(line) + "\n")
    report = write_report([tmp_path / "run"], tmp_path / "report", ReportOptions())
    assert report.entries == []
    assert any(
        "gen_task" in note and "not multiple choice (output_type generate_until)" in note
        for note in report.notes
    )


def test_bad_lines_are_named_with_file_and_line(tmp_path):
    path = tmp_path / "samples_mc.jsonl"
    requests = {f"gen_args_{i}": {"arg_0": "Q", "arg_1": " " + o} for i, o in enumerate("ab")}
    good = {
        "target": "1",
        "arguments": requests,
        "filtered_resps": [["-1.0", "False"], ["-2.0", "False"]],
    }
    out_of_range = dict(good, target="7")
    not_finite = dict(good, filtered_resps=[["nan", "False"], ["-2.0", "False"]])
    path.write_text("\n".join(json.dumps(s) for s in (good, out_of_range, not_finite)) + "\n{")
    logged = read_choice_records(path)
    assert len(logged.records["sum"]) == len(logged.records["norm"]) == 1
    assert [p.split(": ", 1)[0] for p in logged.problems] == [f"{path}:{n}" for n in (2, 3, 4)]
    assert "out of range" in logged.problems[0] and "non-finite" in logged.problems[1]


def test_a_group_is_pooled_into_one_entry(tmp_path, tiny_long_lm):
    """A plain group of two multiple-choice tasks: one pooled ECE over both tasks' documents,
    where the harness's own group numbers are means."""
    _plain_task(tmp_path)  # writes plain_mc and its data
    text = (tmp_path / "plain_mc.yaml").read_text()
    (tmp_path / "plain_mc_b.yaml").write_text(text.replace("task: plain_mc", "task: plain_mc_b"))
    (tmp_path / "plain_group.yaml").write_text(
        "group: plain_group\ntask:\n  - plain_mc\n  - plain_mc_b\n"
        "aggregate_metric_list:\n  - metric: acc\n    weight_by_size: true\n"
    )
    manager = TaskManager(include_path=str(tmp_path), include_defaults=False)
    out = lm_eval.simple_evaluate(
        model=tiny_long_lm, tasks=["plain_group"], task_manager=manager, log_samples=True,
        bootstrap_iters=0, limit=12,
    )  # fmt: skip
    _save_run(out, tmp_path / "out")
    report = write_report([tmp_path / "out"], tmp_path / "report", ReportOptions())
    entries = {entry.task: entry for entry in report.entries}
    pooled = entries["plain_group [sum] (pooled)"]
    members = entries["plain_mc [sum]"].records + entries["plain_mc_b [sum]"].records
    assert pooled.records == members and pooled.numbers.n == 24
    confidence = np.array([r["confidence"] for r in members])
    correct = np.array([r["correct"] for r in members], dtype=float)
    assert pooled.numbers.ece == cm.ece(confidence, correct)
    assert "plain_group [norm] (pooled)" in entries
    assert "plain_group [sum] (pooled)" in report.summary.read_text()
