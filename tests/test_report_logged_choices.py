"""calib-report on runs made without this package: any multiple-choice task of the harness is
scored from the option log-likelihoods its samples logged, under the rules of ``acc`` and
``acc_norm``; other tasks are skipped with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import lm_eval
import numpy as np
import pytest
from lm_eval.tasks import TaskManager
from support.harness import write_stock_task
from support.runs import save_run

import calib_metrics as cm
from calib_tasks.report.build import write_report
from calib_tasks.report.entries import ReportOptions
from calib_tasks.report.logged_choices import NORM, read_choice_records
from calib_tasks.scoring.confidence_rules import SUM

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


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory, tiny_long_lm) -> Path:
    folder = tmp_path_factory.mktemp("plain_run")
    manager = _plain_task(folder)
    out = lm_eval.simple_evaluate(
        model=tiny_long_lm, tasks=["plain_mc"], task_manager=manager, log_samples=True,
        bootstrap_iters=0,
    )  # fmt: skip
    save_run(out, folder / "out")
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
        confidence, correct = _brute_force(samples_file, _answer, normalise, "choices")
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
    save_run(out, tmp_path / "out")
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
    assert len(logged.records[SUM]) == len(logged.records[NORM]) == 1
    assert [p.split(": ", 1)[0] for p in logged.problems] == [f"{path}:{n}" for n in (2, 3, 4)]
    assert "target '7' is neither an option index nor an option's text" in logged.problems[0]
    assert "non-finite" in logged.problems[1]


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
    save_run(out, tmp_path / "out")
    report = write_report([tmp_path / "out"], tmp_path / "report", ReportOptions())
    entries = {entry.task: entry for entry in report.entries}
    pooled = entries["plain_group [sum] (pooled)"]
    members = entries["plain_mc [sum]"].pool.records + entries["plain_mc_b [sum]"].pool.records
    assert pooled.pool.records == members and pooled.numbers.n == 24
    confidence = np.array([r.confidence for r in members])
    correct = np.array([r.correct for r in members], dtype=float)
    assert pooled.numbers.ece == cm.ece(confidence, correct)
    assert "plain_group [norm] (pooled)" in entries
    assert "plain_group [sum] (pooled)" in report.summary.read_text()


# ---------------------------------------------- digit options: the gold as the harness read it

DIGITS = ["2", "1", "0"]
EVENS = ["2", "4", "6"]
N_DIGIT_DOCS = 12


def _digit_docs(options: list[str]) -> list[dict]:
    """Documents whose options are digits, the gold both as its text and as its index."""
    return [
        {
            "question": f"Pick number {i}:",
            "options": options,
            "answer": options[i % 3],
            "label": i % 3,
        }
        for i in range(N_DIGIT_DOCS)
    ]


def _digit_task(folder: Path, name: str, docs: list[dict], **config: str) -> None:
    """A stock multiple_choice task ``name`` on ``docs`` (acc and acc_norm), ``config`` its
    doc_to_text / doc_to_choice / doc_to_target."""
    template = {"doc_to_text": "Q: {{question}}\nA:", "doc_to_choice": "{{options}}"}
    write_stock_task(folder, name, docs, **{**template, **config})


#: Task -> (its documents, how each document's gold index is read off it, its config).
DIGIT_TASKS = {
    # a field holding the option's text: the harness looks "2" up among the options
    "digits_text": (_digit_docs(DIGITS), lambda d: d["options"].index(d["answer"]), {
        "doc_to_target": "answer"}),
    "evens_text": (_digit_docs(EVENS), lambda d: d["options"].index(d["answer"]), {
        "doc_to_target": "answer"}),
    # a template rendering digits: the harness reads "2" as the index 2
    "digits_index": (_digit_docs(DIGITS), lambda d: d["label"], {
        "doc_to_target": "{{label}}"}),
    # options in the context (winogrande's layout): the gold is doc_to_text's index
    "digits_in_context": (
        [{"contexts": [f"{o} is the answer to {i}" for o in DIGITS], "label": i % 3}
         for i in range(N_DIGIT_DOCS)],
        lambda d: d["label"],
        {"doc_to_text": "{{label}}", "doc_to_choice": "{{contexts}}",
         "doc_to_target": "and that is all."},
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def digit_run(tmp_path_factory, tiny_long_lm) -> Path:
    folder = tmp_path_factory.mktemp("digit_run")
    for name, (docs, _, config) in DIGIT_TASKS.items():
        _digit_task(folder, name, docs, **config)
    manager = TaskManager(include_path=str(folder), include_defaults=False)
    out = lm_eval.simple_evaluate(
        model=tiny_long_lm, tasks=list(DIGIT_TASKS), task_manager=manager, log_samples=True,
        bootstrap_iters=0,
    )  # fmt: skip
    save_run(out, folder / "out")
    return folder / "out"


def _answer(doc: dict) -> int:
    return doc["answer"]


def _brute_force(
    samples_file: Path, gold_of, normalise: bool, options: str = "options"
) -> tuple[list, list]:
    """Confidence and correctness of every logged line, from its option log-likelihoods (per
    character of the document's ``options`` when ``normalise``) and the gold the test reads off
    its document."""
    confidence, correct = [], []
    for line in samples_file.read_text().splitlines():
        sample = json.loads(line)
        lls = np.array([float(r[0]) for r in sample["filtered_resps"]])
        if normalise:
            lls = lls / np.array([len(o) for o in sample["doc"][options]])
        p = np.exp(lls - lls.max()) / np.exp(lls - lls.max()).sum()
        confidence.append(p.max())
        correct.append(int(np.argmax(lls) == gold_of(sample["doc"])))
        if not normalise:  # the test's gold is the harness's: its own verdict agrees
            assert correct[-1] == sample["acc"]
    return confidence, correct


@pytest.mark.parametrize("task", list(DIGIT_TASKS))
def test_digit_options_are_scored_as_the_harness_scored_them(digit_run, tmp_path, task):
    report = write_report([digit_run], tmp_path / "report", ReportOptions())
    entries = {entry.task: entry for entry in report.entries}
    (results_file,) = digit_run.rglob("results_*.json")
    metrics = json.loads(results_file.read_text())["results"][task]
    (samples_file,) = digit_run.rglob(f"samples_{task}_*.jsonl")
    assert not [note for note in report.notes if f"{samples_file}:" in note]  # no problem line
    _, gold_of, _ = DIGIT_TASKS[task]
    rules = [("sum", "acc", False)]
    if task != "digits_in_context":  # options in the context: no lengths, no norm rule
        rules.append(("norm", "acc_norm", True))
    else:
        assert f"{task} [norm]" not in entries
    for rule, harness_key, normalise in rules:
        numbers = entries[f"{task} [{rule}]"].numbers
        assert numbers.n == N_DIGIT_DOCS
        assert numbers.acc == pytest.approx(metrics[f"{harness_key},none"], abs=1e-12)
        confidence, correct = _brute_force(samples_file, gold_of, normalise)
        assert numbers.ece == pytest.approx(cm.ece(confidence, correct), abs=1e-12)


def _logged_line(options: list[str], lls: list[float], target: str, **extra) -> str:
    """A samples line as the harness logs it: one request per option, the options in the
    continuations (after the default target delimiter) or, with ``contexts``, in the contexts."""
    contexts = extra.pop("contexts", ["Q: ?\nA:"] * len(options))
    requests = {
        f"gen_args_{i}": {"arg_0": context, "arg_1": " " + option}
        for i, (context, option) in enumerate(zip(contexts, options, strict=True))
    }
    responses = [[str(ll), "False"] for ll in lls]
    line = {"doc": {"answer": target}, "target": target, "arguments": requests}
    return json.dumps(line | {"filtered_resps": responses, **extra})


FUNCTION = "def doc_to_target(doc):\n    return doc['answer']\n"  # as a results file keeps it
FIRST, SECOND, THIRD = [-1.0, -2.0, -3.0], [-2.0, -1.0, -3.0], [-3.0, -2.0, -1.0]


@pytest.mark.parametrize(
    ("config", "line", "gold", "problem"),
    [
        # "2" is option 2 by index and option 0 by text; the prediction is option 1
        ({"doc_to_target": FUNCTION}, _logged_line(DIGITS, SECOND, "2", acc=0.0), None,
         "the gold option is ambiguous: options [2, 0] remain (option 2 by target '2' as an "
         "index; option 0 by target '2' as an option's text; the harness's acc is 0)"),
        ({"doc_to_target": FUNCTION}, _logged_line(DIGITS, SECOND, "2"), None,
         "the harness's acc is not logged"),
        ({}, _logged_line(DIGITS, SECOND, "2", acc=0.0), None, "the gold option is ambiguous"),
        # the harness's acc tells the readings apart
        ({"doc_to_target": FUNCTION}, _logged_line(DIGITS, FIRST, "2", acc=1.0), 0, None),
        ({"doc_to_target": FUNCTION}, _logged_line(DIGITS, THIRD, "2", acc=1.0), 2, None),
        # the config says: a field holding a text, a template rendering digits (an index)
        ({"doc_to_target": "answer"}, _logged_line(DIGITS, SECOND, "2", acc=0.0), 0, None),
        ({"doc_to_target": "{{answer}}", "doc_to_choice": "{{x}}"},
         _logged_line(DIGITS, SECOND, "2", acc=0.0), 2, None),
        # ... and a line whose logged acc contradicts it
        ({"doc_to_target": "answer"}, _logged_line(DIGITS, SECOND, "1", acc=0.0), None,
         "the harness's acc is 0 but the gold read from the line (option 1 by gold '1') gives 1"),
        ({"doc_to_target": "answer"}, _logged_line(DIGITS, SECOND, "7", acc=0.0), None,
         "the gold '7' names none of the 3 options ['2', '1', '0']"),
        ({"doc_to_target": "{{answer}}"}, _logged_line(DIGITS, SECOND, "[0, 1]", acc=0.0), None,
         "several gold options [0, 1] (a list target): not supported"),
        # options in the contexts, the gold index from a function: acc decides between two
        ({"doc_to_text": FUNCTION},
         _logged_line(["same", "same"], [-2.0, -1.0], "x", acc=0.0, contexts=["a", "b"]), 0, None),
        ({"doc_to_text": FUNCTION},
         _logged_line(["s"] * 3, SECOND, "x", acc=0.0, contexts=["a", "b", "c"]), None,
         "the gold option is ambiguous: options [0, 2] remain (options 0, 1, 2 by "
         "doc_to_text's index, which no config value gives; the harness's acc is 0)"),
        ({"doc_to_text": "{{answer}}", "doc_to_choice": "{{x}}"},
         _logged_line(["s"] * 3, SECOND, "2", acc=0.0, contexts=["a", "b", "c"]), 2, None),
    ],
)  # fmt: skip
def test_the_gold_is_read_as_the_harness_read_it_or_the_line_is_a_problem(
    tmp_path, config, line, gold, problem
):
    path = tmp_path / "samples_mc.jsonl"
    path.write_text(_logged_line(DIGITS, FIRST, "1", acc=0.0) + "\n" + line + "\n")
    logged = read_choice_records(path, config)
    if problem is None:
        assert logged.problems == []
        assert [r.label for r in logged.records[SUM]] == [1, gold]
    else:
        assert len(logged.problems) == 1 and logged.problems[0].startswith(f"{path}:2: ")
        assert problem in logged.problems[0]
        assert [r.label for r in logged.records[SUM]] == [1]


def test_a_line_whose_acc_norm_the_norm_rule_does_not_reproduce_is_left_out_of_it(tmp_path):
    path = tmp_path / "samples_mc.jsonl"
    # per character, option "a" (-1.0) beats option "bbbb" (-0.5 / 4 is higher: -0.125)
    line = _logged_line(["a", "bbbb"], [-1.0, -0.5], "0", acc=0.0, acc_norm=1.0)
    path.write_text(line + "\n")
    logged = read_choice_records(path, {"doc_to_target": "{{answer}}", "doc_to_choice": "x"})
    assert [r.label for r in logged.records[SUM]] == [0]
    assert logged.records[NORM] == []
    assert logged.problems == [
        f"{path}:1: the harness's acc_norm is 1 but the options' log-likelihoods per character "
        "of ['a', 'bbbb'] give 0; left out of the norm rule"
    ]
