"""Stand-ins for the backends that are not installed or not running here, answering from the
tiny GPT-2's logits (so that their token_stats must equal the hf backend's on the same requests):
vLLM (``FakeVLLM``; ``VLLM`` and ``install_vllm_module`` for lm_eval's class and module) and an
OpenAI-compatible completions server (``FakeCompletionsServer``, put in place of
``requests.post``). Recorded exchanges with real servers are in tests/test_completions_server.py.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lm_eval.api.model import LM, TemplateLM
from lm_eval.models.huggingface import HFLM
from lm_eval.models.openai_completions import LocalCompletionsAPI

from support.tiny_model import WINDOW

# LocalCompletionsAPI refuses to start without the harness's api extra (lm-eval[api])
needs_api_extra = pytest.mark.skipif(
    any(find_spec(m) is None for m in ("aiohttp", "tenacity", "requests")),
    reason="lm-eval[api] packages (aiohttp, tenacity, requests) are not installed",
)


def prompt_logsoftmax(hf: HFLM, prompt: list[int]) -> torch.Tensor:
    """Row i - 1 = log-probabilities at prompt position i (a server scores the whole prompt)."""
    with torch.no_grad():
        logits = hf.model(torch.tensor([prompt[:-1]])).logits[0]
    return torch.log_softmax(logits.double(), dim=-1)


@dataclass
class Logprob:
    """vllm.sequence.Logprob / vllm.logprobs.Logprob."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


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
    without echo, that token only; a generation request (neither ``echo`` nor ``logprobs``)
    gets its greedy text (``generate``).

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
        if "logprobs" not in json and "echo" not in json:
            return self.generate(json)
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

    def generate(self, json: dict[str, Any]) -> FakeResponse:
        """A generation request (no echo, no log-probabilities): per prompt, ``max_tokens``
        greedy tokens, the text cut before the first ``stop`` string, as vLLM cuts it."""
        prompts = json["prompt"]
        if isinstance(prompts, str) or isinstance(prompts[0], int):
            prompts = [prompts]
        choices = []
        for index, prompt in enumerate(prompts):
            ids = self.hf.tokenizer(prompt).input_ids if isinstance(prompt, str) else list(prompt)
            generated: list[int] = []
            for _ in range(json["max_tokens"]):
                generated.append(int(next_token_logprobs(self.hf, ids + generated)[-1].argmax()))
            text = self.hf.tokenizer.decode(generated)
            cuts = [text.find(s) for s in json.get("stop") or [] if s and s in text]
            text = text[: min(cuts)] if cuts else text
            choices.append(
                {"index": index, "text": text, "logprobs": None, "finish_reason": "length"}
            )
        return FakeResponse(
            {"object": "text_completion", "model": json["model"], "choices": choices}
        )


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


class VLLM(FakeVLLM, LM):
    """lm_eval.models.vllm_causallms.VLLM, stood in for by FakeVLLM (vllm is not installed)."""

    # LM's abstract request methods, never called here
    loglikelihood = loglikelihood_rolling = generate_until = None  # type: ignore[assignment]


def install_vllm_module(monkeypatch: pytest.MonkeyPatch) -> type[VLLM]:
    """The harness's vLLM module, ``lm_eval.models.vllm_causallms``, put in ``sys.modules`` for
    the test and imported after calib_tasks.token_stats: its class, a fresh subclass of ``VLLM``,
    has no token_stats of its own until one is needed."""
    module = types.ModuleType("lm_eval.models.vllm_causallms")
    module.VLLM = type("VLLM", (VLLM,), {})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module.VLLM  # type: ignore[attr-defined]
