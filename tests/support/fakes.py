"""Stand-ins for the backends that are not installed or not running here, answering from the
tiny GPT-2's logits (so that their token_stats must equal the hf backend's on the same requests):
vLLM (``FakeVLLM``; ``VLLM`` and ``install_vllm_module`` for lm_eval's class and module), an
OpenAI-compatible completions server (``FakeCompletionsServer``, put in place of
``requests.post`` or served over HTTP by ``support.chat_server``), and ``vllm.LLM`` itself
(``FakeLLM``, in vLLM's output format) behind the harness's own ``VLLM`` class, its module run
with stand-ins for the vllm package (``install_harness_vllm``, ``harness_vllm_lm``). Recorded
exchanges with real servers are in tests/test_completions_server.py.
"""

from __future__ import annotations

import copy
import sys
import types
from dataclasses import dataclass, field
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
class CompletionOutput:
    """vllm.CompletionOutput: one generated sequence. ``logprobs`` (with
    ``SamplingParams(logprobs=k)``, else None): per generated token, token id -> ``Logprob`` of
    the sampled token and the top ``k``."""

    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    """The part of vllm.RequestOutput that the backend reads."""

    prompt_token_ids: list[int]
    prompt_logprobs: list[dict[int, Logprob] | None] | None
    outputs: list[CompletionOutput] = field(default_factory=list)


def prompt_logprob_entries(hf: HFLM, prompt: list[int]) -> list[dict[int, Logprob] | None]:
    """vLLM's ``prompt_logprobs`` with ``SamplingParams(prompt_logprobs=1)``: None, then per
    position the true token and the top-1 token with their ranks."""
    logprobs = prompt_logsoftmax(hf, prompt)
    entries: list[dict[int, Logprob] | None] = [None]
    for i in range(1, len(prompt)):
        row, token = logprobs[i - 1], prompt[i]
        rank = 1 + int((row > row[token]).sum())
        entry = {token: Logprob(float(row[token]), rank)}
        top = int(row.argmax())
        entry.setdefault(top, Logprob(float(row[top]), 1))
        entries.append(entry)
    return entries


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
        return [
            RequestOutput(prompt, prompt_logprob_entries(self.hf, prompt)) for prompt in requests
        ]


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
    without echo, that token only; a generation request (no ``echo``, as the harness's
    ``generate_until`` sends it) gets its greedy text (``generate``), and with ``logprobs`` its
    tokens' log-probabilities.

    ``shifted``: the echo of llama-cpp-python's server (abetlen/llama-cpp-python#1983): entry i
    holds the distribution of position i + 1 (evaluated at token i), the generated token is left
    out; generation is right. ``generation_logprobs=False``: a server that ignores ``logprobs``
    in a generation request (``"logprobs": null``).
    """

    def __init__(
        self, hf: HFLM, *, shifted: bool = False, generation_logprobs: bool = True
    ) -> None:
        self.hf = hf
        self.shifted = shifted
        self.generation_logprobs = generation_logprobs
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
        if "echo" not in json:
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
        """A generation request (no echo): per prompt, greedy tokens until one completes a
        ``stop`` string or ``max_tokens`` are generated, the text cut before the first stop
        string, as vLLM cuts it. With ``logprobs`` (and ``generation_logprobs``), every
        generated token, the one that completed a stop string included, in vLLM's format: its
        decoded string, its log-probability, the top-1 token beside it, and offsets that
        start at the prompt text's length and add up the token strings' lengths."""
        prompts = json["prompt"]
        if isinstance(prompts, str) or isinstance(prompts[0], int):
            prompts = [prompts]
        stops = [s for s in json.get("stop") or [] if s]
        decode = self.hf.tokenizer.decode
        choices = []
        for index, prompt in enumerate(prompts):
            ids = self.hf.tokenizer(prompt).input_ids if isinstance(prompt, str) else list(prompt)
            generated: list[int] = []
            entries = []
            text, reason = "", "length"
            for _ in range(json["max_tokens"]):
                row = next_token_logprobs(self.hf, ids + generated)[-1]
                generated.append(int(row.argmax()))
                entries.append(self.entry(generated[-1], row))
                text = decode(generated)
                cuts = [text.find(s) for s in stops if s in text]
                if cuts:
                    text, reason = text[: min(cuts)], "stop"
                    break
            logprobs = None
            if json.get("logprobs") is not None and self.generation_logprobs:
                tokens, values, tops = (list(column) for column in zip(*entries, strict=True))
                first_offset = len(prompt if isinstance(prompt, str) else decode(ids))
                logprobs = completions_choice(index, tokens, values, tops, first_offset)["logprobs"]
            choices.append(
                {"index": index, "text": text, "logprobs": logprobs, "finish_reason": reason}
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


# ------------------------------------------------------------------------------------------
# vllm.LLM behind the harness's own VLLM class


class SamplingParams:
    """vllm.SamplingParams: the fields the harness and calib_tasks set, with vLLM's defaults
    (others are kept as given)."""

    def __init__(
        self,
        *,
        n: int = 1,
        temperature: float = 1.0,
        max_tokens: int | None = 16,
        stop: list[str] | str | None = None,
        logprobs: int | None = None,
        prompt_logprobs: int | None = None,
        detokenize: bool = True,
        skip_special_tokens: bool = True,
        spaces_between_special_tokens: bool = True,
        ignore_eos: bool = False,
        seed: int | None = None,
        **others: Any,
    ) -> None:
        self.n = n
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.stop = [stop] if isinstance(stop, str) else list(stop or [])
        self.logprobs = logprobs
        self.prompt_logprobs = prompt_logprobs
        self.detokenize = detokenize
        self.skip_special_tokens = skip_special_tokens
        self.spaces_between_special_tokens = spaces_between_special_tokens
        self.ignore_eos = ignore_eos
        self.seed = seed
        self.others = others

    def clone(self) -> SamplingParams:
        return copy.deepcopy(self)


def TokensPrompt(**fields: Any) -> dict[str, Any]:  # noqa: N802 (vllm's TypedDict)
    return dict(fields)


class FakeLLM:
    """vllm.LLM from the tiny GPT-2: ``generate`` answers each ``TokensPrompt`` greedily (the
    harness's generation kwargs are greedy) as vLLM does. Generation stops at the end-of-text
    token (kept in ``token_ids`` and ``logprobs``, not in the text) or at the token that
    completes a ``stop`` string (the text cut before it, the token kept); with
    ``SamplingParams(logprobs=k)`` each generated token's entry holds the sampled token and the
    top ``k`` (``Logprob`` with rank and decoded token); with ``prompt_logprobs=1``, vLLM's
    prompt entries (``prompt_logprob_entries``). The text is decoded with the request's
    ``skip_special_tokens`` and no clean-up of tokenization spaces (vLLM's detokenizer).
    ``calls``: the ``SamplingParams`` of every call."""

    def __init__(self, hf: HFLM) -> None:
        self.hf = hf
        self.calls: list[list[SamplingParams]] = []

    def generate(
        self, prompts: list[dict[str, Any]], sampling_params: Any = None, **_: Any
    ) -> list[RequestOutput]:
        params = sampling_params
        if not isinstance(params, list):
            params = [params or SamplingParams()] * len(prompts)
        self.calls.append(list(params))
        return [
            self._one(list(p["prompt_token_ids"]), q) for p, q in zip(prompts, params, strict=True)
        ]

    def _one(self, ids: list[int], params: SamplingParams) -> RequestOutput:
        assert params.temperature == 0, "the fake generates greedily only"
        tokenizer = self.hf.tokenizer
        eos = tokenizer.eos_token_id
        generated: list[int] = []
        entries: list[dict[int, Logprob]] = []
        text, reason, stop_reason = "", "length", None
        for _ in range(params.max_tokens or 0):
            row = next_token_logprobs(self.hf, ids + generated)[-1]
            token = int(row.argmax())
            generated.append(token)
            if params.logprobs is not None:
                top = torch.topk(row, max(params.logprobs, 1)).indices.tolist()
                entry = {
                    t: Logprob(float(row[t]), 1 + int((row > row[t]).sum()), tokenizer.decode([t]))
                    for t in [token, *top[: params.logprobs]]
                }
                entries.append(entry)
            if token == eos and not params.ignore_eos:
                reason = "stop"
                break
            if params.detokenize:
                text = tokenizer.decode(
                    generated,
                    skip_special_tokens=params.skip_special_tokens,
                    clean_up_tokenization_spaces=False,
                )
            cuts = [(text.find(s), s) for s in params.stop if s and s in text]
            if cuts:
                cut, stop_reason = min(cuts)
                text, reason = text[:cut], "stop"
                break
        output = CompletionOutput(
            0,
            text,
            generated,
            None,
            entries if params.logprobs is not None else None,
            reason,
            stop_reason,
        )
        prompt_entries = (
            prompt_logprob_entries(self.hf, ids) if params.prompt_logprobs is not None else None
        )
        return RequestOutput(ids, prompt_entries, [output])


HARNESS_VLLM = "lm_eval.models.vllm_causallms"


def install_harness_vllm(monkeypatch: pytest.MonkeyPatch) -> type:
    """The harness's own ``lm_eval/models/vllm_causallms.py``, executed for the test with
    stand-ins for the vllm package (``LLM``: ``FakeLLM``, ``SamplingParams``, ``TokensPrompt``,
    ``LoRARequest``, ``get_tokenizer``; version 0.8.0) and put in ``sys.modules`` without being
    registered: its ``VLLM`` class, whose ``generate_until`` and ``_model_generate`` are the
    harness's."""
    import importlib.metadata
    import importlib.util
    from importlib.machinery import ModuleSpec

    import lm_eval.api.registry
    import lm_eval.models

    stubs: dict[str, dict[str, Any]] = {
        "vllm": {"LLM": FakeLLM, "SamplingParams": SamplingParams, "TokensPrompt": TokensPrompt},
        "vllm.lora": {},
        "vllm.lora.request": {"LoRARequest": object},
        "vllm.tokenizers": {"get_tokenizer": None},
    }
    for name, attributes in stubs.items():
        module = types.ModuleType(name)
        module.__spec__ = ModuleSpec(name, None)
        for key, value in attributes.items():
            setattr(module, key, value)
        monkeypatch.setitem(sys.modules, name, module)
    version = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda name: "0.8.0" if name == "vllm" else version(name)
    )
    monkeypatch.setattr(lm_eval.api.registry, "register_model", lambda *names: lambda cls: cls)
    path = Path(lm_eval.models.__file__).parent / "vllm_causallms.py"
    spec = importlib.util.spec_from_file_location(HARNESS_VLLM, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, HARNESS_VLLM, module)
    spec.loader.exec_module(module)
    return module.VLLM


def harness_vllm_lm(cls: type, hf: HFLM, batch_size: int | str, llm: FakeLLM) -> Any:
    """An instance of the harness's ``VLLM`` (``install_harness_vllm``) on ``llm`` and the tiny
    model's tokenizer, set as its ``__init__`` sets it (which would start vLLM): one replica,
    no LoRA, no thinking, left truncation, ``max_length`` 66 (token_stats then has the hf
    backend's windows)."""
    lm = cls.__new__(cls)
    LM.__init__(lm)
    lm.model = llm
    lm.tokenizer = hf.tokenizer
    lm.batch_size = batch_size
    lm._max_length = WINDOW + 2
    lm._max_gen_toks = 256
    lm.truncation_side = "left"
    lm.think_end_token = None
    lm.data_parallel_size = 1
    lm.tensor_parallel_size = 1
    lm.add_bos_token = False
    lm.custom_prefix_token_id = None
    lm.lora_request = None
    lm.enable_thinking = False
    lm.chat_template_args = {}
    lm.hf_chat_template = None
    return lm
