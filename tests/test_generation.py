"""Calibration of generated answers (calib_tasks.generation), end to end through the real harness
on the tiny random GPT-2 and a small local generate_until task with two filters.

The wrapped task's own metrics and texts equal the stock task's, bit for bit; every confidence
method equals a brute-force computation with torch and transformers (support.generation); the
hf route (log-probabilities read while generating) agrees with the fallback (the text rescored
with token_stats); under --apply_chat_template the follow-up prompts are the conversation;
--predict_only keeps the record; bad settings are errors naming the task; the responses survive
pickling.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
from lm_eval.tasks import TaskManager
from support.generation import (
    continuation_tokens,
    greedy_answer,
    ptrue,
    question_text,
    record_confidences,
    reference_model,
    write_generation_task,
    write_generation_wrapper,
)
from support.harness import evaluate

from calib_tasks.generation import prompts, request
from calib_tasks.generation.task import FilteredAnswer, confidences

N = 12
WORDS = "red table seven walking home Paris green stone cloud apple iron sky".split()
DOCS = [{"question": f"What is {WORDS[i]} {i}?", "answer": str(i)} for i in range(N)]
#: "reat", a token of its own, is frequent in the tiny model's text; "lar" cuts the token "ilar";
#: "ision" is the first token of one text, which is then empty.
UNTIL = ["\n", "reat", "lar", "ision"]
MAX_TOKENS = 8
GENERATION_KWARGS = {"until": UNTIL, "max_gen_toks": MAX_TOKENS, "do_sample": False}
ALL_METHODS = ["seq", "seq_joint", "seq_min", "answer", "ptrue", "verbalized"]
SEQ_METHODS = ["seq", "seq_joint", "seq_min"]
CHAT_METHODS = ["seq", "ptrue", "verbalized"]
FILTER_NAMES = ("whole", "number")
REL = 1e-5


def _manager(folder: Path) -> TaskManager:
    return TaskManager(include_path=str(folder), include_defaults=False)


def _by_key(samples: list[dict]) -> dict[tuple[str, int], dict]:
    """The samples of a run by (filter, document)."""
    return {(s["filter"], s["doc_id"]): s for s in samples}


def _seq_values(logprobs: list[float]) -> dict[str, float | None]:
    """The token methods of a text whose tokens have ``logprobs`` (None for an empty text)."""
    if not logprobs:
        return dict.fromkeys(SEQ_METHODS)
    return {
        "seq": math.exp(math.fsum(logprobs) / len(logprobs)),
        "seq_joint": math.exp(math.fsum(logprobs)),
        "seq_min": math.exp(min(logprobs)),
    }


def _close(value: float | None, reference: float | None) -> bool:
    if reference is None:
        return value is None
    return value is not None and value == pytest.approx(reference, rel=REL, abs=1e-12)


@pytest.fixture(scope="module")
def lm(tiny_long_model_dir):
    """The harness's hf backend, batches of 4 (so contexts are left-padded in a batch)."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(tiny_long_model_dir), device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def model(tiny_long_model_dir):
    """The same model and tokenizer, loaded by transformers directly (the references)."""
    return reference_model(tiny_long_model_dir)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The task folder: ``gen`` (stock; its golds set from a first run so that some answers are
    right), ``calib_gen`` (every method), ``calib_gen_seq`` (the token methods, right by the
    threshold form ``exact_match>=0.5``), ``calib_gen_chat`` (``CHAT_METHODS``) and
    ``calib_gen_beam`` (the token methods, beam search)."""
    return tmp_path_factory.mktemp("generation_tasks")


@pytest.fixture(scope="module")
def runs(folder, lm):
    """The stock and the wrapped run of the same documents, after the gold of every other
    document was set to the model's own output: the number the regex extracts where it finds
    one, else the whole text."""
    write_generation_task(folder, "gen", DOCS, generation_kwargs=GENERATION_KWARGS)
    first = _by_key(evaluate(lm, _manager(folder), "gen", N)["samples"]["gen"])
    docs = []
    for i, doc in enumerate(DOCS):
        answer = first[("whole", i)]["filtered_resps"][0]
        number = first[("number", i)]["filtered_resps"][0]
        if i % 2 == 0:
            doc = {**doc, "answer": answer if number == "[invalid]" else number}
        docs.append(doc)
    write_generation_task(folder, "gen", docs, data="golds", generation_kwargs=GENERATION_KWARGS)
    write_generation_wrapper(
        folder, "calib_gen", "gen", metadata={"calib_confidence": ",".join(ALL_METHODS)}
    )
    write_generation_wrapper(
        folder,
        "calib_gen_seq",
        "gen",
        metadata={"calib_confidence": ",".join(SEQ_METHODS), "calib_correct": "exact_match>=0.5"},
    )
    write_generation_wrapper(
        folder, "calib_gen_chat", "gen", metadata={"calib_confidence": ",".join(CHAT_METHODS)}
    )
    write_generation_wrapper(
        folder,
        "calib_gen_beam",
        "gen",
        generation_kwargs={**GENERATION_KWARGS, "num_beams": 2},
        metadata={"calib_confidence": ",".join(SEQ_METHODS)},
    )
    manager = _manager(folder)
    stock = evaluate(lm, manager, "gen", N)
    calib = evaluate(lm, manager, "calib_gen", N)
    return SimpleNamespace(
        docs=docs,
        manager=manager,
        stock=stock,
        calib=calib,
        stock_samples=_by_key(stock["samples"]["gen"]),
        calib_samples=_by_key(calib["samples"]["calib_gen"]),
    )


@pytest.fixture(scope="module")
def references(runs, model):
    """Per document, the brute-force greedy answer of its context."""
    return [
        greedy_answer(model.network, model.tokenizer, question_text(doc), MAX_TOKENS, UNTIL)
        for doc in runs.docs
    ]


# ------------------------------------------------------------------ 1. the stock metrics


def test_stock_metrics_and_texts_are_bit_identical(runs):
    assert runs.calib_samples.keys() == runs.stock_samples.keys()
    assert len(runs.calib_samples) == N * len(FILTER_NAMES)
    for key, stock in runs.stock_samples.items():
        calib = runs.calib_samples[key]
        assert calib["exact_match"] == stock["exact_match"], key
        assert [[str(r) for r in resp] for resp in calib["resps"]] == stock["resps"], key
        assert [str(r) for r in calib["filtered_resps"]] == stock["filtered_resps"], key
        assert calib["target"] == stock["target"], key
        assert calib["ece"]["correct"] == stock["exact_match"], key
    for name in FILTER_NAMES:
        accuracy = runs.stock["results"]["gen"][f"exact_match,{name}"]
        assert 0 < accuracy < 1, f"golds make no answer right or wrong under {name}"
        assert runs.calib["results"]["calib_gen"][f"exact_match,{name}"] == accuracy
        assert runs.calib["results"]["calib_gen"][f"acc,{name}"] == pytest.approx(accuracy)


# ---------------------------------------------------------------- 2., 3. the methods


def test_token_methods_equal_brute_force(runs, references):
    for i, reference in enumerate(references):
        text = runs.calib_samples[("whole", i)]["resps"][0][0]
        assert reference.text == text, f"document {i}: the harness generated another text"
        for name in FILTER_NAMES:
            sample = runs.calib_samples[(name, i)]
            record = sample["ece"]
            values = record_confidences(record)
            assert record["filter"] == name
            assert record["n_tokens"] == len(reference.kept_ids), (i, name)
            assert _close(values["seq"], reference.seq), (i, name)
            assert _close(values["seq_joint"], reference.seq_joint), (i, name)
            assert _close(values["seq_min"], reference.seq_min), (i, name)
            answer = sample["filtered_resps"][0]
            assert _close(values["answer"], reference.answer(answer)), (i, name, answer)
    not_found = runs.calib["results"]["calib_gen"]["answer_not_found,number"]
    assert 0 < not_found < N, "the regex should find a number in some texts only"
    cut = [len(r.kept_text) > len(r.text) for r in references]
    assert any(cut), "no text was cut inside a token"
    assert not all(cut), "every text was cut inside a token"
    assert any(r.text == "" for r in references), "no text is empty (one token kept)"


def test_ptrue_equals_brute_force(runs, model):
    for i, doc in enumerate(runs.docs):
        text = runs.calib_samples[("whole", i)]["resps"][0][0]
        prompt = prompts.PTRUE_PROMPT.format(question=question_text(doc), answer=text.strip())
        reference = ptrue(model.network, model.tokenizer, prompt)
        for name in FILTER_NAMES:  # the generated text is judged, whatever the filter
            value = record_confidences(runs.calib_samples[(name, i)]["ece"])["ptrue"]
            assert _close(value, reference), (i, name)


def test_verbalized_reply_is_the_greedy_follow_up(runs, model):
    """Without a chat template the follow-up is the context, the answer and the prompt as plain
    text; its reply is generated greedily up to a new line and read as a number (None, and
    counted, where it states none)."""
    for i, doc in enumerate(runs.docs):
        text = runs.calib_samples[("whole", i)]["resps"][0][0]
        follow_up = f"{question_text(doc)}{text}\n\n{prompts.VERBALIZED_PROMPT}"
        reply = greedy_answer(
            model.network,
            model.tokenizer,
            follow_up,
            prompts.VERBALIZED_MAX_TOKENS,
            list(prompts.VERBALIZED_STOP),
        ).text
        for name in FILTER_NAMES:
            record = runs.calib_samples[(name, i)]["ece"]
            assert record["verbalized_reply"] == reply, (i, name)
            assert record_confidences(record)["verbalized"] == prompts.parse_verbalized(reply)
    for name in FILTER_NAMES:
        unparsed = sum(
            record_confidences(runs.calib_samples[(name, i)]["ece"])["verbalized"] is None
            for i in range(N)
        )
        assert runs.calib["results"]["calib_gen"][f"verbalized_unparsed,{name}"] == unparsed


# ------------------------------------------------------------------ 4. the two routes


def test_the_fallback_route_agrees_with_the_hf_route(runs, references, model, lm, monkeypatch):
    """Forced off hf, the texts are rescored after their contexts (token_stats): every number
    equals a brute-force scoring of the re-tokenised text, and equals the hf route's (read while
    generating) on each document whose re-tokenised text is the generated tokens, which is most
    of them. Where a stop sequence cuts a token, a byte-level token re-tokenises otherwise, or
    the text is empty (hf keeps its first token, rescoring has none), the two routes score
    different tokens, and there they are not compared."""
    monkeypatch.setattr(request, "_is_hf", lambda lm: False)
    out = evaluate(lm, runs.manager, "calib_gen_seq", N)
    samples = _by_key(out["samples"]["calib_gen_seq"])
    same_tokens = 0
    for i, (doc, reference) in enumerate(zip(runs.docs, references, strict=True)):
        context = question_text(doc)
        retokenised, logprobs = continuation_tokens(
            model.network, model.tokenizer, context, reference.text
        )
        values = record_confidences(samples[("whole", i)]["ece"])
        hf_values = record_confidences(runs.calib_samples[("whole", i)]["ece"])
        assert samples[("whole", i)]["ece"]["n_tokens"] == len(logprobs), i
        for name, reference_value in _seq_values(logprobs).items():
            assert _close(values[name], reference_value), (i, name)
        if retokenised == reference.kept_ids:
            same_tokens += 1
            for name in SEQ_METHODS:
                assert _close(values[name], hf_values[name]), (i, name)
    assert same_tokens > N // 2, f"only {same_tokens} of {N} texts re-tokenise as generated"


BEAM_LIMIT = 4


def test_beam_search_falls_back_to_rescoring(runs, model, lm, caplog):
    """Beam search runs ``B x num_beams`` rows, so the tokens cannot be read while generating:
    the texts are rescored after their contexts (with a warning) and the numbers are those of
    the text re-tokenised."""
    with caplog.at_level("WARNING", logger=request.eval_logger.name):
        out = evaluate(lm, runs.manager, "calib_gen_beam", BEAM_LIMIT)
    assert f"{BEAM_LIMIT} of {BEAM_LIMIT} generations could not be matched" in caplog.text
    for i, doc in enumerate(runs.docs[:BEAM_LIMIT]):
        sample = _by_key(out["samples"]["calib_gen_beam"])[("whole", i)]
        text = sample["resps"][0][0]
        assert text.token_route == "rescored"
        _, logprobs = continuation_tokens(model.network, model.tokenizer, question_text(doc), text)
        for name, reference_value in _seq_values(logprobs).items():
            assert _close(record_confidences(sample["ece"])[name], reference_value), (i, name)


# ------------------------------------------------------------------ 5. the chat template

CHAT_LIMIT = 4


def test_chat_follow_ups_are_the_conversation(runs, tiny_chat_lm):
    """Under --apply_chat_template the verbalized question is the conversation with the answer
    as the assistant turn and the prompt as the next user turn, and the P(True) prompt is one user
    turn followed by the options without their space (rebuilt with the tokenizer's own
    apply_chat_template and compared with what the backend received)."""
    calls: dict[str, list] = {"generate_until": [], "loglikelihood": []}

    def recorder(name):
        original = getattr(tiny_chat_lm, name)

        def record(requests, *args, **kwargs):
            answers = original(requests, *args, **kwargs)
            calls[name].append(([r.args for r in requests], answers))
            return answers

        return record

    for name in calls:  # on the instance, removed after (the backend is the session's)
        setattr(tiny_chat_lm, name, recorder(name))
    try:
        out = evaluate(
            tiny_chat_lm, runs.manager, "calib_gen_chat", CHAT_LIMIT, apply_chat_template=True
        )
    finally:
        for name in calls:
            delattr(tiny_chat_lm, name)
    samples = _by_key(out["samples"]["calib_gen_chat"])
    tokenizer = tiny_chat_lm.tokenizer

    def chat(*messages: tuple[str, str]) -> str:
        conversation = [{"role": role, "content": content} for role, content in messages]
        return tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=True
        )

    (answer_args, texts), (follow_up_args, replies) = calls["generate_until"]
    [(ptrue_args, _)] = calls["loglikelihood"]
    assert len(answer_args) == len(follow_up_args) == CHAT_LIMIT
    contexts = {args[0]: text for args, text in zip(answer_args, texts, strict=True)}
    follow_ups = {args[0]: reply for args, reply in zip(follow_up_args, replies, strict=True)}
    for i, doc in enumerate(runs.docs[:CHAT_LIMIT]):
        question = ("user", question_text(doc))
        context = chat(question)
        assert context in contexts, f"document {i}: no answer request of its conversation"
        text = contexts[context]
        sample = samples[("whole", i)]
        assert sample["resps"][0][0] == text
        follow_up = chat(question, ("assistant", text), ("user", prompts.VERBALIZED_PROMPT))
        assert follow_up in follow_ups, f"document {i}: no follow-up of its conversation"
        assert [a for a in follow_up_args if a[0] == follow_up][0][1] == {
            "until": list(prompts.VERBALIZED_STOP),
            "max_gen_toks": prompts.VERBALIZED_MAX_TOKENS,
            "do_sample": False,
            "temperature": 0.0,
        }
        assert sample["ece"]["verbalized_reply"] == follow_ups[follow_up]
        judged = chat(
            ("user", prompts.PTRUE_PROMPT.format(question=question_text(doc), answer=text.strip()))
        )
        assert (judged, "True") in ptrue_args and (judged, "False") in ptrue_args, i


# ------------------------------------------------------------------ 6. --predict_only

PREDICT_LIMIT = 4


def test_predict_only_keeps_the_record_under_bypass(runs, lm):
    """The record of each answer, under ``bypass``; right as the stock task's exact_match says
    (here through the threshold form ``exact_match>=0.5``)."""
    out = evaluate(lm, runs.manager, "calib_gen_seq", PREDICT_LIMIT, predict_only=True)
    samples = _by_key(out["samples"]["calib_gen_seq"])
    assert len(samples) == PREDICT_LIMIT * len(FILTER_NAMES)
    for key, sample in samples.items():
        record, full = sample["bypass"], runs.calib_samples[key]["ece"]
        assert record["correct"] == full["correct"] == runs.stock_samples[key]["exact_match"], key
        assert record["filter"] == key[0]
        assert record_confidences(record).keys() == set(SEQ_METHODS)
        for name in SEQ_METHODS:
            assert _close(record_confidences(record)[name], record_confidences(full)[name]), (
                key,
                name,
            )


# ------------------------------------------------------------------ 7. settings errors

ERROR_LIMIT = 2


def _error_folder(path: Path, **wrapper: object) -> TaskManager:
    """``gen`` on two documents and ``calib_bad``, its wrapper with ``wrapper``'s keys."""
    write_generation_task(path, "gen", DOCS[:ERROR_LIMIT], generation_kwargs=GENERATION_KWARGS)
    write_generation_wrapper(path, "calib_bad", "gen", **wrapper)
    return _manager(path)


@pytest.mark.parametrize(
    ("wrapper", "message"),
    [
        (
            {"metadata": {"calib_correct": "accuracy"}},
            r"calib_bad: calib_correct names 'accuracy', not one of the task's metrics "
            r"\['exact_match'\]",
        ),
        (
            {"metadata": {"calib_correct": "exact_match>=high"}},
            r"calib_bad: calib_correct must be .*got 'exact_match>=high'",
        ),
        (
            {"metadata": {"calib_confidence": "seq,confidence"}},
            r"calib_bad: unknown confidence method\(s\) \['confidence'\] in calib_confidence",
        ),
        (
            {"metadata": {"calib_ptrue_prompt": "Question: {question}\nTrue or false?"}},
            r"calib_bad: calib_ptrue_prompt has the fields \['question'\]; it needs "
            r"\['answer', 'question'\]",
        ),
        ({"repeats": 2}, r"calib_bad: repeats is 2; .*\(repeats: 1\)"),
    ],
    ids=["unknown-metric", "malformed-threshold", "unknown-method", "ptrue-prompt", "repeats"],
)
def test_bad_settings_are_errors_naming_the_task(tmp_path, lm, wrapper, message):
    manager = _error_folder(tmp_path, **wrapper)
    with pytest.raises(ValueError, match=message):
        evaluate(lm, manager, "calib_bad", ERROR_LIMIT)


GRADED = '''\
def graded(references, predictions):
    """Half right, whatever the answer."""
    return 0.5
'''


def _graded_folder(path: Path, calib_correct: str | None) -> TaskManager:
    """``graded``, a stock task whose one metric is a function of the folder that gives 0.5 to
    every answer, and ``calib_graded``, its wrapper with ``calib_correct``."""
    (path / "graded_metrics.py").write_text(GRADED)
    write_generation_task(
        path,
        "graded",
        DOCS[:ERROR_LIMIT],
        generation_kwargs=GENERATION_KWARGS,
        metric_list="METRIC_LIST",
    )
    text = (path / "graded.yaml").read_text()
    metric = (
        '[{"metric": !function graded_metrics.graded, "aggregation": "mean", '
        '"higher_is_better": true}]'
    )
    (path / "graded.yaml").write_text(text.replace('"METRIC_LIST"', metric))
    metadata = {} if calib_correct is None else {"calib_correct": calib_correct}
    write_generation_wrapper(path, "calib_graded", "graded", metadata=metadata)
    return _manager(path)


def test_a_graded_metric_needs_a_threshold(tmp_path, lm):
    manager = _graded_folder(tmp_path, None)
    with pytest.raises(ValueError, match=r"calib_graded: document .*: graded is 0.5, not 0/1: "):
        evaluate(lm, manager, "calib_graded", ERROR_LIMIT)


@pytest.mark.parametrize(("threshold", "accuracy"), [("graded>=0.5", 1.0), ("graded>0.5", 0.0)])
def test_a_graded_metric_with_a_threshold(tmp_path, lm, threshold, accuracy):
    manager = _graded_folder(tmp_path, threshold)
    results = evaluate(lm, manager, "calib_graded", ERROR_LIMIT)["results"]["calib_graded"]
    for name in FILTER_NAMES:
        assert results[f"graded,{name}"] == 0.5
        assert results[f"acc,{name}"] == accuracy


# ------------------------------------------------------------------ 8. pickling


def test_responses_keep_their_numbers_through_pickle(runs):
    """Data-parallel gathering and the harness's cache pickle the responses: a Generation and
    a FilteredAnswer come back with their text, their numbers and their confidences."""
    for name in FILTER_NAMES:
        for i in range(N):
            sample = runs.calib_samples[(name, i)]
            generation, answer = sample["resps"][0][0], sample["filtered_resps"][0]
            assert isinstance(generation, request.Generation)
            assert isinstance(answer, FilteredAnswer) and answer.generation is generation
            generation_back, answer_back = pickle.loads(pickle.dumps((generation, answer)))
            assert type(generation_back) is request.Generation
            assert str(generation_back) == str(generation)
            assert vars(generation_back) == vars(generation)
            assert type(answer_back) is FilteredAnswer and str(answer_back) == str(answer)
            assert answer_back.filter_name == name
            assert vars(answer_back.generation) == vars(generation)
            assert confidences(answer_back.generation, str(answer_back), ALL_METHODS) == {
                method: record_confidences(sample["ece"])[method] for method in ALL_METHODS
            }
