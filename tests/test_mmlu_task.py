"""calib_mmlu end to end through the real harness on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import lm_eval
import pytest
from lm_eval.api.model import LM
from lm_eval.tasks import TaskManager
from support.data import mini_rows
from support.harness import write_task

STOCK_TEMPLATE = Path(lm_eval.__file__).parent / "tasks/mmlu/default/_default_template_yaml"


def _write_stock_tasks(folder: Path) -> list[str]:
    """The harness's stock per-subject MMLU prompt as plain multiple_choice tasks on the mini data.

    Few-shot examples come from the same file (first k of the subject, the question itself
    excluded), as in calib_mmlu_mini.
    """
    by_subject: dict[str, list[dict]] = {}
    for doc in mini_rows("mmlu_mini.jsonl"):
        by_subject.setdefault(doc["subject"], []).append(doc)
    names = []
    for subject, docs in by_subject.items():
        data = folder / f"{subject}.jsonl"
        data.write_text("".join(json.dumps(d) + "\n" for d in docs))
        name = f"stock_mmlu_{subject}"
        description = (
            f"The following are multiple choice questions (with answers) about "
            f"{subject.replace('_', ' ')}.\n\n"
        )
        config = {
            "include": str(STOCK_TEMPLATE),
            "task": name,
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test",
            "fewshot_split": "test",
            "description": description,
        }
        (folder / f"{name}.yaml").write_text(json.dumps(config))
        names.append(name)
    return names


def test_acc_and_prompts_equal_the_stock_mmlu_prompt(tmp_path, tiny_long_lm, task_manager):
    stock_names = _write_stock_tasks(tmp_path)
    stock = lm_eval.simple_evaluate(
        model=tiny_long_lm,
        tasks=stock_names,
        task_manager=TaskManager(include_path=str(tmp_path)),
        num_fewshot=2,
        log_samples=True,
        bootstrap_iters=0,
    )
    calib = lm_eval.simple_evaluate(
        model=tiny_long_lm,
        tasks=["calib_mmlu_mini"],
        task_manager=task_manager,
        num_fewshot=2,
        log_samples=True,
        bootstrap_iters=0,
    )
    stock_by_question = {
        (s["doc"]["subject"], s["doc"]["question"]): s
        for name in stock_names
        for s in stock["samples"][name]
    }
    calib_samples = calib["samples"]["calib_mmlu_mini"]
    assert len(calib_samples) == len(stock_by_question) == len(mini_rows("mmlu_mini.jsonl"))
    for sample in calib_samples:
        twin = stock_by_question[(sample["doc"]["subject"], sample["doc"]["question"])]
        assert sample["arguments"] == twin["arguments"]  # same prompts, same continuations
        assert sample["acc"] == twin["acc"]
    n_correct = sum(s["acc"] for s in calib_samples)
    assert calib["results"]["calib_mmlu_mini"]["acc,none"] == n_correct / len(calib_samples)
    # the prompt really carries 2 same-subject examples and the subject line
    first = calib_samples[0]
    context = first["arguments"][0][0]
    assert context.startswith("The following are multiple choice questions (with answers) about")
    assert context.count("Answer:") == 3


@pytest.mark.parametrize("num_fewshot", [0, 1])
def test_zero_and_few_shot_with_limit(tiny_long_lm, task_manager, num_fewshot):
    out = lm_eval.simple_evaluate(
        model=tiny_long_lm,
        tasks=["calib_mmlu_mini"],
        task_manager=task_manager,
        num_fewshot=num_fewshot,
        limit=12,
        log_samples=True,
    )
    samples = out["samples"]["calib_mmlu_mini"]
    assert len(samples) == 12
    context = samples[0]["arguments"][0][0]
    assert context.count("Answer:") == num_fewshot + 1
    assert 0.0 <= out["results"]["calib_mmlu_mini"]["ece,none"] <= 1.0


def test_dummy_model_runs(task_manager):
    out = lm_eval.simple_evaluate(
        model="dummy", tasks=["calib_mmlu_mini"], task_manager=task_manager, limit=20
    )
    metrics = out["results"]["calib_mmlu_mini"]
    assert 0.0 <= metrics["ece,none"] <= 1.0
    assert metrics["ece_ci_low,none"] <= metrics["ece,none"] <= metrics["ece_ci_high,none"]


def test_too_many_shots_for_the_mini_file_is_a_clear_error(tiny_long_lm, task_manager):
    with pytest.raises(
        ValueError, match=r"calib_mmlu_mini: 9-shot needs 9 few-shot documents with subject"
    ):
        lm_eval.simple_evaluate(
            model=tiny_long_lm,
            tasks=["calib_mmlu_mini"],
            task_manager=task_manager,
            num_fewshot=9,
            limit=2,
        )


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ({"answer": 7}, r"document 2 of split 'test' is invalid: gold index 'answer'"),
        ({"answer": None}, r"document 2 of split 'test' is invalid: missing field\(s\) answer"),
        ({"choices": ["x", "y"]}, r"document 2 of split 'test' is invalid: 'choices' must be"),
        ({"subject": "astrology"}, r"document 2 of split 'test' is invalid: unknown MMLU subject"),
    ],
)
def test_bad_documents_fail_before_any_model_call(tmp_path, broken, message):
    docs = mini_rows("mmlu_mini.jsonl")[:5]
    docs[2] = {**docs[2], **broken}
    manager = write_task(
        tmp_path, "_calib_mmlu_template_yaml", "calib_mmlu_broken", docs, fewshot_split="test"
    )
    with pytest.raises(ValueError, match=rf"calib_mmlu_broken: {message}"):
        lm_eval.simple_evaluate(model="dummy", tasks=["calib_mmlu_broken"], task_manager=manager)


class _TiedScores(LM):
    """A backend whose log-likelihoods carry no information: every option gets the same."""

    def loglikelihood(self, requests, disable_tqdm=False):
        return [(-1.0, False)] * len(requests)

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        raise NotImplementedError

    def generate_until(self, requests, disable_tqdm=False):
        raise NotImplementedError


def test_tied_scores_are_marked_not_reported_as_calibrated(task_manager, caplog):
    with caplog.at_level("WARNING"):
        out = lm_eval.simple_evaluate(
            model=_TiedScores(), tasks=["calib_mmlu_mini"], task_manager=task_manager, limit=20
        )
    results = out["results"]["calib_mmlu_mini"]
    assert results["uninformative_scores,none"] == 1.0
    assert any(
        "calib_mmlu_mini" in r.getMessage() and "NO INFORMATION" in r.getMessage()
        for r in caplog.records
    )
    informative = lm_eval.simple_evaluate(
        model="dummy", tasks=["calib_mmlu_mini"], task_manager=task_manager, limit=20
    )
    assert informative["results"]["calib_mmlu_mini"]["uninformative_scores,none"] == 0.0
