"""token_stats for vLLM and OpenAI-compatible completions servers, on mocked responses, and
``check_backend`` for every backend.

vllm is not installed here, and no server runs: the response parsers are checked on hand-written
payloads of the backends' shapes, and the request path on the fakes of tests/support/fakes.py,
which answer from the tiny GPT-2's logits (that their statistics equal the hf backend's is a row
of tests/test_token_stats_conformance.py per backend setting). Recorded exchanges with real
server formats are in tests/test_completions_server.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lm_eval.api.instance import Instance
from lm_eval.api.model import CacheHook, CachingLM
from lm_eval.models.dummy import DummyLM
from lm_eval.models.huggingface import HFLM
from lm_eval.models.openai_completions import (
    LocalChatCompletion,
    LocalCompletionsAPI,
    OpenAICompletionsAPI,
)
from support.fakes import (
    FakeCompletionsServer,
    FakeVLLM,
    Logprob,
    completions_choice,
    completions_lm,
    install_vllm_module,
    needs_api_extra,
)
from support.stats import PAIRS, assert_same_stats, stats_requests

from calib_tasks import token_stats as ts
from calib_tasks.token_stats import (
    REQUEST_TYPE,
    UnsupportedBackendError,
    check_backend,
    parse_completions_response,
    stats_from_completion_logprobs,
    stats_from_prompt_logprobs,
)

REQUESTS = stats_requests(PAIRS)


@pytest.fixture(scope="module")
def hf(tiny_model_dir: Path) -> HFLM:
    return HFLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=4)


# ------------------------------------------------------------------------------------------
# vLLM: RequestOutput.prompt_logprobs


def test_vllm_prompt_logprobs_parse_exactly():
    tokens = [50, 17, 42, 8, 9]
    prompt_logprobs = [
        None,  # nothing conditions the first prompt token
        {17: Logprob(-0.25, 1, " is")},  # true token is the top-1: one entry
        {42: Logprob(-2.5, 3, " the"), 11: Logprob(-0.75, 1, " a")},  # true token ranked 3rd
        {8: Logprob(-1.125, 1, "."), 3: Logprob(-1.125, 1, ",")},  # a tie: both rank 1
        {9: Logprob(-0.5, 1, " A"), 4: Logprob(-3.0, 2, " B")},
    ]
    stats = stats_from_prompt_logprobs(prompt_logprobs, tokens, start=1)
    np.testing.assert_array_equal(stats.true_logprob, np.float32([-0.25, -2.5, -1.125, -0.5]))
    np.testing.assert_array_equal(stats.top1_logprob, np.float32([-0.25, -0.75, -1.125, -0.5]))
    np.testing.assert_array_equal(stats.top1_is_true, [True, False, True, True])
    tail = stats_from_prompt_logprobs(prompt_logprobs, tokens, start=3)
    np.testing.assert_array_equal(tail.true_logprob, np.float32([-1.125, -0.5]))
    # vLLM < 0.4: bare floats, no ranks
    legacy = [None if d is None else {t: v.logprob for t, v in d.items()} for d in prompt_logprobs]
    old = stats_from_prompt_logprobs(legacy, tokens, start=1)
    np.testing.assert_array_equal(old.top1_is_true, [True, False, True, True])
    np.testing.assert_array_equal(old.top1_logprob, stats.top1_logprob)


def test_vllm_prompt_logprobs_errors():
    tokens = [50, 17, 42]
    first = {17: Logprob(-1.0, 1)}
    with pytest.raises(ValueError, match="no prompt logprob for token 42 at position 2"):
        stats_from_prompt_logprobs([None, first, {7: Logprob(-1.0, 1)}], tokens, 1)
    with pytest.raises(ValueError, match="not the top-1 token"):
        stats_from_prompt_logprobs([None, first, {42: Logprob(-3.0, 5)}], tokens, 1)
    with pytest.raises(ValueError, match="for 2 positions, the prompt has 3"):
        stats_from_prompt_logprobs([None, {17: Logprob(-1.0, 1)}], tokens, 1)


def test_vllm_multimodal_is_rejected(hf):
    fake = FakeVLLM(hf, 1)
    fake.MULTIMODAL = True
    with pytest.raises(UnsupportedBackendError, match="multimodal"):
        ts.vllm_token_stats(fake, [Instance(REQUEST_TYPE, {}, ("", "text"), 0)])


# ------------------------------------------------------------------------------------------
# OpenAI-compatible completions: choices[i].logprobs


def test_completions_response_parses_exactly():
    response = {
        "id": "cmpl-0",
        "object": "text_completion",
        "created": 1700000000,
        "model": "tiny",
        "choices": [  # out of order: matched by index
            completions_choice(  # the generated token left out, as llama-cpp-python does
                1,
                ["Water", " boils", " at"],
                [None, -1.5, -0.5],
                [None, {" is": -0.25, " boils": -1.5}, {" at": -0.5}],
            ),
            completions_choice(  # the echo, then the generated token (max_tokens=1)
                0,
                ["The", " capital", " of", " France", " is", " Paris"],
                [None, -3.0, -0.125, -2.25, -0.625, -0.5],
                [
                    None,
                    {" cat": -1.0, " capital": -3.0},
                    {" of": -0.125},
                    {" Spain": -1.5, " France": -2.25},
                    {" is": -0.625},
                    {" Paris": -0.5},
                ],
            ),
        ],
        "usage": {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10},
    }
    tokens = parse_completions_response(response, [5, 3], [2, 1])
    text = parse_completions_response(response, [5, 3], [2, 1], prompt_chars=[24, 14])
    for first, second in (tokens, text):
        np.testing.assert_array_equal(first.true_logprob, np.float32([-0.125, -2.25, -0.625]))
        np.testing.assert_array_equal(first.top1_logprob, np.float32([-0.125, -1.5, -0.625]))
        np.testing.assert_array_equal(first.top1_is_true, [True, False, True])
        np.testing.assert_array_equal(second.true_logprob, np.float32([-1.5, -0.5]))
        np.testing.assert_array_equal(second.top1_logprob, np.float32([-0.25, -0.5]))
        np.testing.assert_array_equal(second.top1_is_true, [False, True])


def test_completions_response_errors():
    choice = completions_choice(0, ["A", " b", " c"], [None, -1.0, -2.0], [None, {" b": -1.0}, {}])
    logprobs = choice["logprobs"]  # text_offset 0, 1, 3
    with pytest.raises(ValueError, match="no top_logprobs at prompt position 2"):
        stats_from_completion_logprobs(logprobs, 3, 1)
    assert stats_from_completion_logprobs(logprobs, 2, 1).n == 1  # a generated 3rd token ignored
    assert stats_from_completion_logprobs(logprobs, 2, 1, prompt_chars=3).n == 1
    # more than the one generated token: told from a different tokenisation by the text offsets
    too_many = "the 2 after (the prompt|them) are generated, more than the max_tokens=1 asked for"
    with pytest.raises(ValueError, match=f"holds 3 tokens for a prompt of 1 tokens: {too_many}"):
        stats_from_completion_logprobs(logprobs, 1, 1)
    with pytest.raises(ValueError, match=f"1 start inside the prompt's 1 characters, {too_many}"):
        stats_from_completion_logprobs(logprobs, 1, 1, prompt_chars=1)
    with pytest.raises(ValueError, match="of which 2 start inside the prompt's 3 .*tokenised the"):
        stats_from_completion_logprobs(logprobs, 1, 1, prompt_chars=3)
    with pytest.raises(ValueError, match="of which 3 start inside .*tokenised the prompt differ"):
        stats_from_completion_logprobs(logprobs, 4, 1, prompt_chars=6)
    without_offsets = {k: v for k, v in logprobs.items() if k != "text_offset"}
    with pytest.raises(ValueError, match="no text_offset: the server tokenised .* or it generated"):
        stats_from_completion_logprobs(without_offsets, 1, 1, prompt_chars=1)
    with pytest.raises(ValueError, match="did not echo the prompt"):
        stats_from_completion_logprobs(logprobs, 4, 1)
    with pytest.raises(ValueError, match="echo=True and logprobs>=1"):
        stats_from_completion_logprobs({"tokens": ["A"], "token_logprobs": [None]}, 1, 1)
    with pytest.raises(ValueError, match="1 choices for 2 prompts"):
        parse_completions_response({"choices": [choice]}, [3, 3], [1, 1])


@needs_api_extra
@pytest.mark.parametrize("tokenized_requests", [True, False])
def test_completions_server_with_a_shifted_echo_is_refused(
    hf, tiny_model_dir, monkeypatch, tokenized_requests
):
    server = FakeCompletionsServer(hf, shifted=True)
    monkeypatch.setattr("requests.post", server)
    lm = completions_lm(
        tiny_model_dir, batch_size=2, num_concurrent=2, tokenized_requests=tokenized_requests
    )
    with pytest.raises(UnsupportedBackendError, match=r"alignment self-check.*#1983.*hf backend"):
        lm.token_stats(REQUESTS, disable_tqdm=True)
    assert len(server.payloads) == 2  # the first request and the check: nothing more was sent


@needs_api_extra
def test_completions_server_that_retokenises_differently_is_caught(hf, tiny_model_dir, monkeypatch):
    server = FakeCompletionsServer(hf)

    def with_extra_bos(url: str, json: dict[str, Any], **kwargs: Any) -> Any:
        json = {**json, "prompt": hf.tokenizer.bos_token + json["prompt"]}
        return server(url, json)

    monkeypatch.setattr("requests.post", with_extra_bos)
    lm = completions_lm(tiny_model_dir, batch_size=1, tokenized_requests=False)
    with pytest.raises(ValueError, match="tokenised the prompt differently"):
        lm.token_stats([Instance(REQUEST_TYPE, {}, ("Bob plays", " the piano"), 0)])


@needs_api_extra
def test_completions_configurations_without_per_position_top1_are_rejected(tiny_model_dir):
    request = [Instance(REQUEST_TYPE, {}, ("Bob plays", " the piano"), 0)]
    no_tokenizer = LocalCompletionsAPI(
        base_url="http://127.0.0.1:9/v1/completions", model="x", tokenizer_backend=None
    )
    with pytest.raises(UnsupportedBackendError, match="no tokenizer.*Supported backends: hf"):
        no_tokenizer.token_stats(request)
    chat = LocalChatCompletion(base_url="http://127.0.0.1:9/v1/chat/completions", model="x")
    with pytest.raises(UnsupportedBackendError, match="LocalChatCompletion.*_create_payload"):
        chat.token_stats(request)


# ------------------------------------------------------------------------------------------
# check_backend: the refusals of token_stats, before any request


@pytest.fixture
def vllm_module(monkeypatch: pytest.MonkeyPatch) -> type:
    """lm_eval's vLLM module and class, stood in for (vllm is not installed)."""
    return install_vllm_module(monkeypatch)


def caching(lm: Any, tmp_path: Path) -> CachingLM:
    cached = CachingLM(lm, str(tmp_path / "cache.db"))
    lm.set_cache_hook(CacheHook(None))
    return cached


def with_attribute(lm: Any, monkeypatch: pytest.MonkeyPatch, name: str, value: Any) -> Any:
    monkeypatch.setattr(lm, name, value, raising=False)
    return lm


REFUSED: dict[str, Callable[..., Any]] = {
    "dummy": lambda **_: DummyLM(),
    "cached dummy": lambda tmp_path, **_: caching(DummyLM(), tmp_path),
    "seq2seq hf": lambda hf, monkeypatch, **_: with_attribute(
        hf, monkeypatch, "backend", "seq2seq"
    ),
    "multimodal hf": lambda hf, monkeypatch, **_: with_attribute(
        hf, monkeypatch, "MULTIMODAL", True
    ),
    "multimodal vllm": lambda hf, vllm_module, monkeypatch, **_: with_attribute(
        vllm_module(hf, 1), monkeypatch, "MULTIMODAL", True
    ),
    "completions without tokenizer": lambda **_: LocalCompletionsAPI(
        base_url="http://127.0.0.1:9/v1/completions", model="x", tokenizer_backend=None
    ),
    "chat completions": lambda **_: LocalChatCompletion(
        base_url="http://127.0.0.1:9/v1/chat/completions", model="x"
    ),
    "openai without prompt logprobs": lambda **_: OpenAICompletionsAPI(
        base_url="http://127.0.0.1:9/v1/completions",
        model="gpt-3.5-turbo-instruct",
        tokenizer_backend=None,
    ),
}
REFUSAL = {
    "dummy": r"DummyLM cannot answer 'token_stats'.*\)\. Supported backends: hf",
    "cached dummy": r"DummyLM cannot answer 'token_stats'.*\)\. Supported backends: hf",
    "seq2seq hf": r"HFLM cannot .*: only causal .*'seq2seq'",
    "multimodal hf": r"HFLM cannot .*: multimodal hf models",
    "multimodal vllm": r"VLLM cannot .*: multimodal vLLM models",
    "completions without tokenizer": r"LocalCompletionsAPI cannot .*: it has no tokenizer",
    "chat completions": r"LocalChatCompletion cannot .*: it overrides _create_payload",
    "openai without prompt logprobs": r"OpenAICompletionsAPI cannot .*babbage-002, davinci-002",
}


@needs_api_extra
@pytest.mark.parametrize("backend", REFUSED)
def test_check_backend_refuses_what_token_stats_refuses_with_the_same_error(
    backend, hf, vllm_module, tmp_path, monkeypatch
):
    def no_request(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("check_backend sent a request")

    monkeypatch.setattr("requests.post", no_request)
    lm = REFUSED[backend](
        hf=hf, vllm_module=vllm_module, tmp_path=tmp_path, monkeypatch=monkeypatch
    )
    with pytest.raises(UnsupportedBackendError, match=REFUSAL[backend]) as checked:
        check_backend(lm)
    with pytest.raises(UnsupportedBackendError) as called:
        lm.token_stats([Instance(REQUEST_TYPE, {}, ("Bob plays", " the piano"), 0)])
    assert str(checked.value) == str(called.value)


@needs_api_extra
def test_check_backend_accepts_the_backends_token_stats_serves(
    hf, vllm_module, tiny_model_dir, tmp_path, monkeypatch
):
    def no_request(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("check_backend sent a request")

    monkeypatch.setattr("requests.post", no_request)
    request = [Instance(REQUEST_TYPE, {}, ("Bob plays", " the piano"), 0)]
    vllm = vllm_module(hf, 1)
    # imported after calib_tasks.token_stats: LM's default installs the vLLM method and runs it
    assert_same_stats(vllm.token_stats(request)[0], hf.token_stats(request)[0])
    for lm in (hf, caching(hf, tmp_path), vllm, completions_lm(tiny_model_dir)):
        check_backend(lm)
