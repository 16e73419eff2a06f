"""token_stats over local-completions against recorded server exchanges, served on 127.0.0.1.

``tests/data/completions/*.json`` hold hand-written exchanges (request payload -> HTTP status and
JSON response) in the exact formats of a correct OpenAI-compatible server (vLLM's) and of
llama-cpp-python's server. A local HTTP server answers each POST whose payload equals a recorded
one and answers 404 to any other, so the tests check the payloads the package sends as well as
what it makes of the answers. The prompts are tokenised by a word-level tokenizer whose ids the
recordings use.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.fakes import needs_api_extra
from support.stats import stats_requests

from calib_tasks.token_stats import (
    UnsupportedBackendError,
    check_backend,
    parse_completions_response,
)

pytestmark = needs_api_extra

DATA = Path(__file__).parent / "data" / "completions"
# the recordings' token ids: "The capital of France is Paris." is 1..7
WORDS = ["<|endoftext|>", "The", " capital", " of", " France", " is", " Paris", "."]
WORDS += ["Bob", " plays", " the", " piano"]
PAIRS = [("The capital of France is", " Paris."), ("Bob plays", " the piano.")]

# What the correct server's recorded echoes give for PAIRS: the continuation's positions.
EXPECTED = [
    {"true": [-0.75, -1.5], "top1": [-0.75, -1.0], "hit": [True, False]},
    {"true": [-0.5, -1.25, -0.125], "top1": [-0.5, -0.875, -0.125], "hit": [True, False, True]},
]

Override = Callable[[dict[str, Any]], tuple[int, dict[str, Any]] | None]


class RecordedServer:
    """An HTTP server on 127.0.0.1 answering POSTs from recorded exchanges.

    ``seen`` lists every payload received, in arrival order; ``override(payload)``, when given
    and not None, answers instead of the recordings (and may block).
    """

    def __init__(self, recording: str, override: Override | None = None) -> None:
        self.exchanges = json.loads((DATA / recording).read_text(encoding="utf-8"))["exchanges"]
        self.override = override
        self.seen: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.seen.append(payload)
                status, body = server.answer(payload)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return None

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/v1/completions"
        threading.Thread(target=self.http.serve_forever, args=(0.05,), daemon=True).start()

    def answer(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.override is not None and (answer := self.override(payload)) is not None:
            return answer
        for exchange in self.exchanges:
            if exchange["request"] == payload:
                return exchange["status"], exchange["response"]
        return 404, {"error": {"message": "no recorded exchange for this payload"}}

    def requests(self, *numbers: int) -> list[dict[str, Any]]:
        """The recorded request payloads of the exchanges numbered ``numbers`` (0-based)."""
        return [self.exchanges[i]["request"] for i in numbers]

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[..., RecordedServer]]:
    servers: list[RecordedServer] = []

    def start(recording: str, override: Override | None = None) -> RecordedServer:
        servers.append(RecordedServer(recording, override))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture(scope="module")
def word_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tokenizer with one token per word of WORDS (leading space included) and per '.'."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token=WORDS[0]))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r" ?[^ .]+|\."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=WORDS[0],
        eos_token=WORDS[0],
        unk_token=WORDS[0],
        clean_up_tokenization_spaces=False,
    )
    path = tmp_path_factory.mktemp("word_tokenizer")
    fast.save_pretrained(path)
    return path


def completions_lm(server: RecordedServer, tokenizer: Path, **kwargs: Any) -> Any:
    """local-completions on ``server``; one attempt per request (no retry waits)."""
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    return LocalCompletionsAPI(
        base_url=server.url,
        model="smollm2-135m",
        tokenizer_backend="huggingface",
        tokenizer=str(tokenizer),
        max_retries=1,
        timeout=60,
        **kwargs,
    )


def assert_expected(stats: list[Any]) -> None:
    assert len(stats) == len(EXPECTED)
    for got, want in zip(stats, EXPECTED, strict=True):
        np.testing.assert_array_equal(got.true_logprob, np.float32(want["true"]))
        np.testing.assert_array_equal(got.top1_logprob, np.float32(want["top1"]))
        np.testing.assert_array_equal(got.top1_is_true, want["hit"])


def test_the_recordings_use_the_word_tokenizer(word_tokenizer, serve):
    lm = completions_lm(serve("correct_server.json"), word_tokenizer)
    assert lm.tok_encode("The capital of France is Paris.") == [1, 2, 3, 4, 5, 6, 7]
    assert lm.tok_encode("Bob plays the piano.") == [8, 9, 10, 11, 7]


# ------------------------------------------------------------------------------------------
# a correct server


def test_correct_server_token_id_prompts(word_tokenizer, serve):
    server = serve("correct_server.json")
    lm = completions_lm(server, word_tokenizer, batch_size=2)
    assert_expected(lm.token_stats(stats_requests(PAIRS), disable_tqdm=True))
    # both prompts echoed in one request (max_tokens=1), then the self-check's one generation
    assert server.seen == server.requests(0, 1)


def test_correct_server_text_prompts_one_per_request(word_tokenizer, serve):
    server = serve("correct_server.json")
    lm = completions_lm(server, word_tokenizer, tokenized_requests=False, num_concurrent=2)
    assert_expected(lm.token_stats(stats_requests(PAIRS), disable_tqdm=True))
    assert server.seen == server.requests(2, 3, 4)


def test_a_prompt_too_short_to_probe_is_used_unchecked_with_a_warning(
    word_tokenizer, serve, caplog
):
    server = serve("correct_server.json")
    lm = completions_lm(server, word_tokenizer, tokenized_requests=False)
    with caplog.at_level(logging.WARNING, logger="calib_tasks.token_stats"):
        (stats,) = lm.token_stats(stats_requests([("The", " capital")]), disable_tqdm=True)
    np.testing.assert_array_equal(stats.true_logprob, np.float32([-1.25]))
    assert "the alignment self-check found no position to probe" in caplog.text
    assert server.seen == server.requests(5)


def test_check_backend_accepts_the_server_and_sends_no_request(word_tokenizer, serve):
    server = serve("correct_server.json")
    check_backend(completions_lm(server, word_tokenizer))
    assert server.seen == []


# ------------------------------------------------------------------------------------------
# llama-cpp-python's server


def test_token_id_prompts_rejected_by_the_server_name_the_model_argument(word_tokenizer, serve):
    server = serve("llama_cpp_python.json")
    lm = completions_lm(server, word_tokenizer)
    with pytest.raises(UnsupportedBackendError) as info:
        lm.token_stats(stats_requests(PAIRS), disable_tqdm=True)
    message = str(info.value)
    assert "HTTP 500" in message and "Input should be a valid string" in message
    assert "needs the model arguments tokenized_requests=False" in message
    assert "batch_size" not in message  # already one prompt per request
    assert server.seen == server.requests(0)  # the first request only


def test_several_prompts_per_request_rejected_by_the_server_name_batch_size(word_tokenizer, serve):
    server = serve("llama_cpp_python.json")
    lm = completions_lm(server, word_tokenizer, tokenized_requests=False, batch_size=2)
    with pytest.raises(UnsupportedBackendError, match=r"HTTP 500.*model arguments batch_size=1$"):
        lm.token_stats(stats_requests(PAIRS), disable_tqdm=True)
    assert server.seen == server.requests(1)


def test_shifted_echo_fails_the_alignment_self_check(word_tokenizer, serve):
    server = serve("llama_cpp_python.json")
    lm = completions_lm(server, word_tokenizer, tokenized_requests=False)
    with pytest.raises(UnsupportedBackendError) as info:
        lm.token_stats(stats_requests(PAIRS), disable_tqdm=True)
    message = str(info.value)
    for part in (
        "LocalCompletionsAPI",
        "alignment self-check",
        "position 3 the top-1 token ' is' at log-probability -0.5000",
        "first 3 tokens gives ' the' at log-probability -1.5000",
        "abetlen/llama-cpp-python#1983 and #1276",
        "hf backend",
        "vllm",
    ):
        assert part in message
    # echo (max_tokens=1, not 0: that would generate to the end of sequence), then the check;
    # the second prompt is never sent
    assert server.seen == server.requests(2, 3)


def test_generated_tokens_after_the_echo_are_told_from_the_prompt():
    """llama-cpp-python's answer to max_tokens=0: the error names the generated tokens."""
    exchanges = json.loads((DATA / "llama_cpp_python.json").read_text())["exchanges"]
    response = exchanges[4]["response"]
    prompt = exchanges[4]["request"]["prompt"]
    with pytest.raises(ValueError) as info:
        parse_completions_response(response, [7], [5], prompt_chars=[len(prompt)])
    assert str(info.value) == (
        "the completions response holds 12 tokens for a prompt of 7 tokens: 7 start inside the "
        "prompt's 31 characters, the 5 after them are generated, more than the max_tokens=1 "
        "asked for: the server does not honour max_tokens"
    )


# ------------------------------------------------------------------------------------------
# failing fast


def test_a_failed_request_fails_the_call_without_waiting_for_requests_in_flight(
    word_tokenizer, serve
):
    """Four prompts, two requests at a time after the first one and the self-check: while
    "Bob plays the piano." hangs, "The capital is Paris." fails; the call raises at once and
    "Bob plays." is never sent."""
    import requests

    in_flight, release = threading.Event(), threading.Event()

    def override(payload: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        if payload["prompt"] == "Bob plays the piano.":
            in_flight.set()
            release.wait(60)
        elif payload["prompt"] == "The capital is Paris.":
            in_flight.wait(10)
            return 500, {"error": {"message": "out of memory"}}
        return None

    server = serve("correct_server.json", override)
    lm = completions_lm(server, word_tokenizer, tokenized_requests=False, num_concurrent=2)
    pairs = PAIRS + [("The capital is", " Paris."), ("Bob", " plays.")]
    started = time.monotonic()
    try:
        with pytest.raises(requests.HTTPError, match="500"):
            lm.token_stats(stats_requests(pairs), disable_tqdm=True)
        elapsed = time.monotonic() - started
    finally:
        release.set()
    assert elapsed < 20  # the hanging request would hold the call for its 60 s timeout
    prompts = [payload["prompt"] for payload in server.seen]
    assert prompts[:2] == ["The capital of France is Paris.", "The capital"]
    assert sorted(prompts[2:]) == ["Bob plays the piano.", "The capital is Paris."]
