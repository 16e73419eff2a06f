"""Confidence rules and recalibration as task settings, through the real harness on the tiny
model: a wrapped local multiple-choice task under every rule (each rule's numbers recomputed from
the samples, the min rule's from the backend's own per-token scores), no forward pass added by
any rule, and every setting a task cannot compute refused while the task loads."""

from __future__ import annotations

import json
from pathlib import Path

import lm_eval
import numpy as np
import pytest
from lm_eval.api.instance import Instance
from lm_eval.tasks import TaskManager
from support.harness import write_stock_task, write_wrapper

import calib_metrics as cm
from calib_metrics.classwise import static_calibration_error
from calib_metrics.helm import helm_ece_equal_mass
from calib_tasks import task_dir
from calib_tasks.token_stats import UnsupportedBackendError

LETTERS = ["A", "B", "C", "D"]
WORD_RULES = {"calib_rules": "sum,norm,min"}


def _write_task(folder: Path, name: str, choices: str, n: int = 16) -> str:
    """A local 4-option multiple-choice task (options ``choices``: the letters of an MMLU-style
    prompt, or the option texts themselves) and its wrapper ``calib_<name>``."""
    rng = np.random.default_rng(3)
    docs = [
        {
            "question": f"Question {i}: " + " ".join(rng.choice(["red", "sky", "iron"], 3)),
            "options": [" ".join(rng.choice(["a", "stone", "cloud"], j + 1)) for j in range(4)],
            "answer": int(rng.integers(4)),
        }
        for i in range(n)
    ]
    listed = "".join(f"{x}. {{{{options[{i}]}}}}\n" for i, x in enumerate(LETTERS))
    write_stock_task(
        folder,
        name,
        docs,
        doc_to_text="{{question}}\n" + (listed if choices == "letters" else "") + "Answer:",
        doc_to_choice=LETTERS if choices == "letters" else "{{options}}",
        doc_to_target="answer",
        metric_list=[{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    )
    return write_wrapper(folder, name, name)


def _manager(folder: Path, metadata: dict | None = None) -> TaskManager:
    return TaskManager(
        include_path=[str(task_dir()), str(folder)], include_defaults=False, metadata=metadata
    )


class _CountingRows:
    """Counts the sequences the model's forward passes process (``HFLM._model_call``)."""

    def __init__(self, lm, monkeypatch):
        self.rows = 0
        original = type(lm)._model_call

        def counted(model_self, inps, *args, **kwargs):
            self.rows += int(inps.shape[0])
            return original(model_self, inps, *args, **kwargs)

        monkeypatch.setattr(type(lm), "_model_call", counted)


@pytest.fixture(scope="module")
def rule_runs(tmp_path_factory, tiny_long_lm):
    """Per task (word options, letter options): (default run, rows), (every rule's run, rows),
    the rows being the sequences the model's forward passes processed."""
    folder = tmp_path_factory.mktemp("rules")
    tasks = {
        _write_task(folder, "words", "texts"): WORD_RULES,
        _write_task(folder, "letters", "letters"): {"calib_rules": "sum,norm,letter"},
    }
    runs = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        counter = _CountingRows(tiny_long_lm, monkeypatch)
        for task, rules in tasks.items():
            runs[task] = []
            for metadata in (None, rules):
                before = counter.rows
                out = lm_eval.simple_evaluate(
                    model=tiny_long_lm,
                    tasks=[task],
                    task_manager=_manager(folder, metadata),
                    log_samples=True,
                    bootstrap_iters=0,
                )
                runs[task].append((out, counter.rows - before))
    return runs


def test_no_rule_adds_a_forward_pass(rule_runs):
    (default, default_rows), (every, every_rows) = rule_runs["calib_words"]
    n_docs = len(every["samples"]["calib_words"])
    assert default_rows == every_rows == 4 * n_docs  # one sequence per option, under any rule
    acc = [run["results"]["calib_words"]["acc,none"] for run in (default, every)]
    assert acc[0] == acc[1]
    # one-token options: the backend scores a document's options in one pass, under letter too
    (_, default_rows), (_, letter_rows) = rule_runs["calib_letters"]
    assert letter_rows == default_rows


def _top(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = probs.argmax(1)
    conf = np.minimum(probs[np.arange(len(pred)), pred], 1.0)
    return conf, (pred == labels).astype(float)


def test_each_rule_recomputes_from_its_samples(rule_runs, tiny_long_lm):
    (_, _), (every, _) = rule_runs["calib_words"]
    metrics = every["results"]["calib_words"]
    samples = every["samples"]["calib_words"]
    records = [s["ece"] for s in samples]
    labels = np.array([r["label"] for r in records])
    lls = np.array([r["loglikelihoods"] for r in records])
    lengths = np.array([[len(c) for c in s["doc"]["options"]] for s in samples], dtype=float)
    # the min rule from the backend's own per-token scores of the very same requests
    requests = [Instance("token_stats", {}, tuple(a), 0) for s in samples for a in s["arguments"]]
    stats = tiny_long_lm.token_stats(requests)
    min_lp = np.array([s.true_logprob.min() for s in stats], dtype=float).reshape(-1, 4)
    assert (min_lp > lls).any()  # several tokens per option: the rules differ

    def softmax(x):
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    expected = {"": softmax(lls), "_norm": softmax(lls / lengths), "_min": softmax(min_lp)}
    for suffix, probs in expected.items():
        found = np.array([r["probs" + suffix] for r in records])
        np.testing.assert_allclose(found, probs, rtol=1e-6, atol=1e-12)
        assert metrics[f"ece{suffix},none"] == cm.ece(*_top(found, labels))
        assert metrics[f"brier{suffix},none"] == cm.brier_multiclass(found, labels)
        assert metrics[f"sce{suffix},none"] == static_calibration_error(found, labels)


def test_the_letter_rule_is_the_raw_letter_probability(rule_runs):
    (_, _), (run, _) = rule_runs["calib_letters"]
    metrics = run["results"]["calib_letters"]
    records = [s["ece"] for s in run["samples"]["calib_letters"]]
    labels = np.array([r["label"] for r in records])
    raw = np.exp(np.array([r["loglikelihoods"] for r in records]))
    np.testing.assert_allclose([r["probs_letter"] for r in records], raw, rtol=1e-12)
    assert metrics["ece_letter,none"] == cm.ece(*_top(raw, labels))
    assert metrics["helm_ece_10_bin_letter,none"] == helm_ece_equal_mass(*_top(raw, labels))
    assert "brier_letter,none" not in metrics  # raw letter probabilities do not sum to 1
    assert raw.sum(1).max() < 1  # a random model puts mass off the letters


def _load(folder: Path, task: str, metadata: dict) -> None:
    _manager(folder, metadata).load([task])


REFUSED = [
    (
        "calib_mmlu_mini",
        {"calib_rules": "sum,median"},
        r"unknown confidence rule\(s\) \['median'\]",
    ),
    (
        "calib_facts_mini",
        {"calib_rules": "norm"},
        r"calib_facts_mini: confidence rule\(s\) \['norm",
    ),
    (
        "calib_clm_mini",
        {"calib_recalibration": "temperature"},
        r"calib_clm_mini: recalibrator 'temperature' does not apply to a token-level task",
    ),
    ("calib_facts_mini", {"calib_recalibration": "temperature"}, r"facts_mini: recalibrator 'temp"),
    (
        "calib_mmlu_mini",
        {"calib_recalibration": "platt,vec"},
        r"mmlu_mini: unknown recalibrator 'vec'",
    ),
    (
        "calib_mmlu_mini",
        {"calib_rule": "letter"},
        r"calib_mmlu_mini: unknown setting 'calib_rule' .*\(did you mean 'calib_rules'\?\)",
    ),
    (
        "calib_clm_mini",
        {"calib_recalibrations": "platt"},
        r"calib_clm_mini: unknown setting 'calib_recalibrations' .*'calib_recalibration'\?",
    ),
]


@pytest.mark.parametrize(("task", "metadata", "message"), REFUSED)
def test_a_setting_the_task_cannot_compute_fails_at_load(tmp_path, task, metadata, message):
    with pytest.raises(ValueError, match=message):
        _load(tmp_path, task, metadata)


def test_the_letter_rule_needs_letter_options(tmp_path):
    (tmp_path / "words.jsonl").write_text(
        json.dumps({"question": "q?", "choices": ["A", "B"], "answer": 0}) + "\n"
        + json.dumps({"question": "q?", "choices": ["red", "blue"], "answer": 1}) + "\n"
    )  # fmt: skip
    (tmp_path / "calib_words.yaml").write_text(
        "task: calib_words\n"
        "class: !function calib_tasks.multiple_choice.CalibMultipleChoiceTask\n"
        "dataset_path: json\n"
        f"dataset_kwargs: {{data_files: {{test: {tmp_path / 'words.jsonl'}}}}}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        "doc_to_text: '{{question}}'\ndoc_to_choice: '{{choices}}'\ndoc_to_target: answer\n"
    )
    with pytest.raises(ValueError, match=r"calib_words: document 1 .*letter rule.*'red'"):
        _load(tmp_path, "calib_words", {"calib_rules": ["letter"]})


def test_the_min_rule_on_a_backend_without_per_token_scores_names_rule_and_task(tmp_path):
    with pytest.raises(
        UnsupportedBackendError, match=r"calib_mmlu_mini.*rule\(s\) \['min'\] need per-token"
    ):
        lm_eval.simple_evaluate(
            model="dummy",
            tasks=["calib_mmlu_mini"],
            task_manager=_manager(tmp_path, {"calib_rules": "min"}),
            limit=2,
        )
