"""The echoed completions responses of OpenAI-compatible servers -> :class:`TokenStats` (pure
functions of the response objects)."""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from calib_tasks.token_stats.types import TokenStats

# Tokens each completions request lets the server generate after the echoed prompt. 1, as the
# harness's own loglikelihood payload asks: every OpenAI-compatible server honours it, whereas
# max_tokens=0 means "echo only" to OpenAI and vLLM but "no limit" to llama-cpp-python.
MAX_TOKENS = 1


def _echo_length_error(
    logprobs: Mapping[str, Any], n_entries: int, n_prompt_tokens: int, prompt_chars: int | None
) -> str:
    """Why a choice of ``n_entries`` log-probability entries cannot be the echo of a prompt of
    ``n_prompt_tokens`` tokens followed by at most ``MAX_TOKENS`` generated ones.

    Token-id prompts are echoed as sent, so the count alone tells. For a text prompt of
    ``prompt_chars`` characters, the entries whose ``text_offset`` lies inside the prompt are
    the server's own tokens of it, and the others are generated.
    """
    head = (
        f"the completions response holds {n_entries} tokens for a prompt of {n_prompt_tokens} "
        "tokens"
    )
    too_many = (
        f"more than the max_tokens={MAX_TOKENS} asked for: the server does not honour max_tokens"
    )
    if prompt_chars is None:
        if n_entries < n_prompt_tokens:
            return f"{head}: the server did not echo the prompt"
        return (
            f"{head}: the {n_entries - n_prompt_tokens} after the prompt are generated, {too_many}"
        )
    offsets = logprobs.get("text_offset")
    if not offsets:
        return (
            f"{head} and no text_offset: the server tokenised the prompt differently from the "
            f"local tokenizer, or it generated {too_many}"
        )
    inside = sum(1 for offset in offsets if offset < prompt_chars)
    if inside == n_prompt_tokens:
        return (
            f"{head}: {inside} start inside the prompt's {prompt_chars} characters, the "
            f"{n_entries - inside} after them are generated, {too_many}"
        )
    return (
        f"{head}, of which {inside} start inside the prompt's {prompt_chars} characters: the "
        "server tokenised the prompt differently from the local tokenizer (check that the "
        "tokenizer model argument names the server's model)"
    )


def stats_from_completion_logprobs(
    logprobs: Mapping[str, Any],
    n_prompt_tokens: int,
    start: int,
    *,
    prompt_chars: int | None = None,
) -> TokenStats:
    """Statistics of prompt positions ``start .. n_prompt_tokens - 1`` of one completions choice.

    ``logprobs`` is ``choice["logprobs"]`` of an ``echo=True, logprobs>=1, max_tokens=1``
    completions response: ``tokens``, ``token_logprobs`` (None at position 0), ``top_logprobs``
    (None at position 0, else token string -> log-probability holding at least the top-1 token)
    and ``text_offset``, one entry per echoed prompt token and then per generated token. The first
    ``n_prompt_tokens`` entries are the prompt's positions, and at most ``MAX_TOKENS`` generated
    entries may follow (servers may leave the generated token out). ``prompt_chars`` is the
    prompt's length when it went out as text (the server tokenised it); it serves to tell, in the
    error, generated tokens from a different tokenisation.

    top1_logprob = the largest value in ``top_logprobs`` (raised to the true token's value if a
    server reports the true token above it); top1_is_true = the true token's log-probability is
    that maximum, the comparison the harness's own completions ``parse_logprobs`` makes.

    Raises ValueError if the response holds fewer than ``n_prompt_tokens`` or more than
    ``n_prompt_tokens + MAX_TOKENS`` entries (naming which), or a scored position lacks its
    log-probability or top_logprobs.
    """
    token_logprobs = logprobs.get("token_logprobs")
    top_logprobs = logprobs.get("top_logprobs")
    if token_logprobs is None or top_logprobs is None:
        raise ValueError(
            "the completions response has no token_logprobs/top_logprobs: token_stats needs "
            "echo=True and logprobs>=1"
        )
    n = len(token_logprobs)
    if not n_prompt_tokens <= n <= n_prompt_tokens + MAX_TOKENS:
        raise ValueError(_echo_length_error(logprobs, n, n_prompt_tokens, prompt_chars))
    if not 1 <= start <= n_prompt_tokens:
        raise ValueError(f"start must be in 1..{n_prompt_tokens}, got {start}")
    k = n_prompt_tokens - start
    true_lp = np.empty(k, dtype=np.float64)
    top1_lp = np.empty(k, dtype=np.float64)
    for j in range(k):
        i = start + j
        value, top = token_logprobs[i], top_logprobs[i]
        if value is None or not top:
            missing = "logprob" if value is None else "top_logprobs"
            raise ValueError(
                f"the completions response has no {missing} at prompt position {i}: the server "
                "cannot give the log-probability and top-1 token per position"
            )
        true_lp[j] = value
        top1_lp[j] = max(top.values())
    hit = true_lp >= top1_lp
    return TokenStats(true_lp, np.maximum(top1_lp, true_lp), hit)


def sorted_choices(response: Mapping[str, Any], n_prompts: int) -> list[Mapping[str, Any]]:
    """``response["choices"]`` in prompt order (servers may answer out of order)."""
    choices = sorted(response.get("choices") or [], key=lambda c: c["index"])
    if len(choices) != n_prompts:
        raise ValueError(
            f"the completions response has {len(choices)} choices for {n_prompts} prompts"
        )
    return choices


def parse_completions_response(
    response: Mapping[str, Any],
    n_prompt_tokens: Sequence[int],
    starts: Sequence[int],
    *,
    prompt_chars: Sequence[int] | None = None,
) -> list[TokenStats]:
    """One :class:`TokenStats` per prompt of a batched completions request.

    ``response["choices"]`` are matched to the prompts by their ``index``; prompt ``i`` has
    ``n_prompt_tokens[i]`` tokens (and ``prompt_chars[i]`` characters if it went out as text),
    scored from ``starts[i]`` on (see :func:`stats_from_completion_logprobs`).
    """
    chars: Sequence[int | None] = [None] * len(starts) if prompt_chars is None else prompt_chars
    return [
        stats_from_completion_logprobs(choice.get("logprobs") or {}, n, start, prompt_chars=c)
        for choice, n, start, c in zip(
            sorted_choices(response, len(n_prompt_tokens)),
            n_prompt_tokens,
            starts,
            chars,
            strict=True,
        )
    ]
