"""``local-completions``: ``lm_eval.models.openai_completions.LocalCompletionsAPI``, from
``echo=True, logprobs=1, max_tokens=1`` completions requests of ``batch_size`` windows (the
generated token is dropped), after an alignment self-check of the server's echo."""

import logging
import math
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tqdm import tqdm

from calib_tasks.token_stats.completions_response import (
    MAX_TOKENS,
    parse_completions_response,
    sorted_choices,
)
from calib_tasks.token_stats.spec import BackendSpec, unsupported
from calib_tasks.token_stats.types import REQUEST_TYPE, TokenStats, UnsupportedBackendError
from calib_tasks.token_stats.windows import Plan, clip, stats_by_prompt

eval_logger = logging.getLogger(__name__)

# HTTP statuses with which servers reject a request's format (llama-cpp-python answers 500).
_REJECTED_FORMAT_STATUS = (400, 422, 500)
# Alignment self-check: the largest difference (nats) between the echoed top-1 log-probability
# of a position and the one the server reports when it generates that position's token.
_ALIGNMENT_TOLERANCE = 0.05
_SHIFTED_ECHO_BUG = "abetlen/llama-cpp-python#1983 and #1276"


def _check(lm: Any) -> None:
    """Refuse completions backends that cannot echo per-position log-probabilities."""
    from lm_eval.models import openai_completions as oc

    own = oc.LocalCompletionsAPI
    for name in ("_create_payload", "parse_logprobs"):
        if getattr(type(lm), name) is not getattr(own, name):
            raise unsupported(
                lm,
                f"it overrides {name} of the completions API (chat or other request formats "
                "cannot echo the prompt's log-probabilities)",
            )
    if isinstance(lm, oc.OpenAICompletionsAPI) and lm.model not in ("babbage-002", "davinci-002"):
        raise unsupported(
            lm, "OpenAI's API echoes prompt log-probabilities only for babbage-002, davinci-002"
        )
    if lm.tokenizer is None:
        raise unsupported(
            lm,
            "it has no tokenizer (tokenizer_backend=None), which is needed to split context and "
            "continuation and to window documents; set tokenizer_backend and tokenizer",
        )


def _payload(lm: Any, prompts: Sequence[Sequence[int]], *, echo: bool) -> dict:
    """The backend's own loglikelihood payload for ``prompts`` (token ids, or decoded text with
    ``tokenized_requests=False``, as its ``create_message`` sends them), asking for ``echo``,
    ``logprobs=1`` and ``max_tokens=MAX_TOKENS``."""
    messages = lm.create_message([list(p) for p in prompts])
    body = lm._create_payload(messages, generate=False, seed=lm._seed, eos=lm.eos_string)
    body.update(echo=echo, logprobs=1, max_tokens=MAX_TOKENS)
    return body


def _prompt_chars(payload: Mapping[str, Any]) -> list[int] | None:
    """The character length of each prompt of ``payload`` if they are text, else None."""
    prompt = payload["prompt"]
    texts = [prompt] if isinstance(prompt, str) else prompt
    return [len(t) for t in texts] if isinstance(texts[0], str) else None


def _post(lm: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """POST ``payload`` the way ``TemplateAPI.model_call`` does, with its retry policy."""
    import requests
    from tenacity import retry, stop_after_attempt, wait_exponential

    @retry(
        stop=stop_after_attempt(lm.max_retries),
        wait=wait_exponential(multiplier=0.5, min=1, max=10),
        reraise=True,
    )
    def post() -> dict[str, Any]:
        response = requests.post(
            lm.base_url,
            json=payload,
            headers=lm.header,
            verify=lm.verify_certificate,
            timeout=lm.timeout,
        )
        if not response.ok:
            eval_logger.warning("API request failed: %s. Retrying...", response.text)
        response.raise_for_status()
        return response.json()

    return post()


def _one_text_prompt_arguments(lm: Any) -> str:
    """The model arguments that make the backend send one text prompt per request ("" if it
    does already)."""
    arguments = ["tokenized_requests=False"] if lm.tokenized_requests else []
    if int(lm._batch_size) > 1:
        arguments.append("batch_size=1")
    return ",".join(arguments)


def _post_first(lm: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """POST the first request of a call. A server that rejects its format (HTTP 400, 422, 500)
    while the backend sends token ids or several prompts per request raises
    UnsupportedBackendError naming the model arguments that send one text prompt per request."""
    import requests

    try:
        return _post(lm, payload)
    except requests.HTTPError as error:
        arguments = _one_text_prompt_arguments(lm)
        status = getattr(error.response, "status_code", None)
        if not arguments or status not in _REJECTED_FORMAT_STATUS:
            raise
        raise UnsupportedBackendError(
            f"the completions server at {lm.base_url} rejected the first {REQUEST_TYPE} request "
            f"(HTTP {status}: {clip(error.response.text, 300)}). A server that takes one text "
            "prompt per request, as llama-cpp-python's does, needs the model arguments "
            f"{arguments}"
        ) from error


def _post_concurrently(
    post: Callable[[dict[str, Any]], dict[str, Any]],
    payloads: Sequence[dict[str, Any]],
    workers: int,
    receive: Callable[[int, dict[str, Any]], None],
) -> None:
    """POST every payload, ``workers`` at a time, and call ``receive(i, response)`` on this
    thread as the responses arrive.

    The first failure (a request that failed after its retries, or ``receive`` raising) is raised
    at once: payloads not yet sent are never sent, and requests in flight are abandoned. They
    run on daemon threads, so neither this call nor the process's exit waits for them (a
    ``ThreadPoolExecutor`` joins its threads when the interpreter exits).
    """
    pending: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(len(payloads)):
        pending.put(i)
    done: queue.SimpleQueue[tuple[int, Any, Exception | None]] = queue.SimpleQueue()
    stop = threading.Event()

    def work() -> None:
        while True:
            try:
                i = pending.get_nowait()
            except queue.Empty:
                return
            if stop.is_set():
                return
            try:
                done.put((i, post(payloads[i]), None))
            except Exception as error:  # raised on the calling thread
                done.put((i, None, error))
                return

    for _ in range(min(workers, len(payloads))):
        threading.Thread(target=work, name=f"{REQUEST_TYPE}-request", daemon=True).start()
    try:
        for _ in payloads:
            i, response, error = done.get()
            if error is not None:
                raise error
            receive(i, response)
    finally:
        stop.set()


def _top1(entry: Mapping[str, float]) -> tuple[str, float]:
    """The most probable (token string, log-probability) of a ``top_logprobs`` entry."""
    token = max(entry, key=entry.__getitem__)
    return token, float(entry[token])


def _alignment_probe(
    top_logprobs: Sequence[Mapping[str, float] | None], n_prompt_tokens: int, eos: str | None
) -> int | None:
    """The prompt position the alignment self-check generates, or None if none fits.

    A position ``j`` (``2 <= j < n_prompt_tokens``) fits when its echoed top-1 token differs
    from that of position ``j - 1`` (another token, or log-probabilities more than 4 tolerances
    apart), so that an echo shifted by one position disagrees with the generated token, and is
    printable: not empty, without a replacement character, not ``eos`` (servers render partial
    UTF-8 and end-of-sequence tokens differently in echoes and generations, and llama-cpp-python
    returns no generated end-of-sequence token). The most confident one is chosen, so that a
    near tie cannot flip the generated token.
    """
    best: int | None = None
    best_value = -math.inf
    for j in range(2, n_prompt_tokens):
        here, before = top_logprobs[j], top_logprobs[j - 1]
        if not here or not before:
            continue
        token, value = _top1(here)
        previous, previous_value = _top1(before)
        printable = token not in ("", eos) and "\ufffd" not in token
        distinct = token != previous or abs(value - previous_value) > 4 * _ALIGNMENT_TOLERANCE
        if printable and distinct and value > best_value:
            best, best_value = j, value
    return best


def _check_alignment(
    lm: Any, prompts: Sequence[Sequence[int]], response: Mapping[str, Any]
) -> None:
    """The alignment self-check on the echoed ``response`` to ``prompts`` (already parsed).

    For the first prompt with a position ``j`` to probe (:func:`_alignment_probe`), the server
    generates one token after the prompt's first ``j`` tokens (``echo=False, max_tokens=1``):
    its top-1 token and log-probability must be those the echo reports at position ``j``,
    within ``_ALIGNMENT_TOLERANCE``. Raises UnsupportedBackendError naming the check if not;
    logs a warning if no prompt has a position to probe.
    """
    for prompt, choice in zip(prompts, sorted_choices(response, len(prompts)), strict=True):
        j = _alignment_probe(choice["logprobs"]["top_logprobs"], len(prompt), lm.eos_string)
        if j is None:
            continue
        echoed = _top1(choice["logprobs"]["top_logprobs"][j])
        body = _payload(lm, [prompt[:j]], echo=False)
        generated = sorted_choices(_post(lm, body), 1)[0].get("logprobs") or {}
        tops = generated.get("top_logprobs") or [None]
        got = _top1(tops[0]) if tops[0] else None
        if (
            got is not None
            and got[0] == echoed[0]
            and abs(got[1] - echoed[1]) <= _ALIGNMENT_TOLERANCE
        ):
            return
        seen = "no token" if got is None else f"{got[0]!r} at log-probability {got[1]:.4f}"
        raise unsupported(
            lm,
            f"the server failed the alignment self-check: its echo of a {len(prompt)}-token "
            f"prompt gives position {j} the top-1 token {echoed[0]!r} at log-probability "
            f"{echoed[1]:.4f}, but generating the next token after the prompt's first {j} tokens "
            f"gives {seen} (tolerance {_ALIGNMENT_TOLERANCE}). Its echoed log-probabilities do "
            "not belong to the positions they are reported at; llama-cpp-python's server "
            f"reports each position's distribution one position early ({_SHIFTED_ECHO_BUG}). "
            "Score this model with the hf backend (transformers loads GGUF files with "
            "gguf_file=) or with vllm",
        )
    eval_logger.warning(
        "%s: the alignment self-check found no position to probe in the first request's %d "
        "prompts (the echoed top-1 token never changes between neighbouring positions); the "
        "server's echoed log-probabilities are used unchecked",
        REQUEST_TYPE,
        len(prompts),
    )


def _score(lm: Any, plan: Plan, disable_tqdm: bool) -> list[TokenStats]:
    """The windows of ``TemplateAPI.loglikelihood_rolling`` (``max_seq_len = max_length - 1``,
    where the backend's ``max_length`` is already the model arg minus one) and of its
    ``batch_loglikelihood_requests`` (sequences left-truncated to ``max_length``), tokenised with
    the backend's tokenizer. Each distinct sequence is one prompt; ``batch_size`` prompts go in one
    request built by the backend's own ``create_message`` (token ids, or decoded text when
    ``tokenized_requests=False``) and ``_create_payload``, with ``echo=True``, ``logprobs=1``
    and ``max_tokens=1`` (the generated token is dropped).

    The first request goes alone and is followed by the alignment self-check
    (:func:`_check_alignment`, one more request); the others then run ``num_concurrent`` at a
    time. The first failure raises at once, without waiting for requests in flight.

    Raises UnsupportedBackendError for a server that rejects the first request's format (naming
    the model arguments to set) or fails the self-check; ValueError for a response that is not
    the echo of its prompts.
    """
    return stats_by_prompt(
        plan, lambda prompts, starts: _score_prompts(lm, prompts, starts, disable_tqdm)
    )


def _score_prompts(
    lm: Any, prompts: list[tuple[int, ...]], starts: list[int], disable_tqdm: bool
) -> list[TokenStats]:
    size = max(1, int(lm._batch_size))
    chunks = [range(i, min(i + size, len(prompts))) for i in range(0, len(prompts), size)]
    # payloads are built here (the tokenizer stays on this thread); only the POSTs run in parallel
    payloads = [_payload(lm, [prompts[i] for i in c], echo=True) for c in chunks]
    chunk_stats: list[list[TokenStats]] = [[] for _ in chunks]
    with tqdm(total=len(prompts), desc="Requesting API", disable=disable_tqdm) as progress:

        def receive(c: int, response: dict[str, Any]) -> None:
            chunk_stats[c] = parse_completions_response(
                response,
                [len(prompts[i]) for i in chunks[c]],
                [starts[i] for i in chunks[c]],
                prompt_chars=_prompt_chars(payloads[c]),
            )
            progress.update(len(chunks[c]))

        if payloads:
            first = _post_first(lm, payloads[0])
            receive(0, first)
            _check_alignment(lm, [prompts[i] for i in chunks[0]], first)
            _post_concurrently(
                lambda body: _post(lm, body),
                payloads[1:],
                max(1, int(getattr(lm, "_concurrent", 1))),
                lambda c, response: receive(c + 1, response),
            )
    return [stats for chunk in chunk_stats for stats in chunk]


COMPLETIONS = BackendSpec(
    name="local-completions",
    class_path="lm_eval.models.openai_completions.LocalCompletionsAPI",
    check=_check,
    rolling_max_seq_len=lambda lm: lm.max_length - 1,
    seq_cap=lambda lm: lm.max_length,
    score=_score,
)
completions_token_stats = COMPLETIONS.token_stats
