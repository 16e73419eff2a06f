"""The native routes of ``calib_generate`` off hf: the token log-probabilities of each answer
taken from its generation itself, on local-completions (``logprobs`` in the generation payload,
``calib_tasks.generation.completions_steps``) and vllm (``SamplingParams(logprobs=1)``,
``calib_tasks.generation.vllm_steps``), and the fallback (the text scored after its context with
``token_stats``) where the backend returned none.

* local-completions against the tiny GPT-2 served over HTTP (``FakeCompletionsServer``), one
  request at a time in batches and concurrently: the texts are the stock ``generate_until``'s,
  bit for bit; every generation payload asked for ``logprobs``, no rescoring request was sent;
  seq, seq_joint, seq_min and answer equal a brute-force computation with transformers
  (``support.generation``), and equal the fallback route's (a server that returns no
  log-probabilities, with a log line) on every text whose re-tokenisation is its generated
  tokens; a server that drops the log-probabilities of one generation gets that one rescored.
* vllm: the harness's own ``VLLM`` class (its ``generate_until``, ``_model_generate``) on
  ``FakeLLM``, a stand-in for ``vllm.LLM`` that answers in vLLM's output format: the same.
* end to end through the harness: a wrapped task on local-completions with the token methods.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from lm_eval.api.instance import Instance
from support.chat_server import COMPLETIONS_PATH, LocalServer, completions_handler
from support.fakes import (
    FakeCompletionsServer,
    FakeLLM,
    harness_vllm_lm,
    install_harness_vllm,
    needs_api_extra,
)
from support.generation import (
    continuation_tokens,
    greedy_answer,
    question_text,
    record_confidences,
    reference_model,
    write_generation_task,
    write_generation_wrapper,
)
from support.harness import evaluate
from support.tiny_model import WINDOW

from calib_tasks.generation import request
from calib_tasks.generation.request import check_methods
from calib_tasks.generation.task import confidences
from calib_tasks.scoring.confidence_methods import METHODS
from calib_tasks.token_stats import UnsupportedBackendError

N = 12
WORDS = "red table seven walking home Paris green stone cloud apple iron sky".split()
DOCS = [{"question": f"What is {WORDS[i]} {i}?", "answer": str(i)} for i in range(N)]
#: Stop sequences that cut some texts inside a token and leave one empty (the tiny long-window
#: model's greedy texts, as in tests/test_generation.py).
UNTIL = ["\n", "reat", "lar", "ision"]
MAX_TOKENS = 8
KWARGS = {"until": UNTIL, "max_gen_toks": MAX_TOKENS, "do_sample": False}
TOKEN_METHODS = ["seq", "seq_joint", "seq_min", "answer"]
SEQ_METHODS = ["seq", "seq_joint", "seq_min"]
REL = 1e-5

pytestmark = needs_api_extra


@pytest.fixture(scope="module")
def hf(tiny_long_model_dir):
    """The hf backend the fake servers answer from."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(tiny_long_model_dir), device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def model(tiny_long_model_dir):
    """The same model and tokenizer, loaded by transformers directly (the references)."""
    return reference_model(tiny_long_model_dir)


@pytest.fixture(scope="module")
def references(model):
    """Per document, the brute-force greedy answer of its context."""
    return [
        greedy_answer(model.network, model.tokenizer, question_text(doc), MAX_TOKENS, UNTIL)
        for doc in DOCS
    ]


def answer_of(text: str) -> str:
    """The answer the ``answer`` method scores: the text's first number, else its last word."""
    number = re.search(r"\d+", text)
    words = text.split()
    return number.group() if number else (words[-1] if words else "")


def generate_requests() -> list[Instance]:
    return [
        Instance("generate_until", doc, (question_text(doc), copy.deepcopy(KWARGS)), i)
        for i, doc in enumerate(DOCS)
    ]


def calib_requests(methods: list[str]) -> list[Instance]:
    plan = {"methods": methods}
    return [
        Instance("calib_generate", doc, (question_text(doc), copy.deepcopy(KWARGS), plan), i)
        for i, doc in enumerate(DOCS)
    ]


def close(value: float | None, reference: float | None) -> bool:
    if reference is None:
        return value is None
    return value is not None and value == pytest.approx(reference, rel=REL, abs=1e-12)


def assert_brute_force(generations: list[Any], references: list[Any]) -> None:
    """Texts, kept tokens, their ends and every token method equal the brute-force ones."""
    for i, (generation, reference) in enumerate(zip(generations, references, strict=True)):
        assert str(generation) == reference.text, i
        assert generation.token_route == "generation", i
        assert len(generation.token_logprobs) == len(reference.kept_ids), i
        for got, want in zip(generation.token_logprobs, reference.logprobs, strict=True):
            assert got == pytest.approx(want, rel=REL, abs=1e-6), i
        assert list(generation.token_ends) == reference.ends, i
        answer = answer_of(reference.text)
        values = confidences(generation, answer, TOKEN_METHODS)
        assert close(values["seq"], reference.seq), i
        assert close(values["seq_joint"], reference.seq_joint), i
        assert close(values["seq_min"], reference.seq_min), i
        assert close(values["answer"], reference.answer(answer)), (i, answer)
    assert any(len(r.kept_text) > len(r.text) for r in references), "no text cut in a token"
    assert any(r.text == "" for r in references), "no empty text (one token kept)"


def assert_routes_agree(
    native: list[Any], rescored: list[Any], model: Any, references: list[Any]
) -> None:
    """The fallback's numbers are the re-tokenised text's, and the native route's wherever the
    re-tokenised text is the generated tokens (most texts; not where a stop sequence cut a token,
    a byte-level token re-tokenises otherwise, or the text is empty: the native route keeps its
    first token, rescoring has none)."""
    same_tokens = 0
    for i, (doc, ours, theirs, reference) in enumerate(
        zip(DOCS, native, rescored, references, strict=True)
    ):
        assert str(theirs) == str(ours), i
        assert theirs.token_route == "rescored", i
        retokenised, logprobs = continuation_tokens(
            model.network, model.tokenizer, question_text(doc), str(theirs)
        )
        assert list(theirs.token_logprobs or ()) == pytest.approx(logprobs, rel=REL, abs=1e-6), i
        if retokenised and retokenised == reference.kept_ids:
            same_tokens += 1
            want = confidences(ours, "", SEQ_METHODS)
            got = confidences(theirs, "", SEQ_METHODS)
            for name in SEQ_METHODS:
                assert close(got[name], want[name]), (i, name)
    assert same_tokens > N // 2, f"only {same_tokens} of {N} texts re-tokenise as generated"


# ------------------------------------------------------------------------------------------
# local-completions


@pytest.fixture
def serve(hf) -> Iterator[Any]:
    """``serve(**options)``: a completions server on 127.0.0.1 (``FakeCompletionsServer``
    options), closed after the test."""
    servers: list[LocalServer] = []

    def start(**options: Any) -> LocalServer:
        server = LocalServer(completions_handler(FakeCompletionsServer(hf, **options)))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def completions(server: LocalServer, tiny_long_model_dir, **kwargs: Any) -> Any:
    """local-completions on ``server`` with the tiny model's tokenizer (max_length 66: the hf
    backend's 64-token scoring windows)."""
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    options = {"tokenizer_backend": "huggingface", "tokenizer": str(tiny_long_model_dir), **kwargs}
    return LocalCompletionsAPI(
        base_url=server.url(COMPLETIONS_PATH),
        model="tiny",
        max_length=WINDOW + 2,
        max_retries=1,
        timeout=30,
        **options,
    )


@pytest.mark.parametrize(
    ("batch_size", "num_concurrent"), [(4, 1), (1, 3)], ids=["batched", "concurrent"]
)
def test_completions_numbers_come_with_the_generation(
    serve, tiny_long_model_dir, references, batch_size, num_concurrent
):
    server = serve()
    lm = completions(
        server, tiny_long_model_dir, batch_size=batch_size, num_concurrent=num_concurrent
    )
    stock = lm.generate_until(generate_requests())
    stock_payloads = server.payloads(COMPLETIONS_PATH)
    server.seen.clear()

    generations = request.calib_generate(lm, calib_requests(TOKEN_METHODS))

    assert [str(g) for g in generations] == stock  # bit for bit
    assert_brute_force(generations, references)
    payloads = server.payloads(COMPLETIONS_PATH)
    assert len(payloads) == len(stock_payloads)
    assert all(p["logprobs"] == 1 and "echo" not in p for p in payloads)  # no rescoring
    # the payloads are the stock ones, plus logprobs
    key = lambda p: repr(p["prompt"])  # noqa: E731
    assert sorted(({**p, "logprobs": None} for p in payloads), key=key) == sorted(
        ({**p, "logprobs": None} for p in stock_payloads), key=key
    )
    assert all("logprobs" not in p for p in stock_payloads)


def test_completions_fallback_agrees_and_is_logged(
    serve, tiny_long_model_dir, model, caplog, references
):
    """A server that returns no log-probabilities with its generations (though asked): every
    text is rescored after its context (the echo), which the log says; the numbers agree with
    the native route's."""
    native_lm = completions(serve(), tiny_long_model_dir, batch_size=4)
    native = request.calib_generate(native_lm, calib_requests(TOKEN_METHODS))
    server = serve(generation_logprobs=False)
    lm = completions(server, tiny_long_model_dir, batch_size=4)
    with caplog.at_level(logging.INFO, logger=request.eval_logger.name):
        rescored = request.calib_generate(lm, calib_requests(TOKEN_METHODS))
    assert (
        f"calib_generate: {N} of {N} generations could not be matched to their tokens (the "
        "server returned no log-probabilities with them"
    ) in caplog.text
    assert f"scoring {N} generated texts after their contexts (token_stats)" in caplog.text
    assert "the answer method gives them no confidence" in caplog.text
    assert any(p.get("echo") for p in server.payloads(COMPLETIONS_PATH))
    assert_routes_agree(native, rescored, model, references)
    # the fallback gives no token offsets: no answer confidence
    assert all(confidences(g, answer_of(str(g)), ["answer"]) == {"answer": None} for g in rescored)


def test_completions_fallback_is_per_generation(serve, tiny_long_model_dir, caplog, references):
    """A response whose one choice came without log-probabilities: that text alone is
    rescored."""
    server = serve()
    fake = server.handler

    def drop_first(path: str, payload: dict[str, Any]) -> Any:
        status, body = fake(path, payload)
        for choice in body["choices"]:
            if "echo" not in payload and choice["index"] == 0 and payload["prompt"] is not None:
                first = payload["prompt"][0]
                if first == drop_first.prompt:
                    choice["logprobs"] = None
        return status, body

    lm = completions(server, tiny_long_model_dir, batch_size=1)
    drop_first.prompt = lm.tok_encode(question_text(DOCS[3]))
    server.handler = drop_first
    with caplog.at_level(logging.WARNING, logger=request.eval_logger.name):
        generations = request.calib_generate(lm, calib_requests(SEQ_METHODS))
    assert f"1 of {N} generations could not be matched" in caplog.text
    routes = [g.token_route for g in generations]
    assert routes == ["generation"] * 3 + ["rescored"] + ["generation"] * (N - 4)
    assert [str(g) for g in generations] == [r.text for r in references]


def test_completions_without_tokenizer_cannot_fall_back(serve, tiny_long_model_dir):
    """Without a tokenizer the native route serves the token methods (the preflight passes);
    a server that then returns no log-probabilities is an error saying why, not a failure
    inside token_stats."""
    lm = completions(serve(generation_logprobs=False), tiny_long_model_dir, tokenizer_backend=None)
    methods = [m for m in METHODS if m.name in TOKEN_METHODS]
    check_methods(lm, methods, "calib_x")
    with pytest.raises(UnsupportedBackendError) as info:
        request.calib_generate(lm, calib_requests(SEQ_METHODS[:1]))
    message = str(info.value)
    assert "came without their tokens' log-probabilities" in message
    assert "cannot be scored after their contexts" in message
    assert "tokenizer_backend=None" in message


def test_completions_keep_a_number_of_logprobs_the_request_asks(serve, tiny_long_model_dir):
    server = serve()
    lm = completions(server, tiny_long_model_dir, batch_size=4)
    requests = calib_requests(SEQ_METHODS)
    for r in requests:
        r.args[1]["logprobs"] = 3
    generations = request.calib_generate(lm, requests)
    assert all(g.token_route == "generation" for g in generations)
    assert {p["logprobs"] for p in server.payloads(COMPLETIONS_PATH)} == {3}


# ------------------------------------------------------------------------------------------
# vllm


@pytest.fixture
def vllm(monkeypatch, hf) -> SimpleNamespace:
    """The harness's VLLM class on ``FakeLLM`` (``support.fakes.install_harness_vllm``)."""
    cls = install_harness_vllm(monkeypatch)
    llm = FakeLLM(hf)
    return SimpleNamespace(lm=harness_vllm_lm(cls, hf, "auto", llm), llm=llm, cls=cls)


def test_vllm_numbers_come_with_the_generation(vllm, references):
    stock = vllm.lm.generate_until(generate_requests())
    stock_params = [p for call in vllm.llm.calls for p in call]
    vllm.llm.calls.clear()

    generations = request.calib_generate(vllm.lm, calib_requests(TOKEN_METHODS))

    assert [str(g) for g in generations] == stock  # bit for bit
    assert_brute_force(generations, references)
    params = [p for call in vllm.llm.calls for p in call]
    assert all(p.logprobs == 1 and p.prompt_logprobs is None for p in params)  # no rescoring
    assert all(p.logprobs is None for p in stock_params)
    # the sampling parameters are the stock ones, plus logprobs
    assert [{**vars(p), "logprobs": None} for p in params] == [vars(p) for p in stock_params]


def test_vllm_fallback_agrees_and_is_logged(vllm, model, monkeypatch, caplog, references):
    native = request.calib_generate(vllm.lm, calib_requests(SEQ_METHODS))
    assert all(g.token_route == "generation" for g in native)
    vllm.llm.calls.clear()
    monkeypatch.setattr(request, "_native_route", lambda lm: None)
    with caplog.at_level(logging.INFO, logger=request.eval_logger.name):
        rescored = request.calib_generate(vllm.lm, calib_requests(SEQ_METHODS))
    assert f"scoring {N} generated texts after their contexts (token_stats)" in caplog.text
    assert any(p.prompt_logprobs == 1 for call in vllm.llm.calls for p in call)
    assert_routes_agree(native, rescored, model, references)


def test_vllm_without_logprobs_falls_back(vllm, monkeypatch, caplog):
    """Outputs without log-probabilities (a vLLM that dropped them): rescored, with a log
    line."""
    generate = vllm.llm.generate

    def without_logprobs(*args: Any, **kwargs: Any) -> Any:
        outputs = generate(*args, **kwargs)
        for output in outputs:
            for completion in output.outputs:
                completion.logprobs = None
        return outputs

    monkeypatch.setattr(vllm.llm, "generate", without_logprobs)
    with caplog.at_level(logging.WARNING, logger=request.eval_logger.name):
        generations = request.calib_generate(vllm.lm, calib_requests(SEQ_METHODS))
    assert f"{N} of {N} generations could not be matched to their tokens (vLLM returned no" in (
        caplog.text
    )
    assert all(g.token_route == "rescored" for g in generations)


def test_native_backends_serve_answer(serve, tiny_long_model_dir, vllm):
    answer = [m for m in METHODS if m.name == "answer"]
    check_methods(completions(serve(), tiny_long_model_dir), answer, "calib_x")
    check_methods(vllm.lm, answer, "calib_x")


# ------------------------------------------------------------------------------------------
# end to end


def test_a_wrapped_task_on_local_completions(serve, tiny_long_model_dir, tmp_path, references):
    """Through the harness: the records' token methods are the brute-force ones, under both
    filters, and the stock task's texts are the wrapper's."""
    from lm_eval.tasks import TaskManager

    write_generation_task(tmp_path, "gen", DOCS, generation_kwargs=KWARGS)
    write_generation_wrapper(
        tmp_path, "calib_gen", "gen", metadata={"calib_confidence": ",".join(TOKEN_METHODS)}
    )
    manager = TaskManager(include_path=str(tmp_path), include_defaults=False)
    server = serve()
    lm = completions(server, tiny_long_model_dir, batch_size=4)
    out = evaluate(lm, manager, "calib_gen", N)
    assert not any(p.get("echo") for p in server.payloads(COMPLETIONS_PATH))
    for sample in out["samples"]["calib_gen"]:
        reference = references[sample["doc_id"]]
        assert sample["resps"][0][0] == reference.text
        values = record_confidences(sample["ece"])
        assert close(values["seq"], reference.seq)
        assert close(values["seq_min"], reference.seq_min)
        answer = sample["filtered_resps"][0]
        assert close(values["answer"], reference.answer(answer)), (sample["doc_id"], answer)
