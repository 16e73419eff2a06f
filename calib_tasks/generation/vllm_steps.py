"""The log-probability of every generated token on the vllm backend
(``lm_eval.models.vllm_causallms.VLLM`` and the subclasses that keep its ``generate_until`` and
``_model_generate``; not the multimodal one), read from the outputs of the harness's own
``VLLM.generate_until``, so that the text is the harness's, bit for bit.

``recording(lm)`` wraps, on the one instance and for the duration of a ``with`` block, its
``_model_generate``. A generation (``generate=True``) runs with each ``SamplingParams`` cloned
with ``logprobs=1`` where the request asked for none (a number it asked for is kept; nothing
else changes, and asking for log-probabilities changes no sampled token). Of each output, the
harness's ``outputs[0]``, the sampled tokens (``CompletionOutput.token_ids``) and each one's
log-probability (``CompletionOutput.logprobs[i][token_ids[i]]``: vLLM lists the sampled token
beside the top ``logprobs`` ones, as a ``Logprob`` or, before vLLM 0.4, a float) are kept under
the prompt's token ids. vLLM's log-probabilities (V1, its default ``logprobs_mode``,
``raw_logprobs``) are the model's own distribution, before temperature, penalties and
top-k/top-p, as the hf route's are (older vLLM reports processed ones). vllm itself is never
imported here.

``Recorder.scores(context, text)`` then gives the kept tokens of the generation whose prompt is
the context's tokens (``lm.tok_encode(context)``, as ``generate_until`` encodes it, or a
truncation of them that keeps a prefix and a suffix, as ``maybe_truncate`` does) and whose
decoded tokens begin with ``text`` (the harness cuts vLLM's text at its stop sequences again):
the shortest token prefix whose decoded text (the backend's tokenizer, with the request's
``skip_special_tokens`` and, as vLLM's detokenizer, no clean-up of tokenization spaces) covers
``text``, or the first token when ``text`` is empty; with each
token's log-probability and where it ends in the text. None when no recorded generation matches
(vLLM returned no log-probabilities, or the harness changed the text otherwise, e.g. stripped
thinking tokens): ``request`` then scores that text after its context instead, and logs it.
"""

from __future__ import annotations

import contextlib
import copy
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from calib_tasks.generation.completions_steps import instance_attributes
from calib_tasks.generation.hf_steps import TokenScores

_VLLM = "lm_eval.models.vllm_causallms.VLLM"
#: The methods whose behaviour the route relies on, the vllm backend's own.
_OWN = ("generate_until", "_model_generate")


def _base(lm: object) -> type | None:
    return next((c for c in type(lm).__mro__ if f"{c.__module__}.{c.__qualname__}" == _VLLM), None)


def serves(lm: object) -> bool:
    """Whether ``lm`` is the vllm backend (not multimodal) with its own ``generate_until`` and
    ``_model_generate``, so that this route reads its generations."""
    base = _base(lm)
    if base is None or getattr(lm, "MULTIMODAL", False):
        return False
    return all(getattr(type(lm), name) is getattr(base, name) for name in _OWN)


def _logprob_value(entry: Any) -> float:
    # vLLM >= 0.4 gives Logprob(logprob, rank, decoded_token); older versions a bare float
    return float(getattr(entry, "logprob", entry))


def with_logprobs(params: Any) -> Any:
    """``params`` (a ``SamplingParams``), or a clone of it asking for ``logprobs=1`` where it
    asks for none."""
    if params is None or getattr(params, "logprobs", None) is not None:
        return params
    clone = params.clone() if hasattr(params, "clone") else copy.copy(params)
    clone.logprobs = 1
    return clone


@dataclass(frozen=True)
class _Generated:
    tokens: list[int]
    logprobs: list[float]
    skip_special_tokens: bool


def _generated(output: Any, params: Any) -> _Generated | None:
    """The sampled tokens of a ``RequestOutput``'s first output and their log-probabilities,
    or None when vLLM returned none."""
    outputs = getattr(output, "outputs", None)
    if not outputs:
        return None
    completion = outputs[0]
    tokens, entries = list(getattr(completion, "token_ids", None) or ()), completion.logprobs
    if not tokens or entries is None or len(entries) != len(tokens):
        return None
    values = []
    for token, entry in zip(tokens, entries, strict=True):
        if not entry or token not in entry:
            return None
        values.append(_logprob_value(entry[token]))
    skip = bool(getattr(params, "skip_special_tokens", True))
    return _Generated(tokens, values, skip)


def _truncation_of(prompt: tuple[int, ...], ids: tuple[int, ...]) -> bool:
    """Whether ``prompt`` is ``ids`` or keeps a prefix and a suffix of them (left, right or
    middle truncation)."""
    if len(prompt) > len(ids) or not prompt:
        return prompt == ids
    head = next(
        (i for i, (a, b) in enumerate(zip(prompt, ids, strict=False)) if a != b), len(prompt)
    )
    tail = next(
        (
            i
            for i, (a, b) in enumerate(zip(reversed(prompt), reversed(ids), strict=False))
            if a != b
        ),
        len(prompt),
    )
    return head + tail >= len(prompt)


class Recorder:
    """The generations of one ``recording`` block, by prompt."""

    def __init__(self, lm: Any) -> None:
        self.lm = lm
        self._model_generate = lm._model_generate  # the original, bound
        self._generations: dict[tuple[int, ...], list[_Generated | None]] = defaultdict(list)
        #: The ``SamplingParams`` of every generation sent, after ``logprobs`` was added.
        self.sampling_params: list[Any] = []

    def model_generate(
        self,
        requests: list[list[int]],
        generate: bool = False,
        sampling_params: Any = None,
    ) -> Any:
        if not generate or sampling_params is None:
            return self._model_generate(
                requests=requests, generate=generate, sampling_params=sampling_params
            )
        params = (
            sampling_params
            if isinstance(sampling_params, list)
            else [sampling_params] * len(requests)
        )
        asked = [with_logprobs(p) for p in params]
        self.sampling_params += asked
        outputs = self._model_generate(requests=requests, generate=True, sampling_params=asked)
        for prompt, p, output in zip(requests, asked, outputs, strict=True):
            self._generations[tuple(prompt)].append(_generated(output, p))
        return outputs

    def scores(self, context: str, text: str) -> TokenScores | None:
        """The kept tokens of the recorded generation of ``text`` after ``context`` (module
        docstring), or None."""
        ids = tuple(self.lm.tok_encode(context))
        candidates = self._generations.get(ids)
        if candidates is None:
            candidates = [
                g
                for prompt, generations in self._generations.items()
                if _truncation_of(prompt, ids)
                for g in generations
            ]
        for generated in candidates:
            if generated is None:
                continue
            scores = self._kept(generated, text)
            if scores is not None:
                return scores
        return None

    def _kept(self, generated: _Generated, text: str) -> TokenScores | None:
        ends: list[int] = []
        for k in range(1, len(generated.tokens) + 1):
            ends.append(max(len(self._decode(generated, k)), ends[-1] if ends else 0))
            if ends[-1] >= len(text) + 1:
                break
        if not self._decode(generated, len(ends)).startswith(text):
            return None
        kept = next((k + 1 for k, end in enumerate(ends) if end >= len(text)), None)
        if kept is None:
            return None
        return TokenScores(
            tuple(generated.logprobs[:kept]), tuple(min(e, len(text)) for e in ends[:kept])
        )

    def _decode(self, generated: _Generated, k: int) -> str:
        # vLLM's detokenizer does not clean up tokenization spaces
        return self.lm.tokenizer.decode(
            generated.tokens[:k],
            skip_special_tokens=generated.skip_special_tokens,
            clean_up_tokenization_spaces=False,
        )


@contextlib.contextmanager
def recording(lm: Any) -> Iterator[Recorder]:
    """Record the token log-probabilities of the generations ``lm`` (a vllm backend that
    ``serves``) makes inside the block (module docstring)."""
    recorder = Recorder(lm)
    with instance_attributes(lm, {"_model_generate": recorder.model_generate}):
        yield recorder
