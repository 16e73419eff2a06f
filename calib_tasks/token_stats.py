"""The ``token_stats`` request type: per-position token statistics from the harness's own backends.

A request ``Instance(request_type="token_stats", doc=..., arguments=(context, continuation),
idx=...)`` asks for one :class:`TokenStats` covering the tokens of ``continuation``:

* ``context == ""``: ``continuation`` is a document scored exactly like the backend's
  ``loglikelihood_rolling`` scores it: same ``tok_encode``, same prefix token, same disjoint rolling
  windows (``utils.get_rolling_token_windows(..., context_len=1)`` + ``make_disjoint_window``) of
  the backend's window length. Every token is scored, the first one given the prefix token, and a
  document of N tokens costs ceil(N / window) windows.
* ``context != ""``: only the continuation tokens are scored, with the context/continuation split
  of the backend's ``loglikelihood`` (``_encode_pair``) and its left truncation to the window.
  Whitespace ending the context, which ``_encode_pair`` moves into the continuation, stays
  context: its tokens are conditioned on, not scored. So position 0 is the first token of the
  continuation text also under ``--apply_chat_template``, whose prompt ends with a newline.

So ``sum(true_logprob)`` is the backend's ``loglikelihood_rolling`` (resp. ``loglikelihood``, for
a context without trailing whitespace) value, and ``all(top1_is_true)`` its ``is_greedy``.

Importing this module installs ``token_stats(self, requests, disable_tqdm=False)`` on

* ``lm_eval.models.huggingface.HFLM`` (``hf``): log-softmax of the forward pass on the backend's
  device, top-1 over the whole output vocabulary, the backend's batch size, data parallel;
* ``lm_eval.models.vllm_causallms.VLLM`` (``vllm``): ``prompt_logprobs=1`` (the true token and the
  top-1 token at every prompt position); installed at import when that module is already loaded,
  otherwise on first use (vllm is imported only by the harness, never by this module);
* ``lm_eval.models.openai_completions.LocalCompletionsAPI`` (``local-completions``):
  ``echo=True, logprobs=1, max_tokens=1`` completions requests of ``batch_size`` windows (the
  generated token is dropped), after an alignment self-check of the server's echo;

and a default on ``lm_eval.api.model.LM`` that raises :class:`UnsupportedBackendError`. The
evaluator dispatches with ``getattr(lm, "token_stats")(requests)``; ``CachingLM`` (``--use_cache``)
passes the method through uncached. Installation is idempotent and touches no existing method.
:func:`check_backend` raises, without sending a request, the error a backend's ``token_stats``
would raise for its configuration.

The response parsers :func:`stats_from_prompt_logprobs` (vLLM) and
:func:`stats_from_completion_logprobs` / :func:`parse_completions_response` (OpenAI completions)
are pure functions of the response objects.
"""

# No ``from __future__ import annotations``: the harness's ``!function`` file loader runs a module
# before putting it in sys.modules, and dataclasses cannot resolve string annotations then.
import logging
import math
import queue
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from lm_eval import utils as harness_utils
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM, CachingLM
from tqdm import tqdm

__all__ = [
    "REQUEST_TYPE",
    "SUPPORTED_BACKENDS",
    "TokenStats",
    "UnsupportedBackendError",
    "check_backend",
    "completions_token_stats",
    "describe_request",
    "hf_token_stats",
    "install",
    "parse_completions_response",
    "stats_from_completion_logprobs",
    "stats_from_prompt_logprobs",
    "vllm_token_stats",
]

REQUEST_TYPE = "token_stats"
# harness model name -> backend class that implements the request
SUPPORTED_BACKENDS: dict[str, str] = {
    "hf": "lm_eval.models.huggingface.HFLM",
    "vllm": "lm_eval.models.vllm_causallms.VLLM",
    "local-completions": "lm_eval.models.openai_completions.LocalCompletionsAPI",
}

eval_logger = logging.getLogger(__name__)

# Marks the functions this module installs, so that a second import (or the file loaded again
# under another module name) recognises them and leaves the classes as they are.
_MARK = "_calib_token_stats"
_VLLM_MODULE = "lm_eval.models.vllm_causallms"
# Upper bound on the elements of one float32 block of logits reduced at once (128 MiB).
_REDUCE_ELEMENTS = 1 << 25


# --------------------------------------------------------------------------------------------
# The response type
# --------------------------------------------------------------------------------------------


class TokenStats(tuple):
    """Statistics of the scored tokens of one request, one entry per scored position.

    Attributes:
        true_logprob: float32, log-probability of the true next token.
        top1_logprob: float32, log-probability of the most probable token over the whole
            vocabulary (so ``top1_logprob >= true_logprob``).
        top1_is_true: bool, whether the most probable token is the true token.

    The arrays are 1-D, of equal length, read-only copies; instances are immutable and compare
    by identity. As a value the response is the pair ``(sum of true_logprob, all of
    top1_is_true)``, the harness's ``loglikelihood`` response for the same scored tokens: every
    consumer of responses the harness ships reads it as one (the samples file writes the pair as
    JSON; the W&B logger indexes responses as the task's output type has them).
    """

    true_logprob: np.ndarray
    top1_logprob: np.ndarray
    top1_is_true: np.ndarray

    def __new__(
        cls, true_logprob: np.ndarray, top1_logprob: np.ndarray, top1_is_true: np.ndarray
    ) -> "TokenStats":
        arrays = {
            "true_logprob": np.array(true_logprob, dtype=np.float32),
            "top1_logprob": np.array(top1_logprob, dtype=np.float32),
            "top1_is_true": np.array(top1_is_true, dtype=np.bool_),
        }
        shapes = {name: a.shape for name, a in arrays.items()}
        if any(len(s) != 1 for s in shapes.values()) or len(set(shapes.values())) != 1:
            raise ValueError(f"TokenStats needs three 1-D arrays of equal length, got {shapes}")
        pair = (
            float(arrays["true_logprob"].sum(dtype=np.float64)),
            bool(arrays["top1_is_true"].all()),
        )
        stats = super().__new__(cls, pair)
        for name, a in arrays.items():
            a.flags.writeable = False
            object.__setattr__(stats, name, a)
        return stats

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"TokenStats is immutable (cannot set {name!r})")

    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__

    def __getnewargs__(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # type: ignore[override]
        return (self.true_logprob, self.top1_logprob, self.top1_is_true)

    @property
    def n(self) -> int:
        """The number of scored positions."""
        return int(self.true_logprob.shape[0])

    def __repr__(self) -> str:
        if self.n == 0:
            return "TokenStats(n=0)"
        total = float(self.true_logprob.sum(dtype=np.float64))
        accuracy = float(self.top1_is_true.mean())
        return f"TokenStats(n={self.n}, sum_true_logprob={total:.4f}, top1_acc={accuracy:.4f})"

    @classmethod
    def concatenate(cls, parts: Sequence["TokenStats"]) -> "TokenStats":
        """The positions of ``parts`` one after another."""
        if len(parts) == 1:
            return parts[0]
        return cls(
            np.concatenate([p.true_logprob for p in parts]),
            np.concatenate([p.top1_logprob for p in parts]),
            np.concatenate([p.top1_is_true for p in parts]),
        )

    def tail(self, k: int) -> "TokenStats":
        """The last ``k`` positions (``1 <= k <= n``)."""
        if k == self.n:
            return self
        return TokenStats(self.true_logprob[-k:], self.top1_logprob[-k:], self.top1_is_true[-k:])


class UnsupportedBackendError(NotImplementedError):
    """The model backend (or its configuration) cannot answer ``token_stats`` requests."""


def _supported_list() -> str:
    return ", ".join(f"{name} ({path})" for name, path in SUPPORTED_BACKENDS.items())


def _unsupported(lm: object, why: str = "") -> UnsupportedBackendError:
    cls = type(lm)
    reason = f": {why}" if why else ""
    return UnsupportedBackendError(
        f"model backend {cls.__module__}.{cls.__qualname__} cannot answer {REQUEST_TYPE!r} "
        "requests (per-token log-probabilities with the top-1 token over the whole "
        f"vocabulary){reason}. Supported backends: {_supported_list()}."
    )


# --------------------------------------------------------------------------------------------
# Requests -> windows (shared by every backend)
# --------------------------------------------------------------------------------------------


def _clip(text: str, width: int = 40, *, tail: bool = False) -> str:
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
        meta.append(f"context {_clip(args[0], tail=True)}, continuation {_clip(args[1])}")
    return f"{REQUEST_TYPE} request{where} ({'; '.join(meta)})"


@dataclass
class _Plan:
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


def _plan_windows(
    lm: Any, requests: Sequence[Instance], *, rolling_max_seq_len: int, seq_cap: int
) -> _Plan:
    """Tokenise and window every request exactly as the backend's loglikelihood(_rolling) does.

    ``rolling_max_seq_len`` is the ``max_seq_len`` the backend's ``loglikelihood_rolling`` passes
    to ``get_rolling_token_windows``; ``seq_cap`` is the longest token sequence (context +
    continuation) its ``_loglikelihood_tokens`` keeps after left truncation.
    """
    plan = _Plan()
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


def _assemble(plan: _Plan, window_stats: Sequence[TokenStats | None]) -> list[TokenStats]:
    """One TokenStats per request from the stats of its windows."""
    out = []
    for r in range(len(plan.bounds) - 1):
        parts = window_stats[plan.bounds[r] : plan.bounds[r + 1]]
        assert all(p is not None for p in parts), "every window must have been scored"
        out.append(TokenStats.concatenate(parts))  # type: ignore[arg-type]
    return out


def _sorted_sequences(
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


# --------------------------------------------------------------------------------------------
# hf: lm_eval.models.huggingface.HFLM
# --------------------------------------------------------------------------------------------


def _check_hf_backend(lm: Any) -> None:
    """Refuse hf models that are not causal (decoder-only) text models."""
    if getattr(lm, "backend", "causal") != "causal":
        raise _unsupported(lm, f"only causal (decoder-only) models, this one is {lm.backend!r}")
    if getattr(lm, "MULTIMODAL", False):
        raise _unsupported(lm, "multimodal hf models are not supported")


def hf_token_stats(
    self: Any, requests: list[Instance], disable_tqdm: bool = False
) -> list[TokenStats]:
    """``token_stats`` for ``HFLM`` (installed as ``HFLM.token_stats``).

    Windows are those of ``HFLM.loglikelihood_rolling`` / ``_loglikelihood_tokens``: window length
    ``self.max_length``, one forward pass row per window. Rows whose model input is identical
    (e.g. the single-token answer options of one prompt) share one row when the backend's
    ``logits_cache`` is on, as the harness shares them for one-token continuations. Rows are
    sorted longest first and batched by ``self.batch_size`` (``"auto"``: detected once for the
    full window, as ``loglikelihood_rolling`` does). Statistics are reduced from the logits in at
    least float32 (``softmax_dtype`` float64 is honoured), top-1 = first argmax over the logits'
    whole last dimension, on the logits' device. With ``world_size > 1`` every rank runs the same
    number of rows (padded with throw-away rows), as ``loglikelihood_rolling`` pads its windows.

    Returns one :class:`TokenStats` per request, in request order.
    Raises ValueError for a request with nothing to score; UnsupportedBackendError for a seq2seq
    or multimodal model.
    """
    import torch

    _check_hf_backend(self)
    max_length = int(self.max_length)
    plan = _plan_windows(self, requests, rolling_max_seq_len=max_length, seq_cap=max_length + 1)
    # model input of a window = its sequence minus the last token (see _loglikelihood_tokens)
    rows, row_of_window = _sorted_sequences(
        [tuple(seq[:-1]) for seq in plan.seqs], share=bool(getattr(self, "logits_cache", True))
    )
    windows_of_row: list[list[int]] = [[] for _ in rows]
    for w, row in enumerate(row_of_window):
        windows_of_row[row].append(w)

    batch_size = self.batch_size
    if batch_size == "auto":
        batch_size = self._detect_batch_size()  # a collective op under data parallelism
        eval_logger.info("%s: detected batch size %d", REQUEST_TYPE, batch_size)
    batch_size = int(batch_size)

    n_real = len(rows)
    if self.world_size > 1:
        count = torch.tensor(n_real, device=self.device)
        gathered = self.all_gather(count).cpu().detach().numpy().tolist()
        padding = max(gathered) - n_real
        filler = rows[0] if rows else (self.prefix_token_id,)
        rows = rows + [filler] * padding
        windows_of_row += [[] for _ in range(padding)]

    compute_dtype = torch.float32
    softmax_dtype = getattr(self, "softmax_dtype", None)
    if softmax_dtype is not None and softmax_dtype.itemsize > compute_dtype.itemsize:
        compute_dtype = softmax_dtype

    window_stats: list[TokenStats | None] = [None] * len(plan.seqs)
    n_batches = math.ceil(len(rows) / batch_size)
    for start in tqdm(
        range(0, len(rows), batch_size),
        total=n_batches,
        desc=f"Running {REQUEST_TYPE} requests",
        disable=disable_tqdm or self.rank != 0,
    ):
        batch = range(start, min(start + batch_size, len(rows)))
        _hf_score_batch(
            self,
            [rows[i] for i in batch],
            [[(w, plan.seqs[w], plan.ks[w]) for w in windows_of_row[i]] for i in batch],
            compute_dtype,
            window_stats,
        )
    return _assemble(plan, window_stats)


def _hf_score_batch(
    lm: Any,
    inputs: Sequence[Sequence[int]],
    windows: Sequence[Sequence[tuple[int, list[int], int]]],
    compute_dtype: Any,
    window_stats: list[TokenStats | None],
) -> None:
    """One forward pass over right-padded ``inputs``; fills ``window_stats`` for ``windows[b]``
    (window index, sequence, number of scored tokens) of each row ``b``."""
    import torch

    lengths = np.fromiter((len(x) for x in inputs), dtype=np.int64, count=len(inputs))
    batch = np.zeros((len(inputs), int(lengths.max())), dtype=np.int64)
    for b, x in enumerate(inputs):
        batch[b, : len(x)] = x
    logits = lm._model_call(torch.from_numpy(batch).to(lm.device))  # [B, T', V]
    # T' > T when the model prepends virtual tokens (prompt tuning): _loglikelihood_tokens shifts
    # the scored slice by the difference in the same way.
    offset = logits.shape[1] - batch.shape[1]

    flat = [(b, w, seq, k) for b, row in enumerate(windows) for (w, seq, k) in row]
    if not flat:  # a padding row (data parallelism): the forward pass was all that was needed
        return
    ks = np.fromiter((k for _, _, _, k in flat), dtype=np.int64, count=len(flat))
    row_index = np.repeat(np.fromiter((b for b, *_ in flat), dtype=np.int64), ks)
    # row b's logits at positions len_b - k .. len_b - 1 predict the window's last k tokens
    first = lengths[[b for b, *_ in flat]] - ks + offset
    starts = np.cumsum(ks) - ks
    position = np.arange(int(ks.sum())) - np.repeat(starts, ks) + np.repeat(first, ks)
    target = np.concatenate([np.asarray(seq[-k:], dtype=np.int64) for _, _, seq, k in flat])

    device = logits.device
    row_t = torch.from_numpy(row_index).to(device)
    pos_t = torch.from_numpy(position).to(device)
    tgt_t = torch.from_numpy(target).to(device)
    true_lp = torch.empty(target.shape[0], dtype=compute_dtype, device=device)
    top1_lp = torch.empty_like(true_lp)
    hit = torch.empty(target.shape[0], dtype=torch.bool, device=device)
    step = max(1, _REDUCE_ELEMENTS // logits.shape[-1])
    for i in range(0, target.shape[0], step):
        j = i + step
        block = logits[row_t[i:j], pos_t[i:j]].to(compute_dtype)  # [m, V]
        log_norm = torch.logsumexp(block, dim=-1)
        best, argmax = block.max(dim=-1)  # first maximal index on ties, like argmax
        true_lp[i:j] = block.gather(1, tgt_t[i:j, None]).squeeze(1) - log_norm
        top1_lp[i:j] = best - log_norm
        hit[i:j] = argmax == tgt_t[i:j]
    del logits
    true_np = true_lp.float().cpu().numpy()
    top1_np = top1_lp.float().cpu().numpy()
    hit_np = hit.cpu().numpy()
    for (_, w, _, k), s in zip(flat, starts.tolist(), strict=True):
        window_stats[w] = TokenStats(true_np[s : s + k], top1_np[s : s + k], hit_np[s : s + k])


# --------------------------------------------------------------------------------------------
# vllm: lm_eval.models.vllm_causallms.VLLM
# --------------------------------------------------------------------------------------------


def _logprob_value(entry: Any) -> float:
    # vLLM >= 0.4 gives Logprob(logprob, rank, decoded_token); older versions a bare float
    return float(getattr(entry, "logprob", entry))


def stats_from_prompt_logprobs(
    prompt_logprobs: Sequence[Mapping[int, Any] | None],
    prompt_tokens: Sequence[int],
    start: int,
) -> TokenStats:
    """Statistics of ``prompt_tokens[start:]`` from a vLLM ``RequestOutput.prompt_logprobs``.

    ``prompt_logprobs[i]`` (None for i = 0) maps token id -> ``Logprob`` (or float) at prompt
    position i, with ``SamplingParams(prompt_logprobs=1)``: the true token ``prompt_tokens[i]``
    and the rank-1 token. top1_logprob = the largest log-probability in the entry;
    top1_is_true = the true token's rank is 1 (ties included) where vLLM reports ranks, else the
    true token's log-probability is the largest.

    Raises ValueError if the lengths disagree, ``start < 1``, or an entry lacks the true token or
    (rank > 1 with no other token) the top-1 token.
    """
    n = len(prompt_tokens)
    if len(prompt_logprobs) != n:
        raise ValueError(
            f"vLLM returned prompt logprobs for {len(prompt_logprobs)} positions, "
            f"the prompt has {n} tokens"
        )
    if not 1 <= start <= n:
        raise ValueError(f"start must be in 1..{n}, got {start}")
    k = n - start
    true_lp = np.empty(k, dtype=np.float64)
    top1_lp = np.empty(k, dtype=np.float64)
    hit = np.empty(k, dtype=np.bool_)
    for j in range(k):
        i = start + j
        entry = prompt_logprobs[i]
        token = prompt_tokens[i]
        if not entry or token not in entry:
            raise ValueError(
                f"vLLM returned no prompt logprob for token {token} at position {i}: "
                "token_stats needs SamplingParams(prompt_logprobs>=1)"
            )
        true_value = _logprob_value(entry[token])
        best = max(_logprob_value(v) for v in entry.values())
        rank = getattr(entry[token], "rank", None)
        if rank is not None:
            if rank != 1 and len(entry) < 2:
                raise ValueError(
                    f"vLLM prompt logprobs at position {i} hold the true token (rank {rank}) "
                    "but not the top-1 token: token_stats needs prompt_logprobs>=1"
                )
            hit[j] = rank == 1
        else:
            hit[j] = true_value >= best
        true_lp[j] = true_value
        top1_lp[j] = max(best, true_value)
    return TokenStats(true_lp, top1_lp, hit)


def _check_vllm_backend(lm: Any) -> None:
    """Refuse multimodal vLLM models."""
    if getattr(lm, "MULTIMODAL", False):
        raise _unsupported(lm, "multimodal vLLM models are not supported")


def vllm_token_stats(
    self: Any, requests: list[Instance], disable_tqdm: bool = False
) -> list[TokenStats]:
    """``token_stats`` for vLLM (installed as ``VLLM.token_stats``).

    Windows are those of ``VLLM.loglikelihood_rolling`` (``max_seq_len = max_length - 2``) and
    ``VLLM._loglikelihood_tokens`` (sequences left-truncated to ``max_length - 1``). Each distinct
    sequence is one prompt sent through the backend's own ``_model_generate(generate=False)``
    (``prompt_logprobs=1, max_tokens=1``; data parallelism through its ray replicas), longest
    first, all at once for ``batch_size="auto"`` else in chunks of ``batch_size``.
    """
    _check_vllm_backend(self)
    max_length = int(self.max_length)
    plan = _plan_windows(self, requests, rolling_max_seq_len=max_length - 2, seq_cap=max_length - 1)
    prompts, prompt_of_window = _sorted_sequences([tuple(seq) for seq in plan.seqs])
    start_of_prompt = [len(p) for p in prompts]
    for w, p in enumerate(prompt_of_window):
        start_of_prompt[p] = min(start_of_prompt[p], len(plan.seqs[w]) - plan.ks[w])
    chunk = len(prompts) if self.batch_size == "auto" else int(self.batch_size)
    prompt_stats: list[TokenStats] = []
    for i in tqdm(
        range(0, len(prompts), max(chunk, 1)),
        desc=f"Running {REQUEST_TYPE} requests",
        disable=disable_tqdm,
    ):
        batch = prompts[i : i + chunk]
        outputs = self._model_generate(requests=[list(p) for p in batch], generate=False)
        for j, (prompt, output) in enumerate(zip(batch, outputs, strict=True)):
            prompt_stats.append(
                stats_from_prompt_logprobs(output.prompt_logprobs, prompt, start_of_prompt[i + j])
            )
    return _assemble(
        plan, [prompt_stats[p].tail(k) for p, k in zip(prompt_of_window, plan.ks, strict=True)]
    )


# --------------------------------------------------------------------------------------------
# local-completions: lm_eval.models.openai_completions.LocalCompletionsAPI
# --------------------------------------------------------------------------------------------

# Tokens each completions request lets the server generate after the echoed prompt. 1, as the
# harness's own loglikelihood payload asks: every OpenAI-compatible server honours it, whereas
# max_tokens=0 means "echo only" to OpenAI and vLLM but "no limit" to llama-cpp-python.
_MAX_TOKENS = 1
# HTTP statuses with which servers reject a request's format (llama-cpp-python answers 500).
_REJECTED_FORMAT_STATUS = (400, 422, 500)
# Alignment self-check: the largest difference (nats) between the echoed top-1 log-probability
# of a position and the one the server reports when it generates that position's token.
_ALIGNMENT_TOLERANCE = 0.05
_SHIFTED_ECHO_BUG = "abetlen/llama-cpp-python#1983 and #1276"


def _echo_length_error(
    logprobs: Mapping[str, Any], n_entries: int, n_prompt_tokens: int, prompt_chars: int | None
) -> str:
    """Why a choice of ``n_entries`` log-probability entries cannot be the echo of a prompt of
    ``n_prompt_tokens`` tokens followed by at most ``_MAX_TOKENS`` generated ones.

    Token-id prompts are echoed as sent, so the count alone tells. For a text prompt of
    ``prompt_chars`` characters, the entries whose ``text_offset`` lies inside the prompt are
    the server's own tokens of it, and the others are generated.
    """
    head = (
        f"the completions response holds {n_entries} tokens for a prompt of {n_prompt_tokens} "
        "tokens"
    )
    too_many = (
        f"more than the max_tokens={_MAX_TOKENS} asked for: the server does not honour max_tokens"
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
    ``n_prompt_tokens`` entries are the prompt's positions, and at most ``_MAX_TOKENS`` generated
    entries may follow (servers may leave the generated token out). ``prompt_chars`` is the
    prompt's length when it went out as text (the server tokenised it); it serves to tell, in the
    error, generated tokens from a different tokenisation.

    top1_logprob = the largest value in ``top_logprobs`` (raised to the true token's value if a
    server reports the true token above it); top1_is_true = the true token's log-probability is
    that maximum, the comparison the harness's own completions ``parse_logprobs`` makes.

    Raises ValueError if the response holds fewer than ``n_prompt_tokens`` or more than
    ``n_prompt_tokens + _MAX_TOKENS`` entries (naming which), or a scored position lacks its
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
    if not n_prompt_tokens <= n <= n_prompt_tokens + _MAX_TOKENS:
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


def _sorted_choices(response: Mapping[str, Any], n_prompts: int) -> list[Mapping[str, Any]]:
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
            _sorted_choices(response, len(n_prompt_tokens)),
            n_prompt_tokens,
            starts,
            chars,
            strict=True,
        )
    ]


def _check_completions_backend(lm: Any) -> None:
    """Refuse completions backends that cannot echo per-position log-probabilities."""
    from lm_eval.models import openai_completions as oc

    own = oc.LocalCompletionsAPI
    for name in ("_create_payload", "parse_logprobs"):
        if getattr(type(lm), name) is not getattr(own, name):
            raise _unsupported(
                lm,
                f"it overrides {name} of the completions API (chat or other request formats "
                "cannot echo the prompt's log-probabilities)",
            )
    if isinstance(lm, oc.OpenAICompletionsAPI) and lm.model not in ("babbage-002", "davinci-002"):
        raise _unsupported(
            lm, "OpenAI's API echoes prompt log-probabilities only for babbage-002, davinci-002"
        )
    if lm.tokenizer is None:
        raise _unsupported(
            lm,
            "it has no tokenizer (tokenizer_backend=None), which is needed to split context and "
            "continuation and to window documents; set tokenizer_backend and tokenizer",
        )


def _completions_payload(lm: Any, prompts: Sequence[Sequence[int]], *, echo: bool) -> dict:
    """The backend's own loglikelihood payload for ``prompts`` (token ids, or decoded text with
    ``tokenized_requests=False``, as its ``create_message`` sends them), asking for ``echo``,
    ``logprobs=1`` and ``max_tokens=_MAX_TOKENS``."""
    messages = lm.create_message([list(p) for p in prompts])
    body = lm._create_payload(messages, generate=False, seed=lm._seed, eos=lm.eos_string)
    body.update(echo=echo, logprobs=1, max_tokens=_MAX_TOKENS)
    return body


def _prompt_chars(payload: Mapping[str, Any]) -> list[int] | None:
    """The character length of each prompt of ``payload`` if they are text, else None."""
    prompt = payload["prompt"]
    texts = [prompt] if isinstance(prompt, str) else prompt
    return [len(t) for t in texts] if isinstance(texts[0], str) else None


def _post_completions(lm: Any, payload: dict[str, Any]) -> dict[str, Any]:
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
        return _post_completions(lm, payload)
    except requests.HTTPError as error:
        arguments = _one_text_prompt_arguments(lm)
        status = getattr(error.response, "status_code", None)
        if not arguments or status not in _REJECTED_FORMAT_STATUS:
            raise
        raise UnsupportedBackendError(
            f"the completions server at {lm.base_url} rejected the first {REQUEST_TYPE} request "
            f"(HTTP {status}: {_clip(error.response.text, 300)}). A server that takes one text "
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
    for prompt, choice in zip(prompts, _sorted_choices(response, len(prompts)), strict=True):
        j = _alignment_probe(choice["logprobs"]["top_logprobs"], len(prompt), lm.eos_string)
        if j is None:
            continue
        echoed = _top1(choice["logprobs"]["top_logprobs"][j])
        body = _completions_payload(lm, [prompt[:j]], echo=False)
        generated = _sorted_choices(_post_completions(lm, body), 1)[0].get("logprobs") or {}
        tops = generated.get("top_logprobs") or [None]
        got = _top1(tops[0]) if tops[0] else None
        if (
            got is not None
            and got[0] == echoed[0]
            and abs(got[1] - echoed[1]) <= _ALIGNMENT_TOLERANCE
        ):
            return
        seen = "no token" if got is None else f"{got[0]!r} at log-probability {got[1]:.4f}"
        raise _unsupported(
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


def completions_token_stats(
    self: Any, requests: list[Instance], disable_tqdm: bool = False
) -> list[TokenStats]:
    """``token_stats`` for OpenAI-compatible completions servers (``LocalCompletionsAPI``).

    Windows are those of ``TemplateAPI.loglikelihood_rolling`` (``max_seq_len = max_length - 1``,
    where the backend's ``max_length`` is already the model arg minus one) and of its
    ``batch_loglikelihood_requests`` (sequences left-truncated to ``max_length``), tokenised with
    the backend's tokenizer. Each distinct sequence is one prompt; ``batch_size`` prompts go in one
    request built by the backend's own ``create_message`` (token ids, or decoded text when
    ``tokenized_requests=False``) and ``_create_payload``, with ``echo=True``, ``logprobs=1``
    and ``max_tokens=1`` (the generated token is dropped).

    The first request goes alone and is followed by the alignment self-check
    (:func:`_check_alignment`, one more request); the others then run ``num_concurrent`` at a
    time. The first failure raises at once, without waiting for requests in flight.

    Raises UnsupportedBackendError for a backend :func:`check_backend` refuses, a server that
    rejects the first request's format (naming the model arguments to set) or fails the
    self-check; ValueError for a response that is not the echo of its prompts.
    """
    _check_completions_backend(self)
    plan = _plan_windows(
        self, requests, rolling_max_seq_len=self.max_length - 1, seq_cap=self.max_length
    )
    prompts, prompt_of_window = _sorted_sequences([tuple(seq) for seq in plan.seqs])
    start_of_prompt = [len(p) for p in prompts]
    for w, p in enumerate(prompt_of_window):
        start_of_prompt[p] = min(start_of_prompt[p], len(plan.seqs[w]) - plan.ks[w])
    size = max(1, int(self._batch_size))
    chunks = [range(i, min(i + size, len(prompts))) for i in range(0, len(prompts), size)]
    # payloads are built here (the tokenizer stays on this thread); only the POSTs run in parallel
    payloads = [_completions_payload(self, [prompts[i] for i in c], echo=True) for c in chunks]
    chunk_stats: list[list[TokenStats]] = [[] for _ in chunks]
    with tqdm(total=len(prompts), desc="Requesting API", disable=disable_tqdm) as progress:

        def receive(c: int, response: dict[str, Any]) -> None:
            chunk_stats[c] = parse_completions_response(
                response,
                [len(prompts[i]) for i in chunks[c]],
                [start_of_prompt[i] for i in chunks[c]],
                prompt_chars=_prompt_chars(payloads[c]),
            )
            progress.update(len(chunks[c]))

        if payloads:
            first = _post_first(self, payloads[0])
            receive(0, first)
            _check_alignment(self, [prompts[i] for i in chunks[0]], first)
            _post_concurrently(
                lambda body: _post_completions(self, body),
                payloads[1:],
                max(1, int(getattr(self, "_concurrent", 1))),
                lambda c, response: receive(c + 1, response),
            )
    prompt_stats = [stats for chunk in chunk_stats for stats in chunk]
    return _assemble(
        plan, [prompt_stats[p].tail(k) for p, k in zip(prompt_of_window, plan.ks, strict=True)]
    )


# --------------------------------------------------------------------------------------------
# Which backends can answer, the default and installation
# --------------------------------------------------------------------------------------------


def _install_late_vllm() -> None:
    """Install ``VLLM.token_stats`` if the harness imported its vLLM module after this one."""
    vllm_module = sys.modules.get(_VLLM_MODULE)
    if vllm_module is not None:
        _install_on(vllm_module.VLLM, vllm_token_stats)


def _refuse_backend(lm: Any) -> None:
    """The check of a backend without a ``token_stats`` of its own: always refused."""
    raise _unsupported(lm)


def _lm_token_stats(
    self: Any, requests: list[Instance], disable_tqdm: bool = False
) -> list[TokenStats]:
    """Default ``LM.token_stats``: unsupported, except for a vLLM backend whose module was
    imported after this one (then the vLLM method is installed and used)."""
    _install_late_vllm()
    method = getattr(type(self), REQUEST_TYPE)
    if method is not _lm_token_stats:
        return method(self, requests, disable_tqdm=disable_tqdm)
    raise _unsupported(self)


# The configuration check of each token_stats this module installs (each applies its own first),
# by function name: a second copy of this module recognises the first copy's functions.
_BACKEND_CHECKS: dict[str, Callable[[Any], None]] = {
    _lm_token_stats.__name__: _refuse_backend,
    hf_token_stats.__name__: _check_hf_backend,
    vllm_token_stats.__name__: _check_vllm_backend,
    completions_token_stats.__name__: _check_completions_backend,
}


def check_backend(lm: object) -> None:
    """Raise UnsupportedBackendError if ``lm`` cannot answer ``token_stats`` requests.

    The error is the one ``lm.token_stats(requests)`` would raise: for a backend without the
    request type (the harness's default, e.g. ``dummy``), and for a configuration its
    ``token_stats`` refuses (seq2seq or multimodal hf models, multimodal vLLM, the completions
    backends :func:`_check_completions_backend` refuses). A ``CachingLM`` (``--use_cache``) is
    checked as the model it wraps; a ``token_stats`` this module did not install is trusted.
    Sends no request (the completions alignment self-check runs with a call's first request).
    """
    while isinstance(lm, CachingLM):
        lm = lm.lm
    _install_late_vllm()
    method = getattr(type(lm), REQUEST_TYPE, None)
    if method is None:
        _refuse_backend(lm)
    elif getattr(method, _MARK, False):
        _BACKEND_CHECKS[method.__name__](lm)


def _install_on(cls: type, function: Callable[..., list[TokenStats]]) -> None:
    existing = cls.__dict__.get(REQUEST_TYPE)
    if existing is None:
        setattr(function, _MARK, True)
        setattr(cls, REQUEST_TYPE, function)
    elif not getattr(existing, _MARK, False):
        raise RuntimeError(
            f"{cls.__module__}.{cls.__qualname__} already has a {REQUEST_TYPE!r} attribute that "
            "calib_tasks did not install; refusing to replace it"
        )


def install() -> None:
    """Install ``token_stats`` on the harness's classes (idempotent; done at import)."""
    from lm_eval.models.huggingface import HFLM

    _install_on(LM, _lm_token_stats)
    _install_on(HFLM, hf_token_stats)
    try:
        from lm_eval.models.openai_completions import LocalCompletionsAPI
    except ImportError as error:  # the api extra's packages are missing
        eval_logger.debug("local-completions not available for %s: %s", REQUEST_TYPE, error)
    else:
        _install_on(LocalCompletionsAPI, completions_token_stats)
    _install_late_vllm()


install()
