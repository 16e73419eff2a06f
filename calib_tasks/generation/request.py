"""The ``calib_generate`` request type: one generated answer with everything its confidence
methods need, composed from the backend's own ``generate_until``, ``loglikelihood`` and
``token_stats``.

lm-eval 0.4.13 builds every request of a run before it sends any, while ``ptrue`` and
``verbalized`` ask about a text that exists only once it is generated. So a generative calib
task sends one request per document, ``Instance("calib_generate", doc, (context,
generation_kwargs, plan))``, and ``LM.calib_generate`` (installed on the harness's ``LM``, so on
every backend: the patch ``calib_tasks.patches.CALIB_GENERATE``) answers a whole batch of them:

1. the backend's own ``generate_until`` on ``(context, generation_kwargs)``: the text is the
   harness's, with the same stop sequences and kwargs;
2. the token log-probabilities of each text (methods ``seq``, ``seq_joint``, ``seq_min``,
   ``answer``), taken from that generation itself where the backend returns them with it (the
   native routes, each with its contract in its module: hf, a causal model, ``hf_steps``;
   local-completions and openai-completions, ``logprobs`` in the generation payload,
   ``completions_steps``; vllm, ``SamplingParams(logprobs=1)``, ``vllm_steps``). The fallback,
   for a backend without a native route and for each text a native route could not match to
   its tokens (beam search, a server that returned no log-probabilities), scores the text after
   its context with the backend's ``token_stats``, and the log says so. ``answer`` needs each
   token's place in the text, which only the native routes give;
3. ``ptrue``: the backend's ``loglikelihood`` of the plan's P(True) prompt (``prompts``);
4. ``verbalized``: the backend's ``generate_until`` on the follow-up question.

Each answer is a ``Generation``: the generated text itself (a ``str``, so the task's filters and
every logger see the text) carrying those numbers. Which methods a backend can serve is checked
before any request (``check_methods``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from lm_eval.api.instance import Instance
from lm_eval.api.model import LM, CachingLM

from calib_tasks import patches
from calib_tasks.generation import prompts
from calib_tasks.scoring.confidence_methods import (
    ANSWER,
    CONFIDENCE_SETTING,
    LOGLIKELIHOOD,
    METHODS,
    TOKEN_LOGPROBS,
    VERBALIZED,
    Method,
)
from calib_tasks.token_stats import REQUEST_TYPE as TOKEN_STATS
from calib_tasks.token_stats import UnsupportedBackendError, check_backend
from calib_tasks.token_stats.hf import HF

REQUEST_TYPE = "calib_generate"
eval_logger = logging.getLogger(__name__)
#: Backend classes whose ``loglikelihood`` only refuses (chat APIs return no prompt scores), and
#: their subclasses (openai-chat-completions, litellm, ...).
_NO_LOGLIKELIHOOD = (
    "lm_eval.models.openai_completions.LocalChatCompletion",
    "lm_eval.models.anthropic_llms.AnthropicChat",
    "lm_eval.models.anthropic_llms.AnthropicLM",
    "lm_eval.models.hf_audiolm.HFAUDIOLMQWEN",
)
_TEMPLATE_API = "lm_eval.models.api_models.TemplateAPI"
_OPENAI_COMPLETIONS = "lm_eval.models.openai_completions.OpenAICompletionsAPI"
#: The models whose prompt log-probabilities OpenAI's completions API returns (its
#: ``loglikelihood`` asserts one of them).
_OPENAI_LOGLIKELIHOOD_MODELS = ("babbage-002", "davinci-002")
_VERBALIZED_KWARGS = {
    "until": list(prompts.VERBALIZED_STOP),
    "max_gen_toks": prompts.VERBALIZED_MAX_TOKENS,
    "do_sample": False,
    "temperature": 0.0,
}


class Generation(str):
    """A generated text (the harness's ``generate_until`` text) with the numbers of its
    confidence methods: ``token_logprobs`` of its kept tokens and where each ends in the text
    (``token_ends``; empty when the route gives no offsets), ``token_route`` (``generation``:
    taken from the generation, a native route; ``rescored``: the text scored after its context;
    None: not asked),
    ``ptrue``, the raw ``verbalized_reply`` (None when not asked) and whether it may have been
    cut at its token budget (``verbalized_cut``)."""

    token_logprobs: tuple[float, ...] | None
    token_ends: tuple[int, ...]
    token_route: str | None
    ptrue: float | None
    verbalized_reply: str | None
    verbalized_cut: bool

    def __new__(cls, text: str, **numbers: Any) -> Generation:
        generation = super().__new__(cls, text)
        generation.token_logprobs = numbers.get("token_logprobs")
        generation.token_ends = numbers.get("token_ends", ())
        generation.token_route = numbers.get("token_route")
        generation.ptrue = numbers.get("ptrue")
        generation.verbalized_reply = numbers.get("verbalized_reply")
        generation.verbalized_cut = numbers.get("verbalized_cut", False)
        return generation

    def __reduce__(self) -> tuple[Any, ...]:  # pickled (caching, data-parallel gathering)
        return (_rebuild, (str(self), dict(vars(self))))


def _rebuild(text: str, numbers: dict[str, Any]) -> Generation:
    return Generation(text, **numbers)


def plan(
    methods: Sequence[Method],
    question: str,
    history: list[Mapping[str, str]] | None,
    ptrue_prompt: str,
    verbalized_prompt: str,
) -> dict[str, Any]:
    """The third argument of a ``calib_generate`` request (plain JSON, as the samples file logs
    it): the methods' names, the question (for ``ptrue``), the chat history of the prompt (under
    a chat template, else None) and the two prompts."""
    return {
        "methods": [m.name for m in methods],
        "question": question,
        "history": history,
        "ptrue_prompt": ptrue_prompt,
        "verbalized_prompt": verbalized_prompt,
    }


def _class_paths(lm: object) -> set[str]:
    return {f"{c.__module__}.{c.__qualname__}" for c in type(lm).__mro__}


def _is_hf(lm: object) -> bool:
    """A causal hf backend, whose generations are read while generating (``hf_steps``)."""
    return HF.class_path in _class_paths(lm) and (getattr(lm, "backend", None) == "causal")


def _native_route(lm: object) -> Any:
    """The module of ``lm``'s native route (its generations come with their tokens'
    log-probabilities), or None: hf (a causal model), the completions APIs, vllm."""
    if _is_hf(lm):
        from calib_tasks.generation import hf_steps

        return hf_steps
    from calib_tasks.generation import completions_steps, vllm_steps

    return next((m for m in (completions_steps, vllm_steps) if m.serves(lm)), None)


#: Why a native route may not match a generation to its tokens, by route module.
_UNMATCHED = {
    "hf_steps": "beam search, or the backend changed the text",
    "completions_steps": (
        "the server returned no log-probabilities with them, or tokens that do not spell the text"
    ),
    "vllm_steps": "vLLM returned no log-probabilities with them, or the backend changed the text",
}


def _inner(lm: object) -> object:
    while isinstance(lm, CachingLM):
        lm = lm.lm
    return lm


def backend_name(lm: object) -> str:
    """``lm``'s harness model name and class (``local-chat-completions
    (lm_eval.models.openai_completions.LocalChatCompletion)``), or its class alone when no name
    of the harness's registry is bound to it."""
    cls = type(lm)
    path = f"{cls.__module__}.{cls.__qualname__}"
    try:
        from lm_eval.api.registry import model_registry

        placeholder = f"{cls.__module__}:{cls.__qualname__}"
        names = [n for n, target in model_registry.items() if target in (cls, placeholder)]
    except Exception:  # noqa: BLE001 (a name is a courtesy; the class path is enough)
        names = []
    return f"{names[0]} ({path})" if names else path


def method_problem(lm: object, method: Method) -> str | None:
    """Why ``lm`` (a ``CachingLM`` is read as the model it wraps) cannot serve ``method``, or None
    when it can; sends no request."""
    lm = _inner(lm)
    backend = type(lm).__name__
    if method.needs == TOKEN_LOGPROBS and _native_route(lm) is None:
        if method is ANSWER:
            return (
                "needs each generated token's place in the text, which only a backend that "
                "returns its tokens with its generations gives (hf with a causal model, vllm, "
                "local-completions)"
            )
        try:
            check_backend(lm)
        except UnsupportedBackendError as error:
            return f"needs the generated tokens' log-probabilities ({error})"
    if method.needs == LOGLIKELIHOOD:
        paths = _class_paths(lm)
        if paths & set(_NO_LOGLIKELIHOOD) or type(lm).loglikelihood is LM.loglikelihood:
            return (
                "needs the log-likelihoods of a second prompt (loglikelihood), which "
                f"{backend} does not give (a chat API returns no prompt scores)"
            )
        if _TEMPLATE_API in paths and getattr(lm, "tokenizer", None) is None:
            return (
                f"needs the log-likelihoods of a second prompt (loglikelihood), which "
                f"{backend} scores only with a tokenizer (tokenizer_backend=None); set "
                "tokenizer_backend and tokenizer"
            )
        model = getattr(lm, "model", None)
        if _OPENAI_COMPLETIONS in paths and model not in _OPENAI_LOGLIKELIHOOD_MODELS:
            return (
                "needs the log-likelihoods of a second prompt (loglikelihood), which OpenAI's "
                f"completions API returns only for {', '.join(_OPENAI_LOGLIKELIHOOD_MODELS)}, "
                f"not {model!r}"
            )
    return None


def check_methods(lm: object, methods: Sequence[Method], task: str) -> None:
    """Raise ``UnsupportedBackendError`` naming the task, every method ``lm`` cannot serve with
    the reason (``method_problem``), the backend (its harness name and class) and the methods it
    can serve, ``verbalized`` always among them (it needs only ``generate_until``); sends no
    request. Token log-probabilities need a native route (hf, vllm, the completions APIs) or a
    backend that answers ``token_stats`` (``answer``: a native route), ``ptrue`` a backend that
    scores prompts (``loglikelihood``)."""
    problems = {m.name: p for m in methods if (p := method_problem(lm, m)) is not None}
    if not problems:
        return
    served = [m.name for m in METHODS if method_problem(lm, m) is None]
    kept = [m.name for m in methods if m.name not in problems]
    offer = ",".join(kept if VERBALIZED.name in kept else [*kept, VERBALIZED.name])
    refused = ", ".join(repr(name) for name in problems)
    by_problem: dict[str, list[str]] = {}
    for name, problem in problems.items():
        by_problem.setdefault(problem, []).append(name)
    reasons = "; ".join(f"{', '.join(names)}: {problem}" for problem, names in by_problem.items())
    plural = "s" if len(problems) > 1 else ""
    raise UnsupportedBackendError(
        f"task {task!r}: confidence method{plural} {refused} cannot run on the backend "
        f"{backend_name(_inner(lm))}. {reasons}. This backend serves {', '.join(served)}; "
        f"'{VERBALIZED.name}' runs on every backend that generates: set {CONFIDENCE_SETTING}: "
        f"{offer}"
    )


def _token_scores(lm: Any, requests: list[Instance]) -> tuple[list[str], list[dict[str, Any]]]:
    """The texts of ``requests`` (``generate_until``) and, per text, its token numbers: from the
    generation on a native route (``_native_route``), else rescored (``_rescored``)."""
    generate = [Instance("generate_until", r.doc, r.args[:2], 0) for r in requests]
    route = _native_route(lm)
    if route is None:
        texts = lm.generate_until(generate)
        return texts, _rescored(lm, requests, texts)
    with route.recording(lm) as recorder:
        texts = lm.generate_until(generate)
    numbers, missing = [], []
    for i, (request, text) in enumerate(zip(requests, texts, strict=True)):
        scores = recorder.scores(request.args[0], text)
        if scores is None:
            missing.append(i)
            numbers.append({})
        else:
            numbers.append(
                {
                    "token_logprobs": scores.logprobs,
                    "token_ends": scores.ends,
                    "token_route": "generation",
                }
            )
    if missing:
        answer = any(ANSWER.name in requests[i].args[2]["methods"] for i in missing)
        eval_logger.warning(
            "calib_generate: %d of %d generations could not be matched to their tokens (%s); "
            "their texts are scored after their contexts instead%s",
            len(missing),
            len(texts),
            _UNMATCHED.get(route.__name__.rpartition(".")[2], "the backend changed the text"),
            " (no token offsets: the answer method gives them no confidence)" if answer else "",
        )
        rescored = _rescored(lm, [requests[i] for i in missing], [texts[i] for i in missing])
        for i, values in zip(missing, rescored, strict=True):
            numbers[i] = values
    return texts, numbers


def _rescored(lm: Any, requests: list[Instance], texts: list[str]) -> list[dict[str, Any]]:
    """Token numbers of each text scored after its context (``token_stats``; an empty text has
    none). UnsupportedBackendError, naming both, when the backend cannot score them (a
    completions server that returned no log-probabilities with its generations, and has no
    tokenizer or echoes no prompt)."""
    eval_logger.info(
        "calib_generate: %s returns no token log-probabilities with its generations; scoring "
        "%d generated texts after their contexts (token_stats)",
        type(lm).__name__,
        len(texts),
    )
    scored = [i for i, text in enumerate(texts) if text]
    if not scored:
        return [{"token_route": "rescored"} for _ in texts]
    try:
        check_backend(lm)
    except UnsupportedBackendError as error:
        raise UnsupportedBackendError(
            f"calib_generate: {len(texts)} generations of the backend {backend_name(lm)} came "
            "without their tokens' log-probabilities, and their texts cannot be scored after "
            f"their contexts instead: {error}"
        ) from error
    stats = getattr(lm, TOKEN_STATS)(
        [Instance(TOKEN_STATS, requests[i].doc, (requests[i].args[0], texts[i]), 0) for i in scored]
    )
    numbers: list[dict[str, Any]] = [{"token_route": "rescored"} for _ in texts]
    for i, stat in zip(scored, stats, strict=True):
        numbers[i]["token_logprobs"] = tuple(float(x) for x in stat.true_logprob)
    return numbers


def calib_generate(
    self: Any, requests: list[Instance], disable_tqdm: bool = False
) -> list[Generation]:
    """``LM.calib_generate``: one ``Generation`` per request (module docstring)."""
    if not requests:
        return []
    wanted = set().union(*(r.args[2]["methods"] for r in requests))
    needs_tokens = any(name in wanted for name in ("seq", "seq_joint", "seq_min", "answer"))
    if needs_tokens:
        texts, numbers = _token_scores(self, requests)
    else:
        texts = self.generate_until(
            [Instance("generate_until", r.doc, r.args[:2], 0) for r in requests]
        )
        numbers = [{} for _ in texts]
    if "ptrue" in wanted:
        _add_ptrue(self, requests, texts, numbers)
    if "verbalized" in wanted:
        _add_verbalized(self, requests, texts, numbers)
    return [Generation(text, **values) for text, values in zip(texts, numbers, strict=True)]


def _add_ptrue(
    lm: Any, requests: list[Instance], texts: list[str], numbers: list[dict[str, Any]]
) -> None:
    """Each answer's P(True) (``prompts.ptrue_request``), from two loglikelihood requests."""
    asked = [i for i, r in enumerate(requests) if "ptrue" in r.args[2]["methods"]]
    arguments = []
    for i in asked:
        p = requests[i].args[2]
        chat = p["history"] is not None
        arguments += prompts.ptrue_request(p["ptrue_prompt"], p["question"], texts[i], chat, lm)
    docs = [requests[i].doc for i in asked for _ in prompts.PTRUE_OPTIONS]
    scores = lm.loglikelihood(
        [Instance("loglikelihood", doc, args, 0) for doc, args in zip(docs, arguments, strict=True)]
    )
    for k, i in enumerate(asked):
        (true_ll, _), (false_ll, _) = scores[2 * k], scores[2 * k + 1]
        numbers[i]["ptrue"] = prompts.ptrue_probability(true_ll, false_ll)


def _add_verbalized(
    lm: Any, requests: list[Instance], texts: list[str], numbers: list[dict[str, Any]]
) -> None:
    """Each answer's verbalized reply: the follow-up question generated greedily."""
    asked = [i for i, r in enumerate(requests) if "verbalized" in r.args[2]["methods"]]
    follow_ups = []
    for i in asked:
        p = requests[i].args[2]
        context = prompts.verbalized_context(
            p["verbalized_prompt"], requests[i].args[0], texts[i], p["history"], lm
        )
        kwargs = copy.deepcopy(_VERBALIZED_KWARGS)  # a backend may extend ``until`` in place
        follow_ups.append(Instance("generate_until", requests[i].doc, (context, kwargs), 0))
    for i, reply in zip(asked, lm.generate_until(follow_ups), strict=True):
        numbers[i]["verbalized_reply"] = reply
        numbers[i]["verbalized_cut"] = _used_the_budget(lm, reply)


def _used_the_budget(lm: Any, reply: str) -> bool:
    """Whether ``reply`` may have been cut at ``VERBALIZED_MAX_TOKENS``: its tokens (the
    backend's tokenizer, without special tokens) reach the budget. A backend without a
    tokenizer (an API with ``tokenizer_backend=None``) cannot tell: False."""
    encode = getattr(lm, "tok_encode", None)
    if encode is None or getattr(lm, "tokenizer", True) is None:
        return False
    try:
        tokens = encode(reply, add_special_tokens=False)
    except TypeError:  # a tok_encode without that keyword
        tokens = encode(reply)
    return len(tokens) >= prompts.VERBALIZED_MAX_TOKENS


def install() -> None:
    """Install ``calib_generate`` on the harness's ``LM`` (idempotent)."""
    patches.add(patches.CALIB_GENERATE, LM, REQUEST_TYPE, calib_generate)
