"""token_stats for vLLM and OpenAI-compatible completions servers, on mocked responses, and
``check_backend`` for every backend.

vllm is not installed here, and no server runs: the response parsers are checked on hand-written
payloads of the backends' shapes, and the whole request path on fakes that answer from the tiny
GPT-2's logits (so the result must equal the hf backend's token_stats on the same requests).
Recorded exchanges with real server formats are in tests/test_completions_server.py.
"""

from __future__ import annotations

import math
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM, CacheHook, CachingLM, TemplateLM
from lm_eval.models.dummy import DummyLM
from lm_eval.models.huggingface import HFLM
from lm_eval.models.openai_completions import (
    LocalChatCompletion,
    LocalCompletionsAPI,
    OpenAICompletionsAPI,
)

from calib_tasks import token_stats as ts
from calib_tasks.token_stats import (
    REQUEST_TYPE,
    TokenStats,
    UnsupportedBackendError,
    check_backend,
    parse_completions_response,
    stats_from_completion_logprobs,
    stats_from_prompt_logprobs,
)

WINDOW = 64
# LocalCompletionsAPI refuses to start without the harness's api extra (lm-eval[api])
needs_api_extra = pytest.mark.skipif(
    any(find_spec(m) is None for m in ("aiohttp", "tenacity", "requests")),
    reason="lm-eval[api] packages (aiohttp, tenacity, requests) are not installed",
)
TEXT = (
    "Alice was born in London and works as a physician. Bob plays the piano. The quick brown fox "
    "jumps over the lazy dog. Water boils at one hundred degrees. The currency of Japan is the "
    "yen. Berlin is the capital of Germany. Madrid is located in Spain. 0 1 2 3 4 5 6 7 8 9 . "
)

REVERSED = " ".join(reversed(TEXT.split()))


@pytest.fixture(scope="module")
def hf(tiny_model_dir: Path) -> HFLM:
    return HFLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def mixed_requests() -> list[Instance]:
    """Documents of 1 to 4 windows, and (context, continuation) pairs, one left-truncated."""
    pairs = [
        ("", TEXT[:30]),
        ("", TEXT),
        ("", REVERSED * 2),
        ("The capital of France is", " Paris."),
        ("Bob plays ", "the piano"),
        (TEXT, " Alice was born in London"),
        ("The capital of France is", " Paris."),  # a duplicate
    ]
    return [Instance(REQUEST_TYPE, {}, pair, i) for i, pair in enumerate(pairs)]


def assert_same_stats(a: TokenStats, b: TokenStats) -> None:
    assert a.n == b.n
    np.testing.assert_allclose(a.true_logprob, b.true_logprob, rtol=0, atol=1e-5)
    np.testing.assert_allclose(a.top1_logprob, b.top1_logprob, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(a.top1_is_true, b.top1_is_true)


def prompt_logsoftmax(hf: HFLM, prompt: list[int]) -> torch.Tensor:
    """Row i - 1 = log-probabilities at prompt position i (a server scores the whole prompt)."""
    with torch.no_grad():
        logits = hf.model(torch.tensor([prompt[:-1]])).logits[0]
    return torch.log_softmax(logits.double(), dim=-1)


# ------------------------------------------------------------------------------------------
# vLLM: RequestOutput.prompt_logprobs


@dataclass
class Logprob:
    """vllm.sequence.Logprob / vllm.logprobs.Logprob."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


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


@dataclass
class RequestOutput:
    """The part of vllm.RequestOutput that the backend reads."""

    prompt_token_ids: list[int]
    prompt_logprobs: list[dict[int, Logprob] | None]


class FakeVLLM:
    """The attributes of lm_eval's VLLM that token_stats uses, answering from the tiny GPT-2.

    ``max_length`` 66: vLLM's rolling windows are max_length - 2 = 64 tokens and its sequences
    are truncated to max_length - 1 = 65 tokens, the same windows as the hf backend's.
    """

    MULTIMODAL = False
    backend = "causal"
    max_length = WINDOW + 2
    _encode_pair = TemplateLM._encode_pair

    def __init__(self, hf: HFLM, batch_size: int | str) -> None:
        self.hf = hf
        self.batch_size = batch_size
        self.tok_encode = hf.tok_encode
        self.prefix_token_id = hf.prefix_token_id
        self.calls: list[int] = []

    def _model_generate(self, requests: list[list[int]], generate: bool = False, **_: Any):
        assert not generate
        self.calls.append(len(requests))
        outputs = []
        for prompt in requests:
            logprobs = prompt_logsoftmax(self.hf, prompt)
            entries: list[dict[int, Logprob] | None] = [None]
            for i in range(1, len(prompt)):
                row, token = logprobs[i - 1], prompt[i]
                rank = 1 + int((row > row[token]).sum())
                entry = {token: Logprob(float(row[token]), rank)}
                top = int(row.argmax())
                entry.setdefault(top, Logprob(float(row[top]), 1))
                entries.append(entry)
            outputs.append(RequestOutput(prompt, entries))
        return outputs


@pytest.mark.parametrize("batch_size", [2, "auto"])
def test_vllm_backend_equals_hf(hf, mixed_requests, batch_size):
    fake = FakeVLLM(hf, batch_size)
    stats = ts.vllm_token_stats(fake, mixed_requests, disable_tqdm=True)
    for a, b in zip(stats, hf.token_stats(mixed_requests, disable_tqdm=True), strict=True):
        assert_same_stats(a, b)
    prompts = sum(fake.calls)
    windows = 1 + math.ceil(len(hf.tok_encode(TEXT)) / WINDOW)
    windows += math.ceil(len(hf.tok_encode(REVERSED * 2)) / WINDOW) + 3  # duplicate shared
    assert prompts == windows
    assert len(fake.calls) == (1 if batch_size == "auto" else math.ceil(prompts / batch_size))


def test_vllm_multimodal_is_rejected(hf):
    fake = FakeVLLM(hf, 1)
    fake.MULTIMODAL = True
    with pytest.raises(UnsupportedBackendError, match="multimodal"):
        ts.vllm_token_stats(fake, [Instance(REQUEST_TYPE, {}, ("", "text"), 0)])


# ------------------------------------------------------------------------------------------
# OpenAI-compatible completions: choices[i].logprobs


def completions_choice(
    index: int, tokens, token_logprobs, top_logprobs, first_offset: int = 0
) -> dict[str, Any]:
    offsets = np.cumsum([first_offset] + [len(t) for t in tokens[:-1]]).tolist()
    return {
        "index": index,
        "text": "".join(tokens),
        "logprobs": {
            "tokens": tokens,
            "token_logprobs": token_logprobs,
            "top_logprobs": top_logprobs,
            "text_offset": offsets,
        },
        "finish_reason": "length",
    }


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


def next_token_logprobs(hf: HFLM, ids: list[int]) -> torch.Tensor:
    """Row r: log-probabilities of the token after ``ids[: r + 1]``. The tiny model sees 64
    tokens: for a longer prompt the last row (the generated token's) sees its last 64."""
    with torch.no_grad():
        logits = hf.model(torch.tensor([ids[:WINDOW]])).logits[0]
        if len(ids) > WINDOW:
            logits = torch.cat([logits, hf.model(torch.tensor([ids[-WINDOW:]])).logits[0, -1:]])
    return torch.log_softmax(logits.double(), dim=-1)


class FakeCompletionsServer:
    """``requests.post`` answering like vLLM's /v1/completions, from the tiny GPT-2: with echo,
    every prompt position and then the greedy token generated after the prompt (max_tokens=1);
    without echo, that token only.

    ``shifted``: the echo of llama-cpp-python's server (abetlen/llama-cpp-python#1983): entry i
    holds the distribution of position i + 1 (evaluated at token i), the generated token is left
    out; generation is right.
    """

    def __init__(self, hf: HFLM, *, shifted: bool = False) -> None:
        self.hf = hf
        self.shifted = shifted
        self.payloads: list[dict[str, Any]] = []

    def entry(self, token: int, row: torch.Tensor | None) -> tuple[str, float | None, Any]:
        """A position's (token string, log-probability, top_logprobs): vLLM lists the token
        next to the top-1 (keys: decoded token strings)."""
        decode = self.hf.tokenizer.decode
        if row is None:
            return decode([token]), None, None
        best = int(row.argmax())
        return (
            decode([token]),
            float(row[token]),
            {decode([token]): float(row[token]), decode([best]): float(row[best])},
        )

    def __call__(self, url: str, json: dict[str, Any], **kwargs: Any) -> Any:
        self.payloads.append(json)
        assert json["max_tokens"] == 1 and json["logprobs"] == 1
        prompts = json["prompt"]
        if isinstance(prompts, str) or isinstance(prompts[0], int):
            prompts = [prompts]
        choices = []
        for index, prompt in enumerate(prompts):
            ids = self.hf.tokenizer(prompt).input_ids if isinstance(prompt, str) else prompt
            rows = next_token_logprobs(self.hf, ids)
            n, generated = len(ids), int(rows[-1].argmax())
            if not json["echo"]:
                entries = [self.entry(generated, rows[-1])]
            elif self.shifted:
                entries = [self.entry(ids[0], None)]
                entries += [self.entry(ids[i], rows[i]) for i in range(1, n)]
            else:
                entries = [self.entry(ids[0], None)]
                entries += [self.entry(ids[i], rows[i - 1]) for i in range(1, n)]
                entries.append(self.entry(generated, rows[-1]))
            first_offset = 0 if json["echo"] else len(self.hf.tokenizer.decode(ids))
            tokens, values, tops = (list(column) for column in zip(*entries, strict=True))
            choices.append(completions_choice(index, tokens, values, tops, first_offset))
        body = {"object": "text_completion", "model": json["model"], "choices": choices[::-1]}
        return FakeResponse(body)


@dataclass
class FakeResponse:
    body: dict[str, Any]
    ok: bool = True
    text: str = ""

    def raise_for_status(self) -> None:
        return None

    def json(self) -> dict[str, Any]:
        return self.body


def completions_lm(tiny_model_dir: Path, **kwargs: Any) -> LocalCompletionsAPI:
    """local-completions with the tiny model's tokenizer; max_length 66 (the backend keeps 65)
    gives 64-token rolling windows and 65-token sequences, the hf backend's windows."""
    return LocalCompletionsAPI(
        base_url="http://127.0.0.1:9/v1/completions",
        model="tiny",
        tokenizer_backend="huggingface",
        tokenizer=str(tiny_model_dir),
        max_length=WINDOW + 2,
        **kwargs,
    )


@needs_api_extra
@pytest.mark.parametrize(
    "options",
    [
        {"batch_size": 1},
        {"batch_size": 3, "num_concurrent": 2},
        {"batch_size": 1, "tokenized_requests": False},
        {"batch_size": 2, "tokenized_requests": False},
    ],
)
def test_completions_backend_equals_hf(hf, tiny_model_dir, mixed_requests, monkeypatch, options):
    server = FakeCompletionsServer(hf)
    monkeypatch.setattr("requests.post", server)
    lm = completions_lm(tiny_model_dir, **options)
    stats = lm.token_stats(mixed_requests, disable_tqdm=True)
    for a, b in zip(stats, hf.token_stats(mixed_requests, disable_tqdm=True), strict=True):
        assert_same_stats(a, b)
    # the first request, the alignment self-check's generation (one prompt), the others
    assert [payload["echo"] for payload in server.payloads].count(False) == 1
    assert server.payloads[1]["echo"] is False
    for payload in server.payloads:
        prompt = payload["prompt"]
        if options.get("tokenized_requests", True):
            assert all(isinstance(p, list) for p in prompt)
        else:
            assert isinstance(prompt, str if options["batch_size"] == 1 else list)
        size = 1 if payload["echo"] is False else options["batch_size"]
        assert len(prompt if isinstance(prompt, list) else [prompt]) <= size


@needs_api_extra
@pytest.mark.parametrize("tokenized_requests", [True, False])
def test_completions_server_with_a_shifted_echo_is_refused(
    hf, tiny_model_dir, mixed_requests, monkeypatch, tokenized_requests
):
    server = FakeCompletionsServer(hf, shifted=True)
    monkeypatch.setattr("requests.post", server)
    lm = completions_lm(
        tiny_model_dir, batch_size=2, num_concurrent=2, tokenized_requests=tokenized_requests
    )
    with pytest.raises(UnsupportedBackendError, match=r"alignment self-check.*#1983.*hf backend"):
        lm.token_stats(mixed_requests, disable_tqdm=True)
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


class VLLM(FakeVLLM, LM):
    """lm_eval.models.vllm_causallms.VLLM, stood in for by FakeVLLM (vllm is not installed)."""

    # LM's abstract request methods, never called here
    loglikelihood = loglikelihood_rolling = generate_until = None  # type: ignore[assignment]


@pytest.fixture
def vllm_module(monkeypatch: pytest.MonkeyPatch) -> type[VLLM]:
    """The harness's vLLM module, imported after calib_tasks.token_stats (so VLLM has no
    token_stats of its own until one is needed)."""
    module = types.ModuleType("lm_eval.models.vllm_causallms")
    module.VLLM = type("VLLM", (VLLM,), {})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module.VLLM  # type: ignore[attr-defined]


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
