"""Requests -> windows, shared by every backend: tokenising and windowing each request exactly as
the backend's ``loglikelihood(_rolling)`` does, and the windows' statistics -> one
:class:`TokenStats` per request."""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lm_eval import utils as harness_utils
from lm_eval.api.instance import Instance

from calib_tasks.token_stats.types import REQUEST_TYPE, TokenStats

eval_logger = logging.getLogger(__name__)


def clip(text: str, width: int = 40, *, tail: bool = False) -> str:
    """``repr`` of ``text``, cut to its first (``tail``: last) ``width`` characters."""
    if len(text) <= width:
        return repr(text)
    return repr("..." + text[-width:]) if tail else repr(text[:width] + "...")


def describe_request(request: Instance, position: int | None = None) -> str:
    """A short human-readable name of a request for error messages (never the whole text)."""
    where = f" #{position}" if position is not None else ""
    meta = []
    if getattr(request, "task_name", None) is not None:
        meta.append(f"task {request.task_name!r}")
    if getattr(request, "doc_id", None) is not None:
        meta.append(f"doc_id {request.doc_id}")
    meta.append(f"idx {getattr(request, 'idx', None)}")
    args = getattr(request, "args", ())
    if len(args) == 2 and all(isinstance(a, str) for a in args):
        meta.append(f"context {clip(args[0], tail=True)}, continuation {clip(args[1])}")
    return f"{REQUEST_TYPE} request{where} ({'; '.join(meta)})"


@dataclass
class Plan:
    """Every request as windows: token sequences whose last ``k`` tokens are scored.

    ``seqs[w]`` holds at least one token of context before its ``ks[w]`` scored tokens; request
    ``r`` owns windows ``bounds[r]:bounds[r + 1]``, in document order.
    """

    seqs: list[list[int]] = field(default_factory=list)
    ks: list[int] = field(default_factory=list)
    bounds: list[int] = field(default_factory=lambda: [0])


def _request_args(request: Instance, position: int) -> tuple[str, str]:
    args = request.args
    if len(args) != 2 or not all(isinstance(a, str) for a in args):
        raise ValueError(
            f"{describe_request(request, position)}: arguments must be (context, continuation) "
            f"strings, got {tuple(type(a).__name__ for a in args)}"
        )
    return args[0], args[1]


def plan_windows(
    lm: Any, requests: Sequence[Instance], *, rolling_max_seq_len: int, seq_cap: int
) -> Plan:
    """Tokenise and window every request exactly as the backend's loglikelihood(_rolling) does.

    ``rolling_max_seq_len`` is the ``max_seq_len`` the backend's ``loglikelihood_rolling`` passes
    to ``get_rolling_token_windows``; ``seq_cap`` is the longest token sequence (context +
    continuation) its ``_loglikelihood_tokens`` keeps after left truncation. Raises ValueError
    for a request that is not two strings or has nothing to score.
    """
    plan = Plan()
    truncated = 0
    for position, request in enumerate(requests):
        context, continuation = _request_args(request, position)
        if context == "":
            tokens = lm.tok_encode(continuation)
            if not tokens:
                raise ValueError(
                    f"{describe_request(request, position)}: the document tokenises to no tokens, "
                    "there is nothing to score"
                )
            windows = map(
                harness_utils.make_disjoint_window,
                harness_utils.get_rolling_token_windows(
                    token_list=tokens,
                    prefix_token=lm.prefix_token_id,
                    max_seq_len=rolling_max_seq_len,
                    context_len=1,
                ),
            )
            for window_context, scored in windows:
                plan.seqs.append(window_context + scored)
                plan.ks.append(len(scored))
        else:
            context_enc, continuation_enc = lm._encode_pair(context, continuation)
            if not continuation_enc:
                raise ValueError(
                    f"{describe_request(request, position)}: the continuation tokenises to no "
                    "tokens, there is nothing to score"
                )
            if not context_enc:
                raise ValueError(
                    f"{describe_request(request, position)}: the context tokenises to no tokens; "
                    'pass context="" to score the text as a document'
                )
            if len(continuation_enc) > seq_cap - 1:
                raise ValueError(
                    f"{describe_request(request, position)}: the continuation has "
                    f"{len(continuation_enc)} tokens, more than the {seq_cap - 1} that fit the "
                    "model's window after one token of context"
                )
            seq = context_enc + continuation_enc
            if len(seq) > seq_cap:
                truncated += 1
                seq = seq[-seq_cap:]
            plan.seqs.append(seq)
            plan.ks.append(
                len(continuation_enc) - _moved_whitespace_tokens(lm, context, continuation_enc)
            )
        plan.bounds.append(len(plan.seqs))
    if truncated:
        eval_logger.warning(
            "%s: %d of %d requests exceed the model's window of %d tokens; their context was "
            "truncated from the left (as loglikelihood does).",
            REQUEST_TYPE,
            truncated,
            len(requests),
            seq_cap,
        )
    return plan


def _moved_whitespace_tokens(lm: Any, context: str, continuation_enc: list[int]) -> int:
    """How many leading tokens of ``continuation_enc`` encode only the trailing whitespace of
    ``context`` that ``_encode_pair`` moved into the continuation (e.g. the newline ending a chat
    template's assistant header). 0 when nothing moved, or when the whitespace merged with the
    continuation's first token (that token is then the first one of the continuation text)."""
    stripped = context.rstrip()
    if stripped == context:
        return 0
    stripped_enc, context_enc = lm.tok_encode(stripped), lm.tok_encode(context)
    whitespace = context_enc[len(stripped_enc) :]
    n = len(whitespace)
    if context_enc[: len(stripped_enc)] != stripped_enc or not 0 < n < len(continuation_enc):
        return 0
    return n if continuation_enc[:n] == whitespace else 0


def assemble(plan: Plan, window_stats: Sequence[TokenStats | None]) -> list[TokenStats]:
    """One TokenStats per request from the stats of its windows (every one must be given)."""
    out = []
    for r in range(len(plan.bounds) - 1):
        parts = window_stats[plan.bounds[r] : plan.bounds[r + 1]]
        assert all(p is not None for p in parts), "every window must have been scored"
        out.append(TokenStats.concatenate(parts))  # type: ignore[arg-type]
    return out


def sorted_sequences(
    keys: Sequence[tuple[int, ...]], *, share: bool = True
) -> tuple[list[tuple[int, ...]], list[int]]:
    """The sequences to run, longest first (then by content, as the harness's Collator sorts),
    and the index of each input sequence among them; ``share``: equal sequences run once."""
    if share:
        distinct = sorted(set(keys), key=lambda key: (-len(key), key))
        where = {key: i for i, key in enumerate(distinct)}
        return distinct, [where[key] for key in keys]
    order = sorted(range(len(keys)), key=lambda w: (-len(keys[w]), keys[w]))
    position = [0] * len(keys)
    for i, w in enumerate(order):
        position[w] = i
    return [keys[w] for w in order], position


def stats_by_prompt(
    plan: Plan,
    score_prompts: Callable[[list[tuple[int, ...]], list[int]], Sequence[TokenStats]],
) -> list[TokenStats]:
    """The stats of every window of ``plan``, each distinct window sequence scored once as a
    whole prompt (as servers score a prompt).

    ``score_prompts(prompts, starts)`` gets the distinct sequences longest first and, for each,
    the first position any of its windows scores; it returns the stats of positions
    ``starts[i]:`` of ``prompts[i]``, one TokenStats per prompt. A window's stats are the tail of
    its prompt's.
    """
    prompts, prompt_of_window = sorted_sequences([tuple(seq) for seq in plan.seqs])
    starts = [len(p) for p in prompts]
    for w, p in enumerate(prompt_of_window):
        starts[p] = min(starts[p], len(plan.seqs[w]) - plan.ks[w])
    prompt_stats = score_prompts(prompts, starts)
    return [prompt_stats[p].tail(k) for p, k in zip(prompt_of_window, plan.ks, strict=True)]
