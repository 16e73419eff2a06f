"""Any multiple-choice task wrapped by name (calib_tasks.tasks.multiple_choice), through the real
harness on the tiny model: the stock task's acc and acc_norm per document, bit for bit; pooled
calibration under both rules equal to a recomputation from the samples; bad documents named
before any model call; the shipped wrappers name multiple-choice tasks of the harness."""

from __future__ import annotations

from pathlib import Path

import lm_eval
import numpy as np
import pytest
from lm_eval.tasks import TaskManager
from support.harness import write_stock_task, write_wrapper

import calib_metrics as cm
from calib_tasks import task_dir

WORDS = "red table seven walking home Paris green stone cloud apple iron sky music door".split()


def _documents(n_options: int | None, n: int = 24) -> list[dict]:
    """``n`` questions with ``n_options`` options each (None: 2 to 5, per document)."""
    rng = np.random.default_rng(n_options or 0)
    docs = []
    for i in range(n):
        k = n_options or int(rng.integers(2, 6))
        choices = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 4)))) for _ in range(k)]
        docs.append({"question": f"Question {i}: which?", "choices": choices, "answer": i % k})
    return docs


def _write_stock(folder: Path, name: str, docs: list[dict], **config: str) -> None:
    template = {
        "doc_to_text": "{{question}}\nAnswer:",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "answer",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
    }
    write_stock_task(folder, name, docs, **{**template, **config})


def _manager(folder: Path) -> TaskManager:
    return TaskManager(include_path=[str(task_dir()), str(folder)], include_defaults=False)


OPTION_COUNTS = [2, 3, 4, 5, 10, None]


@pytest.fixture(scope="module")
def wrapped_runs(tmp_path_factory, tiny_long_lm):
    """Per option count: (stock run, wrapped run) of the same documents."""
    folder = tmp_path_factory.mktemp("mc_tasks")
    names = []
    for k in OPTION_COUNTS:
        name = f"mc_{k or 'mixed'}"
        _write_stock(folder, name, _documents(k))
        write_wrapper(folder, name, name)
        names.append(name)
    manager = _manager(folder)
    runs = {}
    for name in names:
        runs[name] = tuple(
            lm_eval.simple_evaluate(
                model=tiny_long_lm,
                tasks=[task],
                task_manager=manager,
                log_samples=True,
                bootstrap_iters=0,
            )  # fmt: skip
            for task in (name, f"calib_{name}")
        )
    return runs


@pytest.mark.parametrize("k", OPTION_COUNTS)
def test_acc_and_acc_norm_equal_the_stock_task_per_document(wrapped_runs, k):
    name = f"mc_{k or 'mixed'}"
    stock, wrapped = wrapped_runs[name]
    stock_samples = {s["doc_id"]: s for s in stock["samples"][name]}
    wrapped_samples = wrapped["samples"][f"calib_{name}"]
    assert len(wrapped_samples) == len(stock_samples) == 24
    for sample in wrapped_samples:
        other = stock_samples[sample["doc_id"]]
        assert sample["arguments"] == other["arguments"]  # same prompts, same options
        assert (sample["acc"], sample["acc_norm"]) == (other["acc"], other["acc_norm"])
        record = sample["ece"]
        assert len(record["probs"]) == len(record["probs_norm"]) == len(sample["doc"]["choices"])
        assert record["label"] == sample["doc"]["answer"]
    for metric in ("acc,none", "acc_norm,none"):
        assert wrapped["results"][f"calib_{name}"][metric] == stock["results"][name][metric]


@pytest.mark.parametrize("k", OPTION_COUNTS)
def test_pooled_calibration_under_both_rules_equals_the_samples(wrapped_runs, k):
    name = f"calib_mc_{k or 'mixed'}"
    _, wrapped = wrapped_runs[f"mc_{k or 'mixed'}"]
    results = wrapped["results"][name]
    samples = wrapped["samples"][name]
    for rule, key in (("probs", "ece,none"), ("probs_norm", "ece_norm,none")):
        confidence, correct = [], []
        for sample in samples:
            lls = np.array([float(r[0]) for r in sample["filtered_resps"]])
            if rule == "probs_norm":
                lls = lls / np.array([len(c) for c in sample["doc"]["choices"]])
            p = np.exp(lls - lls.max()) / np.exp(lls - lls.max()).sum()
            np.testing.assert_allclose(sample["ece"][rule], p, rtol=1e-12)
            confidence.append(p.max())
            correct.append(int(np.argmax(lls) == sample["doc"]["answer"]))
        assert results[key] == pytest.approx(cm.ece(confidence, correct), abs=1e-12)
    # the acc_norm rule's pooled accuracy is the harness's acc_norm
    norm_correct = [int(np.argmax(s["ece"]["probs_norm"]) == s["ece"]["label"]) for s in samples]
    assert np.mean(norm_correct) == results["acc_norm,none"]


@pytest.mark.parametrize(
    ("docs", "message"),
    [
        ([{"question": "q", "choices": ["a", "b"], "answer": 5}], "gold index 5 is out of range"),
        ([{"question": "q", "choices": [], "answer": 0}], "non-empty list"),
        ([{"question": "q", "choices": ["a", "b"], "answer": "c"}], "none of the 2 choices"),
    ],
)
def test_bad_documents_are_named_before_any_model_call(tmp_path, docs, message):
    good = {"question": "q", "choices": ["a", "b"], "answer": 1}
    # the harness itself inspects the first document's choices while building the task
    _write_stock(tmp_path, "broken", [good, *docs, good])
    write_wrapper(tmp_path, "broken", "broken")
    with pytest.raises(ValueError, match=rf"calib_broken: document 1 .*{message}"):
        lm_eval.simple_evaluate(
            model="dummy", tasks=["calib_broken"], task_manager=_manager(tmp_path)
        )


def test_a_whitespace_prompt_is_named_before_any_model_call(tmp_path, tiny_long_lm):
    """Unchecked, the harness hands the hf backend an empty context and its assertion fails
    mid-run; an empty prompt (the harness's "no context") still runs."""
    good = {"question": "q", "choices": ["a", "b"], "answer": 1}
    _write_stock(
        tmp_path, "blank", [good, {**good, "question": " \n "}], doc_to_text="{{question}}"
    )
    write_wrapper(tmp_path, "blank", "blank")
    with pytest.raises(ValueError, match=r"calib_blank: document 1 .*prompt is whitespace only"):
        lm_eval.simple_evaluate(
            model=tiny_long_lm, tasks=["calib_blank"], task_manager=_manager(tmp_path)
        )
    _write_stock(tmp_path, "empty", [good, {**good, "question": ""}], doc_to_text="{{question}}")
    write_wrapper(tmp_path, "empty", "empty")
    out = lm_eval.simple_evaluate(
        model=tiny_long_lm, tasks=["calib_empty"], task_manager=_manager(tmp_path)
    )
    assert out["results"]["calib_empty"]["ece,none"] >= 0


def test_several_gold_answers_are_refused_as_such(tmp_path):
    docs = [{"question": "q", "choices": ["a", "b", "c"], "answers": [0, 2]}]
    _write_stock(tmp_path, "multi", docs, doc_to_target="answers")
    write_wrapper(tmp_path, "multi", "multi")
    message = r"document 0 .*several gold answers \(\[0, 2\]\).*\(multiple_target\) are not supp"
    with pytest.raises(ValueError, match="calib_multi: " + message):
        _manager(tmp_path).load(["calib_multi"])


def test_a_task_that_is_not_multiple_choice_is_named(tmp_path):
    (tmp_path / "gen.yaml").write_text(
        "task: gen\ndataset_path: json\noutput_type: generate_until\ndoc_to_text: q\n"
        "doc_to_target: a\n"
    )
    write_wrapper(tmp_path, "gen", "gen")
    with pytest.raises(ValueError, match="wraps 'gen', whose output_type is 'generate_until'"):
        _manager(tmp_path).load(["calib_gen"])
    write_wrapper(tmp_path, "nothing", "no_such_task")
    with pytest.raises(ValueError, match="wraps 'no_such_task', which is no task"):
        _manager(tmp_path).load(["calib_nothing"])


SHIPPED = {
    "calib_arc_easy": "arc_easy",
    "calib_arc_challenge": "arc_challenge",
    "calib_hellaswag": "hellaswag",
    "calib_winogrande": "winogrande",
    "calib_piqa": "piqa",
    "calib_openbookqa": "openbookqa",
    "calib_truthfulqa_mc1": "truthfulqa_mc1",
}


LEADERBOARD = task_dir() / "leaderboard"


def _leaderboard_wrappers() -> dict[str, str]:
    """The leaderboard folder's multiple-choice wrappers: calib_<task> -> <task> (the
    generative ones are tests/test_generation_tasks.py's)."""
    return {
        path.stem: path.stem.removeprefix("calib_")
        for path in LEADERBOARD.glob("calib_*.yaml")
        if "CalibMultipleChoiceTask" in path.read_text()
    }


def test_the_shipped_wrappers_name_multiple_choice_tasks_of_the_harness():
    """Their data come from the hub (not here): the configs they wrap are checked instead."""
    from calib_tasks.tasks.multiple_choice import wrapped_config

    harness = TaskManager()
    for wrapper, wrapped in {**SHIPPED, **_leaderboard_wrappers()}.items():
        assert harness.task_index[wrapper].cfg["wraps"] == wrapped
        config = wrapped_config(wrapped, wrapper)
        assert config["output_type"] == "multiple_choice"
        assert "task" not in config


def test_the_leaderboard_group_wraps_every_multiple_choice_task_of_the_leaderboard():
    """calib_leaderboard_mc: every multiple-choice task of the harness's Open LLM Leaderboard v2
    group (mmlu_pro, bbh, gpqa, musr), each wrapped, in groups mirroring the leaderboard's."""
    harness = TaskManager()
    stock = set()
    for member in harness.task_index["leaderboard"].cfg["task"]:
        cfg = harness.task_index[member].cfg
        for task in cfg["task"] if cfg.get("group") else [member]:
            if harness.task_index[task].cfg.get("output_type") == "multiple_choice":
                stock.add(task)
    assert set(_leaderboard_wrappers().values()) == stock
    assert len(stock) == 1 + 24 + 3 + 3  # mmlu_pro, bbh, gpqa, musr; not math_hard, ifeval
    group = harness.task_index["calib_leaderboard_mc"].cfg
    assert group["task"] == [
        "calib_leaderboard_mmlu_pro",
        "calib_leaderboard_bbh",
        "calib_leaderboard_gpqa",
        "calib_leaderboard_musr",
    ]
    for sub in ("bbh", "gpqa", "musr"):
        members = harness.task_index[f"calib_leaderboard_{sub}"].cfg["task"]
        assert members == [
            "calib_" + t for t in harness.task_index[f"leaderboard_{sub}"].cfg["task"]
        ]
