"""The shipped generative wrappers and calib_facts_gen: which harness tasks they wrap, that their
configs make tasks (settings checked as before a run), the leaderboard group, and
calib_facts_gen_mini end to end on the tiny model."""

from __future__ import annotations

import re

import pytest
from lm_eval.tasks import TaskManager
from lm_eval.tasks._yaml_loader import load_yaml
from support.generation import record_confidences

from calib_tasks import task_dir
from calib_tasks.generation import CalibGenerationTask
from calib_tasks.tasks.multiple_choice import wrapped_config

SHIPPED = {
    "calib_gsm8k": "gsm8k",
    "calib_triviaqa": "triviaqa",
    "calib_nq_open": "nq_open",
    "calib_leaderboard_ifeval": "leaderboard_ifeval",
    **{
        f"calib_leaderboard_math_{s}_hard": f"leaderboard_math_{s}_hard"
        for s in (
            "algebra",
            "counting_and_prob",
            "geometry",
            "intermediate_algebra",
            "num_theory",
            "prealgebra",
            "precalculus",
        )
    },
}


@pytest.fixture(scope="module")
def harness() -> TaskManager:
    """The harness's own tasks and the package's (the data come from the hub: not here)."""
    return TaskManager()


def test_the_shipped_wrappers_wrap_generation_tasks_of_the_harness(harness):
    shipped = {
        path.stem
        for path in task_dir().rglob("calib_*.yaml")
        if "CalibGenerationTask" in path.read_text()
    }
    assert shipped == set(SHIPPED)
    for wrapper, wrapped in SHIPPED.items():
        entry = harness.task_index[wrapper]
        assert entry.cfg["wraps"] == wrapped
        assert wrapped_config(wrapped, wrapper, "generate_until")["output_type"] == (
            "generate_until"
        )
        CalibGenerationTask.check_config(dict(load_yaml(entry.yaml_path, resolve_func=True)))


def test_correctness_and_methods_of_the_shipped_wrappers(harness):
    """gsm8k: seq and answer; IFEval: right = prompt_level_strict_acc; the others the default
    (their first metric, exact_match; seq)."""
    gsm8k = harness.task_index["calib_gsm8k"].cfg["metadata"]
    assert gsm8k["calib_confidence"] == "seq,answer"
    ifeval = harness.task_index["calib_leaderboard_ifeval"].cfg["metadata"]
    assert ifeval["calib_correct"] == "prompt_level_strict_acc"
    assert "calib_correct" not in (harness.task_index["calib_triviaqa"].cfg.get("metadata") or {})


def test_calib_leaderboard_covers_the_six_tasks_of_the_open_llm_leaderboard(harness):
    stock = harness.task_index["leaderboard"].cfg["task"]
    group = harness.task_index["calib_leaderboard"].cfg["task"]
    assert group == ["calib_" + task for task in stock]
    math = harness.task_index["calib_leaderboard_math_hard"].cfg["task"]
    assert math == ["calib_" + t for t in harness.task_index["leaderboard_math_hard"].cfg["task"]]


def test_wrapping_a_multiple_choice_task_as_generation_names_the_class_to_use(harness):
    with pytest.raises(ValueError, match=r"CalibMultipleChoiceTask"):
        wrapped_config("arc_easy", "calib_x", "generate_until")
    with pytest.raises(ValueError, match=r"CalibGenerationTask"):
        wrapped_config("gsm8k", "calib_x")


def test_calib_facts_gen_mini_scores_normalised_answers_on_the_tiny_model(
    tiny_long_lm, task_manager
):
    """Right exactly when the generated text, normalised (case, punctuation, articles,
    whitespace), is the object (computed here from the logged text); a record per fact with
    its relation, every method's confidence in [0, 1] or unparsed."""
    import lm_eval

    out = lm_eval.simple_evaluate(
        model=tiny_long_lm,
        tasks=["calib_facts_gen_mini"],
        task_manager=task_manager,
        limit=6,
        num_fewshot=2,
        log_samples=True,
        bootstrap_iters=0,
    )
    samples = out["samples"]["calib_facts_gen_mini"]
    assert len(samples) == 6

    def normal(text: str) -> str:
        text = re.sub(r"(?i)\b(?:the|a|an)\b", "", text)
        text = re.sub(r"\s+", "", text).lower()
        return re.sub(r"[^\w]", "", text)

    for sample in samples:
        record = sample["ece"]
        generated = sample["filtered_resps"][0]
        assert record["correct"] == int(normal(generated) == normal(record["obj_label"]))
        assert record["relation"] == sample["doc"]["relation"]
        assert set(record_confidences(record)) == {"seq", "answer", "ptrue", "verbalized"}
        assert 0 < record_confidences(record)["seq"] <= 1
        assert 0 < record_confidences(record)["ptrue"] < 1
    results = out["results"]["calib_facts_gen_mini"]
    assert results["acc,object"] == results["exact_match,object"]


@pytest.mark.parametrize(
    ("answer", "right"),
    [
        ("United Kingdom", 1),
        ("the United Kingdom", 1),
        ("THE UNITED KINGDOM!", 1),
        ("United  Kingdom", 1),
        ("UnitedKingdom", 1),
        ("United", 0),
        ("United Kingdoms", 0),
        ("", 0),
    ],
)
def test_calib_facts_gen_normalises_case_punctuation_articles_and_whitespace(
    task_manager, answer, right
):
    from calib_tasks.generation.request import Generation
    from calib_tasks.generation.task import FilteredAnswer

    (task,) = task_manager.load(["calib_facts_gen_mini"])["tasks"].values()
    doc = dict(next(iter(task.eval_docs)), obj_label="United Kingdom")
    generation = Generation(" " + answer, token_logprobs=(-0.1,), token_ends=(len(answer) + 1,))
    values = task.process_results(doc, [FilteredAnswer(answer, generation, "object")])
    assert values["exact_match"] == right
    assert values["ece"]["correct"] == right


def test_use_cache_runs_the_generative_task_and_caches_nothing_of_it(
    tiny_long_model_dir, task_manager, tmp_path
):
    """--use_cache wraps the backend in the harness's CachingLM, which passes calib_generate
    through to the model: the run works, twice, with the same records (nothing is cached)."""
    import lm_eval

    def run() -> list[dict]:
        out = lm_eval.simple_evaluate(
            model="hf",
            model_args=f"pretrained={tiny_long_model_dir}",
            device="cpu",
            tasks=["calib_facts_gen_mini"],
            task_manager=task_manager,
            limit=2,
            use_cache=str(tmp_path / "cache"),
            log_samples=True,
            bootstrap_iters=0,
        )
        return [sample["ece"] for sample in out["samples"]["calib_facts_gen_mini"]]

    first = run()
    assert len(first) == 2
    assert run() == first


def test_the_interval_is_the_same_however_a_data_parallel_run_ordered_the_records():
    """Ranks gather their samples in another order than one process: every generation row,
    intervals included, is the same on the records in any order."""
    import random

    from calib_tasks.scoring import metric_table
    from calib_tasks.scoring.records import GENERATION, Pool, generation_record, parse_records
    from calib_tasks.scoring.settings import task_settings

    rng = random.Random(0)
    records = [
        generation_record(
            rng.random() < 0.4,
            {"seq": rng.random(), "verbalized": None if i % 5 == 0 else rng.choice([0.7, 0.9])},
        )
        for i in range(200)
    ]
    shuffled = rng.sample(records, len(records))
    settings = task_settings({"calib_confidence": "seq,verbalized"}, "t", GENERATION)
    rows = metric_table.metrics_for(GENERATION, settings)
    assert any(m.key == "ece_ci_low_seq" for m in rows)

    def values(rs):
        pool = Pool(parse_records(rs), "t")
        return {m.key: m.compute[GENERATION](pool, metric_table.DEFAULT_OPTIONS) for m in rows}

    one, other = values(records), values(shuffled)
    assert other == pytest.approx(one, abs=1e-12)  # sums in another order: rounding only
    intervals = [key for key in one if "_ci_" in key]
    assert {k: other[k] for k in intervals} == {k: one[k] for k in intervals}  # bit for bit


@pytest.mark.parametrize(
    ("reply", "cut", "value"),
    [
        (" I'm 1", True, None),  # "I'm 100%" cut inside its number
        (" 85", True, None),
        (" 85 is my", True, 0.85),  # the number ends before the cut
        (" I'm 1", False, 0.01),
        (" 85", False, 0.85),
    ],
)
def test_a_reply_cut_at_its_budget_with_its_number_at_the_end_is_unparsed(reply, cut, value):
    from calib_tasks.generation.prompts import parse_verbalized

    assert parse_verbalized(reply, cut) == value


def test_a_reply_that_used_the_whole_budget_counts_as_cut(tiny_long_lm):
    """The reply's tokens (the backend's tokenizer) against the budget; no tokenizer: unknown."""
    from calib_tasks.generation import prompts, request

    tokens = tiny_long_lm.tokenizer(" 85", add_special_tokens=False)["input_ids"]
    assert not request._used_the_budget(tiny_long_lm, " 85")
    long = tiny_long_lm.tokenizer.decode(tokens * prompts.VERBALIZED_MAX_TOKENS)
    assert request._used_the_budget(tiny_long_lm, long)

    class NoTokenizer:
        tokenizer = None

        def tok_encode(self, text, **kwargs):
            raise AssertionError("no tokenizer to call")

    assert not request._used_the_budget(NoTokenizer(), long)
