"""The log-probability of every generated token on an OpenAI-compatible completions backend
(``local-completions``, ``openai-completions``: ``LocalCompletionsAPI`` and the subclasses that
keep its payload and its parsing of generations; not the chat APIs), taken from the response of
the harness's own ``TemplateAPI.generate_until``, so that the text is the harness's, bit for bit.

``recording(lm)`` wraps, on the one instance and for the duration of a ``with`` block:

* ``_create_payload``: a generation payload (``generate=True``) also asks for ``logprobs: 1``
  (a number of at least 1 that the request's kwargs set already is kept). Nothing else changes:
  prompt, model, ``max_tokens``, ``temperature``, ``stop``, ``seed`` and every other kwarg are
  the harness's, and asking for log-probabilities changes no sampled token;
* ``parse_generations``: it parses the texts as the harness's does, after keeping each choice
  (its ``text`` and ``logprobs``: ``tokens``, ``token_logprobs``, ``text_offset``) under the
  context it was generated for: one of the ``contexts`` the harness passes it (requests sent one
  at a time), or of the cache keys of the ``amodel_call`` that runs it (``num_concurrent > 1``);
* ``amodel_call``: to make those cache keys known to the ``parse_generations`` it runs (a
  context variable, so concurrent requests do not see each other's).

``Recorder.scores(context, text)`` then gives the kept tokens of the recorded choice of
``context`` whose text is ``text``: the shortest prefix of its tokens whose strings, joined,
cover ``text`` (a server cuts its text before the first stop sequence, but returns the token
that completed it), or the first token when ``text`` is empty; with each one's log-probability
and where it ends in the text (its ``text_offset`` relative to the first token's, plus its
length; the offsets must be those of the joined token strings). None when the server returned no
``logprobs`` with that choice, or tokens that do not spell its text (a token that holds part of a
character: OpenAI's ``bytes:`` tokens, a replacement character; a server that lists its
vocabulary's raw token strings): ``request`` then scores that text after its context instead,
and logs it. The numbers are the server's: vLLM's (V1, its default ``logprobs_mode``,
``raw_logprobs``) are the model's own distribution, before temperature, penalties and
top-k/top-p, as the hf route's are; older vLLM and other servers may report processed ones.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from calib_tasks.generation.hf_steps import TokenScores

_COMPLETIONS = "lm_eval.models.openai_completions.LocalCompletionsAPI"
_CHAT = "lm_eval.models.openai_completions.LocalChatCompletion"
#: The methods whose behaviour the route relies on, the completions API's own.
_OWN = ("_create_payload", "parse_generations")
#: The contexts of the batch that the running ``amodel_call`` sent (concurrent requests).
_CONTEXTS: contextvars.ContextVar[Sequence[Any] | None] = contextvars.ContextVar(
    "calib_generate_completions_contexts", default=None
)


def _base(lm: object, path: str) -> type | None:
    """The class of ``lm``'s MRO whose dotted path is ``path``, or None."""
    return next((c for c in type(lm).__mro__ if f"{c.__module__}.{c.__qualname__}" == path), None)


def serves(lm: object) -> bool:
    """Whether ``lm`` is a completions (not chat) API that keeps the completions API's payload
    and parsing of generations, so that this route reads its generations."""
    base = _base(lm, _COMPLETIONS)
    if base is None or _base(lm, _CHAT) is not None:
        return False
    return all(getattr(type(lm), name) is getattr(base, name) for name in _OWN)


def _wants_logprobs(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


class Recorder:
    """The choices of one ``recording`` block, by context."""

    def __init__(self, lm: Any) -> None:
        self.lm = lm
        # the originals, bound (parse_generations is a static method of the completions API)
        self._create_payload = lm._create_payload
        self._parse_generations = lm.parse_generations
        self._amodel_call = lm.amodel_call
        self._choices: dict[Any, list[Mapping[str, Any]]] = defaultdict(list)
        #: The generation payloads sent (``generate=True``), after ``logprobs`` was added.
        self.payloads: list[dict[str, Any]] = []

    def create_payload(self, *args: Any, **kwargs: Any) -> Any:
        payload = self._create_payload(*args, **kwargs)
        generate = kwargs["generate"] if "generate" in kwargs else len(args) > 1 and args[1]
        if generate and isinstance(payload, dict):
            if not _wants_logprobs(payload.get("logprobs")):
                payload["logprobs"] = 1
            self.payloads.append(payload)
        return payload

    def parse_generations(self, *args: Any, **kwargs: Any) -> Any:
        texts = self._parse_generations(*args, **kwargs)
        outputs = kwargs["outputs"] if "outputs" in kwargs else args[0] if args else None
        contexts = kwargs.get("contexts")
        self._record(outputs, _CONTEXTS.get() if contexts is None else contexts)
        return texts

    async def amodel_call(self, *args: Any, cache_keys: Any = None, **kwargs: Any) -> Any:
        contexts = [key[0] for key in cache_keys] if cache_keys else None
        token = _CONTEXTS.set(contexts)
        try:
            return await self._amodel_call(*args, cache_keys=cache_keys, **kwargs)
        finally:
            _CONTEXTS.reset(token)

    def _record(self, outputs: Any, contexts: Sequence[Any] | None) -> None:
        """Keep each choice of ``outputs`` (a response, or a list of them) under its context:
        choice ``index`` of the response's batch, after the choices of the responses before."""
        if contexts is None or outputs is None:
            return
        first = 0
        for out in outputs if isinstance(outputs, list) else [outputs]:
            choices = out.get("choices") if isinstance(out, Mapping) else None
            if not isinstance(choices, list):
                continue
            for choice in choices:
                index = choice.get("index") if isinstance(choice, Mapping) else None
                if isinstance(index, int) and 0 <= first + index < len(contexts):
                    self._choices[contexts[first + index]].append(choice)
            first += len(choices)

    def scores(self, context: str, text: str) -> TokenScores | None:
        """The kept tokens of the recorded choice of ``text`` after ``context`` (module
        docstring), or None."""
        for choice in self._choices.get(context, ()):
            if choice.get("text") == text:
                scores = kept_scores(choice.get("logprobs"), text)
                if scores is not None:
                    return scores
        return None


def kept_scores(logprobs: Any, text: str) -> TokenScores | None:
    """The kept tokens of a choice whose ``logprobs`` (OpenAI's completions format) came with
    ``text`` (module docstring), or None."""
    if not isinstance(logprobs, Mapping):
        return None
    tokens, values = logprobs.get("tokens"), logprobs.get("token_logprobs")
    offsets = logprobs.get("text_offset")
    if not tokens or not isinstance(values, list) or len(values) != len(tokens):
        return None
    if not all(isinstance(t, str) for t in tokens):
        return None
    ends = list(itertools.accumulate(len(t) for t in tokens))
    if offsets:
        if len(offsets) != len(tokens):
            return None
        if any(o - offsets[0] != e - len(t) for o, e, t in zip(offsets, ends, tokens, strict=True)):
            return None
    kept = next((k + 1 for k, end in enumerate(ends) if end >= len(text)), None)
    if kept is None or not "".join(tokens[:kept]).startswith(text):
        return None
    kept_values = values[:kept]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in kept_values):
        return None
    return TokenScores(
        tuple(float(v) for v in kept_values), tuple(min(e, len(text)) for e in ends[:kept])
    )


@contextlib.contextmanager
def recording(lm: Any) -> Iterator[Recorder]:
    """Record the tokens and log-probabilities of the generations ``lm`` (a completions API
    that ``serves``) makes inside the block (module docstring)."""
    recorder = Recorder(lm)
    wrappers = {
        "_create_payload": recorder.create_payload,
        "parse_generations": recorder.parse_generations,
        "amodel_call": recorder.amodel_call,
    }
    with instance_attributes(lm, wrappers):
        yield recorder


@contextlib.contextmanager
def instance_attributes(obj: Any, values: Mapping[str, Any]) -> Iterator[None]:
    """Put ``values`` in the own attributes of the instance ``obj`` (its ``__dict__``: its class,
    the harness's, is not changed) for the block, then put back what the instance held (an
    attribute of its own, or none: its class's again)."""
    own = vars(obj)
    saved = {name: own[name] for name in values if name in own}
    own.update(values)
    try:
        yield
    finally:
        for name in values:
            own.pop(name, None)
        own.update(saved)
