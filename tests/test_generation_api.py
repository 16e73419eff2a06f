"""Generative calib tasks on the harness's API backends, served on 127.0.0.1, and the refusals of
the confidence methods a backend cannot serve.

* ``local-chat-completions`` against ``FakeChatServer`` (tests/support/chat_server.py): the
  ``verbalized`` method end to end through ``simple_evaluate`` with ``apply_chat_template``; the
  server sees the question turn, then the same conversation with the answer as the assistant turn
  and the verbalized prompt as the next user turn.
* ``local-completions`` against the tiny GPT-2 (``FakeCompletionsServer``, served over HTTP)
  when the server returns no log-probabilities with its generations: the ``seq`` methods by
  rescoring the generated text after its context (``token_stats``), equal to the hf backend's
  scores of the same text (the native route, the numbers read from the generation, is tested in
  tests/test_generation_native.py).
* Every method a backend cannot serve (chat API, completions API, the harness's ``dummy``) is
  refused by the preflight before any request, naming task, method and backend and offering
  ``verbalized``.
* ``prompts.parse_verbalized`` on many replies.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lm_eval.api.instance import Instance
from lm_eval.models.dummy import DummyLM
from lm_eval.models.huggingface import HFLM
from support.chat_server import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    FakeChatServer,
    LocalServer,
    completions_handler,
)
from support.fakes import FakeCompletionsServer, needs_api_extra
from support.generation import record_confidences
from support.harness import evaluate, local_data
from support.tiny_model import WINDOW

from calib_tasks.generation import prompts, request
from calib_tasks.generation.request import check_methods
from calib_tasks.scoring.confidence_methods import method_named
from calib_tasks.token_stats import REQUEST_TYPE as TOKEN_STATS
from calib_tasks.token_stats import UnsupportedBackendError

pytestmark = needs_api_extra

MODEL = "fake"
ANSWER = "4"
QUESTIONS = [f"What is {i} plus {i}?" for i in (1, 2, 3, 4)]
DOCS = [{"q": q, "a": str(2 * i)} for i, q in zip((1, 2, 3, 4), QUESTIONS, strict=True)]
PROMPT = "Q: {q}\nA:"  # the task's doc_to_text
# The recorded verbalized replies, one per question: unparseable, 0-1, 0-100, a percentage.
REPLIES = ["I am not sure", "0.85", "85", "85%"]
TURNS = {PROMPT.format(q=q): reply for q, reply in zip(QUESTIONS, REPLIES, strict=True)}
TOKEN_METHODS = ("seq", "seq_joint", "seq_min")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stock generate_until task ``gen`` (exact_match on the sum) and ``gen_prefixed`` (the
    same with the gen_prefix "Answer:")."""
    folder = tmp_path_factory.mktemp("generation_api")
    stock = {
        **local_data(folder, "gen", DOCS),
        "output_type": "generate_until",
        "doc_to_text": "Q: {{q}}\nA:",
        "doc_to_target": "{{a}}",
        "generation_kwargs": {"until": ["\n"], "max_gen_toks": 8},
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1},
    }
    (folder / "gen.yaml").write_text(json.dumps({"task": "gen", **stock}))
    prefixed = {"task": "gen_prefixed", **stock, "gen_prefix": "Answer:"}
    (folder / "gen_prefixed.yaml").write_text(json.dumps(prefixed))
    return folder


def calib_task(folder: Path, methods: str, wraps: str = "gen") -> tuple[Any, str]:
    """A TaskManager knowing ``calib_<wraps>_<methods>``, the calib wrapper of ``wraps`` with
    ``calib_confidence: methods``, and that name."""
    from lm_eval.tasks import TaskManager

    name = f"calib_{wraps}_{methods.replace(',', '_')}"
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\n"
        "class: !function calib_tasks.generation.CalibGenerationTask\n"
        f"wraps: {wraps}\n"
        f"metadata:\n  calib_confidence: {methods}\n"
    )
    return TaskManager(include_path=str(folder), include_defaults=False), name


def records(out: dict[str, Any], task: str) -> list[dict[str, Any]]:
    """The generation records of the task's samples, in document order."""
    samples = sorted(out["samples"][task], key=lambda s: s["doc_id"])
    return [s["ece"] for s in samples]


# ------------------------------------------------------------------------------------------
# local-chat-completions: verbalized


@pytest.fixture
def chat_server() -> Iterator[FakeChatServer]:
    server = FakeChatServer(
        model=MODEL, answer=ANSWER, verbalized_prompt=prompts.VERBALIZED_PROMPT, replies=TURNS
    )
    yield server
    server.close()


def chat_lm(server: LocalServer) -> Any:
    from lm_eval.models.openai_completions import LocalChatCompletion

    return LocalChatCompletion(
        base_url=server.url(CHAT_PATH),
        model=MODEL,
        tokenizer_backend=None,
        max_retries=1,
        timeout=30,
    )


def verbalized_turn() -> dict[str, str]:
    return {"role": "user", "content": prompts.VERBALIZED_PROMPT}


def test_verbalized_confidence_on_a_chat_api(folder, chat_server):
    manager, task = calib_task(folder, "verbalized")
    out = evaluate(chat_lm(chat_server), manager, task, len(DOCS), apply_chat_template=True)

    got = records(out, task)
    assert [r["verbalized_reply"] for r in got] == REPLIES
    assert [record_confidences(r) for r in got] == [
        {"verbalized": None},
        {"verbalized": 0.85},
        {"verbalized": 0.85},
        {"verbalized": 0.85},
    ]
    assert [r["correct"] for r in got] == [0, 1, 0, 0]  # "4" is the answer of 2 plus 2 only
    assert all(r["n_tokens"] == 0 for r in got)  # no token log-probabilities were asked for
    results = out["results"][task]
    assert results["verbalized_unparsed,none"] == 1
    assert results["exact_match,none"] == results["acc,none"] == 0.25
    # the three parsed confidences fall in one bin: confidence 0.85, accuracy 1/3
    assert results["ece_verbalized,none"] == pytest.approx(0.85 - 1 / 3)

    # every question turn first (one generate_until call), then every verbalized turn
    questions = [[{"role": "user", "content": PROMPT.format(q=q)}] for q in QUESTIONS]
    follow_ups = [
        [*turn, {"role": "assistant", "content": ANSWER}, verbalized_turn()] for turn in questions
    ]
    conversations = chat_server.conversations
    assert sorted(map(json.dumps, conversations[:4])) == sorted(map(json.dumps, questions))
    assert sorted(map(json.dumps, conversations[4:])) == sorted(map(json.dumps, follow_ups))
    payloads = chat_server.payloads(CHAT_PATH)
    for payload in payloads[:4]:  # the task's own generation_kwargs
        assert (payload["max_tokens"], payload["stop"], payload["temperature"]) == (8, ["\n"], 0)
    for payload in payloads[4:]:  # the verbalized reply: greedy, one line
        assert payload["max_tokens"] == prompts.VERBALIZED_MAX_TOKENS
        assert (payload["stop"], payload["temperature"]) == (list(prompts.VERBALIZED_STOP), 0.0)
    assert all("logprobs" not in p and "echo" not in p for p in payloads)


def test_verbalized_turn_continues_the_gen_prefix_on_a_chat_api(folder, chat_server):
    """A task's gen_prefix is the start of the assistant turn the chat API continues; the
    verbalized conversation holds that turn whole: prefix, then the answer."""
    manager, task = calib_task(folder, "verbalized", wraps="gen_prefixed")
    out = evaluate(chat_lm(chat_server), manager, task, 2, apply_chat_template=True)

    assert [r["verbalized_reply"] for r in records(out, task)] == REPLIES[:2]
    for i, q in enumerate(QUESTIONS[:2]):
        user = {"role": "user", "content": PROMPT.format(q=q)}
        question_turn = [user, {"role": "assistant", "content": "Answer:"}]
        follow_up = [user, {"role": "assistant", "content": "Answer:" + ANSWER}, verbalized_turn()]
        assert question_turn in chat_server.conversations, i
        assert follow_up in chat_server.conversations, i
    assert len(chat_server.conversations) == 4


# ------------------------------------------------------------------------------------------
# refusals before any request


def assert_refusal(message: str, task: str, methods: list[str], backend: str, offer: str) -> None:
    for part in (f"task {task!r}", backend, f"calib_confidence: {offer}", "'verbalized' runs"):
        assert part in message, (part, message)
    for method in methods:
        assert repr(method) in message, (method, message)


CHAT_BACKEND = "local-chat-completions (lm_eval.models.openai_completions.LocalChatCompletion)"


@pytest.mark.parametrize("method", [*TOKEN_METHODS, "answer", "ptrue"])
def test_a_chat_api_refuses_every_method_but_verbalized(folder, chat_server, method):
    manager, task = calib_task(folder, method)
    with pytest.raises(UnsupportedBackendError) as info:
        evaluate(chat_lm(chat_server), manager, task, len(DOCS), apply_chat_template=True)
    message = str(info.value)
    assert_refusal(message, task, [method], CHAT_BACKEND, "verbalized")
    assert "This backend serves verbalized;" in message
    assert chat_server.seen == []


def test_a_chat_api_names_every_refused_method_of_the_task(folder, chat_server):
    manager, task = calib_task(folder, "seq,ptrue,verbalized")
    with pytest.raises(UnsupportedBackendError) as info:
        evaluate(chat_lm(chat_server), manager, task, len(DOCS), apply_chat_template=True)
    message = str(info.value)
    assert_refusal(message, task, ["seq", "ptrue"], CHAT_BACKEND, "verbalized")
    assert "methods 'seq', 'ptrue' cannot run" in message
    assert "ptrue: needs the log-likelihoods of a second prompt" in message
    assert "seq: needs the generated tokens' log-probabilities" in message
    assert chat_server.seen == []


@pytest.fixture(scope="module")
def hf(tiny_model_dir: Path) -> HFLM:
    return HFLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=4)


@pytest.fixture
def completions_server(hf) -> Iterator[LocalServer]:
    server = LocalServer(completions_handler(FakeCompletionsServer(hf)))
    yield server
    server.close()


def completions_api(server: LocalServer, tiny_model_dir: Path, **kwargs: Any) -> Any:
    """local-completions (or ``cls=``, a subclass) on ``server`` with the tiny model's tokenizer
    and window (max_length 66: the hf backend's 64-token windows)."""
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    cls = kwargs.pop("cls", LocalCompletionsAPI)
    options = {"tokenizer_backend": "huggingface", "tokenizer": str(tiny_model_dir), **kwargs}
    return cls(
        base_url=server.url(COMPLETIONS_PATH),
        model="tiny",
        max_length=WINDOW + 2,
        max_retries=1,
        timeout=30,
        **options,
    )


COMPLETIONS_BACKEND = "local-completions (lm_eval.models.openai_completions.LocalCompletionsAPI)"


def test_a_completions_api_that_parses_its_own_way_refuses_answer(
    folder, completions_server, tiny_model_dir
):
    """A completions API with a ``parse_generations`` of its own has no native route (its text
    may not be the server's): its generated texts are rescored (seq), and ``answer``, which needs
    each token's place in the text, is refused before any request."""
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    class Stripped(LocalCompletionsAPI):
        @staticmethod
        def parse_generations(outputs: Any, **kwargs: Any) -> list[str]:
            return [t.strip() for t in LocalCompletionsAPI.parse_generations(outputs, **kwargs)]

    manager, task = calib_task(folder, "seq,answer")
    lm = completions_api(completions_server, tiny_model_dir, cls=Stripped)
    with pytest.raises(UnsupportedBackendError) as info:
        evaluate(lm, manager, task, len(DOCS))
    message = str(info.value)
    backend = f"{Stripped.__module__}.{Stripped.__qualname__}"
    assert_refusal(message, task, ["answer"], backend, "seq,verbalized")
    assert "only a backend that returns its tokens with its generations" in message
    assert "This backend serves seq, seq_joint, seq_min, ptrue, verbalized;" in message
    assert completions_server.seen == []


def test_a_completions_api_without_tokenizer_refuses_ptrue(
    folder, completions_server, tiny_model_dir
):
    """Without a tokenizer the backend scores no prompt (ptrue), which would fail only after
    every answer was generated; its generations still bring their tokens' log-probabilities
    (seq, answer)."""
    manager, task = calib_task(folder, "seq,ptrue")
    lm = completions_api(completions_server, tiny_model_dir, tokenizer_backend=None)
    with pytest.raises(UnsupportedBackendError) as info:
        evaluate(lm, manager, task, len(DOCS))
    message = str(info.value)
    assert_refusal(message, task, ["ptrue"], COMPLETIONS_BACKEND, "seq,verbalized")
    assert "'seq'" not in message.split(". This backend")[0]
    assert "scores only with a tokenizer (tokenizer_backend=None)" in message
    assert "This backend serves seq, seq_joint, seq_min, answer, verbalized;" in message
    assert completions_server.seen == []


@pytest.fixture
def server_without_logprobs(hf) -> Iterator[LocalServer]:
    """A completions server that ignores ``logprobs`` in generation requests."""
    server = LocalServer(completions_handler(FakeCompletionsServer(hf, generation_logprobs=False)))
    yield server
    server.close()


def test_seq_on_a_completions_api_rescores_the_generated_text(
    folder, server_without_logprobs, tiny_model_dir, hf, caplog
):
    """A server that returns no log-probabilities with its generations, though asked: the
    generated texts are scored after their contexts (token_stats, the echo), as the log says;
    the confidences equal the hf backend's token_stats of the same (context, text)."""
    completions_server = server_without_logprobs
    manager, task = calib_task(folder, "seq,seq_joint,seq_min,verbalized")
    lm = completions_api(completions_server, tiny_model_dir)
    with caplog.at_level(logging.INFO, logger="calib_tasks.generation.request"):
        out = evaluate(lm, manager, task, 2)
    assert (
        "calib_generate: 2 of 2 generations could not be matched to their tokens (the server "
        "returned no log-probabilities with them"
    ) in caplog.text
    assert (
        "calib_generate: LocalCompletionsAPI returns no token log-probabilities with its "
        "generations; scoring 2 generated texts after their contexts (token_stats)"
    ) in caplog.text

    samples = sorted(out["samples"][task], key=lambda s: s["doc_id"])
    pairs = [(s["arguments"][0][0], s["resps"][0][0]) for s in samples]
    assert all(text for _, text in pairs), pairs  # every text has tokens to score
    stats = hf.token_stats([Instance(TOKEN_STATS, {}, pair, 0) for pair in pairs])
    for sample, stat in zip(samples, stats, strict=True):
        record, logprobs = sample["ece"], np.asarray(stat.true_logprob, dtype=float)
        assert record["n_tokens"] == len(logprobs)
        want = {
            "seq": math.exp(logprobs.mean()),
            "seq_joint": math.exp(logprobs.sum()),
            "seq_min": math.exp(logprobs.min()),
        }
        for method, value in want.items():
            assert record_confidences(record)[method] == pytest.approx(value, rel=1e-4), method

    # generation, then the echo requests of token_stats, then the verbalized turns as plain text
    payloads = completions_server.payloads(COMPLETIONS_PATH)
    echoes = [p for p in payloads if p.get("echo")]
    generations = [p for p in payloads if "echo" not in p]
    assert echoes and all(p["max_tokens"] == 1 and p["logprobs"] == 1 for p in echoes)
    decode = hf.tokenizer.decode
    assert len(generations) == 2 * len(pairs)
    assert all(p["logprobs"] == 1 for p in generations[: len(pairs)])  # asked, not given
    follow_ups = sorted(decode(p["prompt"][0]) for p in generations[len(pairs) :])
    plain = prompts.VERBALIZED_SEPARATOR + prompts.VERBALIZED_PROMPT
    assert follow_ups == sorted(context + text + plain for context, text in pairs)


@pytest.mark.parametrize("method", [*TOKEN_METHODS, "answer"])
def test_the_dummy_backend_refuses_the_token_methods(folder, method, monkeypatch):
    lm = DummyLM()
    sent: list[str] = []
    for request_type in ("calib_generate", "generate_until", "loglikelihood", TOKEN_STATS):
        monkeypatch.setattr(lm, request_type, lambda *a, t=request_type, **k: sent.append(t))
    manager, task = calib_task(folder, method)
    with pytest.raises(UnsupportedBackendError) as info:
        evaluate(lm, manager, task, len(DOCS))
    assert_refusal(
        str(info.value), task, [method], "dummy (lm_eval.models.dummy.DummyLM)", "verbalized"
    )
    assert "This backend serves ptrue, verbalized;" in str(info.value)
    assert sent == []


def test_the_dummy_backend_serves_ptrue_and_verbalized(folder):
    manager, task = calib_task(folder, "ptrue,verbalized")
    out = evaluate(DummyLM(), manager, task, len(DOCS))
    got = records(out, task)
    assert [r["verbalized_reply"] for r in got] == ["lol"] * len(DOCS)
    assert all(record_confidences(r)["verbalized"] is None for r in got)
    assert all(0 < record_confidences(r)["ptrue"] < 1 for r in got)
    assert out["results"][task]["verbalized_unparsed,none"] == len(DOCS)


def test_openai_completions_serves_ptrue_only_for_its_scoring_models(tiny_model_dir):
    """OpenAI's completions API scores prompts for babbage-002 and davinci-002 only (the harness's
    loglikelihood asserts it): ptrue on another model is refused before any request."""
    from lm_eval.models.openai_completions import OpenAICompletionsAPI

    def lm(model: str) -> Any:
        return OpenAICompletionsAPI(
            model=model, tokenizer_backend="huggingface", tokenizer=str(tiny_model_dir)
        )

    ptrue = [method_named("ptrue")]
    check_methods(lm("davinci-002"), ptrue, "calib_x")
    with pytest.raises(UnsupportedBackendError) as info:
        check_methods(lm("gpt-3.5-turbo-instruct"), ptrue, "calib_x")
    message = str(info.value)
    assert "openai-completions (lm_eval.models.openai_completions.OpenAICompletionsAPI)" in message
    assert "only for babbage-002, davinci-002, not 'gpt-3.5-turbo-instruct'" in message


def test_ptrue_under_a_chat_template_needs_the_prompt_text():
    """A chat template that gives a chat API's messages (JsonChatStr) has no prompt text to
    score: an error saying so, not a failure inside the backend's loglikelihood."""
    from lm_eval.models.api_models import JsonChatStr

    class ChatMessages:
        def apply_chat_template(self, chat: list[dict[str, str]], **_: Any) -> JsonChatStr:
            return JsonChatStr(json.dumps(chat))

    with pytest.raises(TypeError, match="ChatMessages's chat template gives JsonChatStr"):
        prompts.ptrue_request(prompts.PTRUE_PROMPT, "Q?", " 4", True, ChatMessages())


def test_verbalized_requests_do_not_share_their_stop_sequences(folder):
    """A backend that extends a request's ``until`` in place (adding its end-of-text) changes
    neither the other requests' nor the next run's."""

    class AppendsEos(DummyLM):
        def generate_until(self, requests, disable_tqdm: bool = False):
            for r in requests:
                r.args[1]["until"].append("<eos>")
            return [" 85"] * len(requests)

    manager, task = calib_task(folder, "verbalized")
    for _ in range(2):
        out = evaluate(AppendsEos(), manager, task, 2)
        assert [record_confidences(r)["verbalized"] for r in records(out, task)] == [0.85, 0.85]
    assert request._VERBALIZED_KWARGS["until"] == list(prompts.VERBALIZED_STOP)


# ------------------------------------------------------------------------------------------
# parse_verbalized


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        # 0-100
        ("85", 0.85),
        (" 85", 0.85),
        ("0", 0.0),
        ("100", 1.0),
        ("1", 0.01),
        ("72.5", 0.725),
        ("99.9", 0.999),
        # 0-1
        ("0.85", 0.85),
        (".85", 0.85),
        ("1.0", 1.0),
        ("0.0", 0.0),
        ("0.999", 0.999),
        # percentages
        ("85%", 0.85),
        ("85 %", 0.85),
        ("0.5%", 0.005),
        ("100%", 1.0),
        ("85 percent", 0.85),
        # fractions
        ("8/10", 0.8),
        ("85/100", 0.85),
        ("4 out of 5", 0.8),
        ("0/10", 0.0),
        # text around numbers
        ("Confidence: 90", 0.9),
        ("I am 70% sure.", 0.7),
        ("I'd say 85.", 0.85),
        ("about 0.6 or so", 0.6),
        ("90-95%", 0.9),
        ("Confidence: 85/100 (high)", 0.85),
        ("GPT4 says 70", 0.7),
        ("80\n90", 0.8),
        # none
        ("", None),
        ("I am not sure", None),
        ("high", None),
        ("%", None),
        ("N/A", None),
        # beyond the scale
        ("101", None),
        ("150%", None),
        ("100.5", None),
        ("12/10", None),
        ("5/0", None),
        # negative
        ("-5", None),
        ("-0.5", None),
        ("\u221230", None),
        ("Confidence: -20%", None),
        ("-0", 0.0),
    ],
)
def test_parse_verbalized(reply, expected):
    got = prompts.parse_verbalized(reply)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, abs=1e-12)
