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

So ``sum(true_logprob)`` is the backend's ``loglikelihood_rolling`` (resp. ``loglikelihood``)
value, and ``all(top1_is_true)`` its ``is_greedy``.

Importing this module installs ``token_stats(self, requests, disable_tqdm=False)`` on

* ``lm_eval.models.huggingface.HFLM`` (``hf``): log-softmax of the forward pass on the backend's
  device, top-1 over the whole output vocabulary, the backend's batch size, data parallel;
* ``lm_eval.models.vllm_causallms.VLLM`` (``vllm``): ``prompt_logprobs=1`` (the true token and the
  top-1 token at every prompt position); installed at import when that module is already loaded,
  otherwise on first use (vllm is imported only by the harness, never by this module);
* ``lm_eval.models.openai_completions.LocalCompletionsAPI`` (``local-completions``): one
  ``echo=True, logprobs=1, max_tokens=0`` completions request per window;

and a default on ``lm_eval.api.model.LM`` that raises :class:`UnsupportedBackendError`. The
evaluator dispatches with ``getattr(lm, "token_stats")(requests)``; ``CachingLM`` (``--use_cache``)
passes the method through uncached. Installation is idempotent and touches no existing method.

The response parsers :func:`stats_from_prompt_logprobs` (vLLM) and
:func:`stats_from_completion_logprobs` / :func:`parse_completions_response` (OpenAI completions)
are pure functions of the response objects.
"""

# No ``from __future__ import annotations``: the harness's ``!function`` file loader runs a module
# before putting it in sys.modules, and dataclasses cannot resolve string annotations then.
import logging
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from lm_eval import utils as harness_utils
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from tqdm import tqdm

__all__ = [
    "REQUEST_TYPE",
    "SUPPORTED_BACKENDS",
    "TokenStats",
    "UnsupportedBackendError",
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


@dataclass(frozen=True, eq=False, repr=False)
class TokenStats:
    """Statistics of the scored tokens of one request, one entry per scored position.

    Attributes:
        true_logprob: float32, log-probability of the true next token.
        top1_logprob: float32, log-probability of the most probable token over the whole
            vocabulary (so ``top1_logprob >= true_logprob``).
        top1_is_true: bool, whether the most probable token is the true token.

    The arrays are 1-D, of equal length, read-only copies. ``repr``/``str`` print only the length
    and two summary numbers (the harness writes ``str(response)`` into the samples file).
    Instances compare by identity.
    """

    true_logprob: np.ndarray
    top1_logprob: np.ndarray
    top1_is_true: np.ndarray

    def __post_init__(self) -> None:
        arrays = {
            "true_logprob": np.array(self.true_logprob, dtype=np.float32),
            "top1_logprob": np.array(self.top1_logprob, dtype=np.float32),
            "top1_is_true": np.array(self.top1_is_true, dtype=np.bool_),
        }
        shapes = {name: a.shape for name, a in arrays.items()}
        if any(len(s) != 1 for s in shapes.values()) or len(set(shapes.values())) != 1:
            raise ValueError(f"TokenStats needs three 1-D arrays of equal length, got {shapes}")
        for name, a in arrays.items():
            a.flags.writeable = False
            object.__setattr__(self, name, a)

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
            plan.ks.append(len(continuation_enc))
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

    if getattr(self, "backend", "causal") != "causal":
        raise _unsupported(self, f"only causal (decoder-only) models, this one is {self.backend!r}")
    if getattr(self, "MULTIMODAL", False):
        raise _unsupported(self, "multimodal hf models are not supported")

    max_length = int(self.max_length)
    plan = _plan_windows(
        self, requests, rolling_max_seq_len=max_length, seq_cap=max_length + 1
    )
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
    if getattr(self, "MULTIMODAL", False):
        raise _unsupported(self, "multimodal vLLM models are not supported")
    max_length = int(self.max_length)
    plan = _plan_windows(
        self, requests, rolling_max_seq_len=max_length - 2, seq_cap=max_length - 1
    )
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


def stats_from_completion_logprobs(
    logprobs: Mapping[str, Any], n_prompt_tokens: int, start: int, *, exact_length: bool = False
) -> TokenStats:
    """Statistics of prompt positions ``start .. n_prompt_tokens - 1`` of one completions choice.

    ``logprobs`` is ``choice["logprobs"]`` of an ``echo=True, logprobs>=1`` completions response:
    ``tokens``, ``token_logprobs`` (None at position 0), ``top_logprobs`` (None at position 0,
    else token string -> log-probability holding at least the top-1 token) and ``text_offset``,
    one entry per echoed prompt token and then per generated token. With ``exact_length`` (the
    prompt went out as text, so the server tokenised it) the response must echo exactly
    ``n_prompt_tokens`` tokens; otherwise generated tokens after the prompt are ignored.

    top1_logprob = the largest value in ``top_logprobs`` (raised to the true token's value if a
    server reports the true token above it); top1_is_true = the true token's log-probability is
    that maximum, the comparison the harness's own completions ``parse_logprobs`` makes.

    Raises ValueError if the response is shorter than the prompt (or of another length under
    ``exact_length``), or a scored position lacks its log-probability or top_logprobs.
    """
    token_logprobs = logprobs.get("token_logprobs")
    top_logprobs = logprobs.get("top_logprobs")
    if token_logprobs is None or top_logprobs is None:
        raise ValueError(
            "the completions response has no token_logprobs/top_logprobs: token_stats needs "
            "echo=True and logprobs>=1"
        )
    n = len(token_logprobs)
    if n < n_prompt_tokens or (exact_length and n != n_prompt_tokens):
        raise ValueError(
            f"the completions response echoes {n} tokens for a prompt of {n_prompt_tokens} "
            "tokens: the server tokenised the prompt differently from the local tokenizer "
            "(send tokens with tokenized_requests=True, or check the tokenizer)"
            if exact_length
            else f"the completions response echoes {n} tokens, fewer than the prompt's "
            f"{n_prompt_tokens}: the server did not echo the prompt"
        )
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


def parse_completions_response(
    response: Mapping[str, Any],
    n_prompt_tokens: Sequence[int],
    starts: Sequence[int],
    *,
    exact_length: bool = False,
) -> list[TokenStats]:
    """One :class:`TokenStats` per prompt of a batched completions request.

    ``response["choices"]`` are matched to the prompts by their ``index`` (servers may answer out
    of order); prompt ``i`` has ``n_prompt_tokens[i]`` tokens, scored from ``starts[i]`` on (see
    :func:`stats_from_completion_logprobs`).
    """
    choices = sorted(response.get("choices") or [], key=lambda c: c["index"])
    if len(choices) != len(n_prompt_tokens):
        raise ValueError(
            f"the completions response has {len(choices)} choices for {len(n_prompt_tokens)} "
            "prompts"
        )
    return [
        stats_from_completion_logprobs(
            choice.get("logprobs") or {}, n, start, exact_length=exact_length
        )
        for choice, n, start in zip(choices, n_prompt_tokens, starts, strict=True)
    ]


def _check_completions_backend(lm: Any) -> None:
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


def completions_token_stats(
    self: Any, requests: list[Instance], disable_tqdm: bool = False
) -> list[TokenStats]:
    """``token_stats`` for OpenAI-compatible completions servers (``LocalCompletionsAPI``).

    Windows are those of ``TemplateAPI.loglikelihood_rolling`` (``max_seq_len = max_length - 1``,
    where the backend's ``max_length`` is already the model arg minus one) and of its
    ``batch_loglikelihood_requests`` (sequences left-truncated to ``max_length``), tokenised with
    the backend's tokenizer. Each distinct sequence is one prompt; ``batch_size`` prompts go in one
    request built by the backend's own ``create_message`` (token ids, or decoded text when
    ``tokenized_requests=False``) and ``_create_payload``, with ``echo=True``, ``logprobs>=1``
    and ``max_tokens=0`` (the prompt only); ``num_concurrent`` requests run at a time.

    Raises UnsupportedBackendError for a chat or otherwise incompatible subclass, an OpenAI model
    without prompt log-probabilities, or a backend without tokenizer.
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

    def payload(chunk: range) -> dict[str, Any]:
        batch = self.create_message([list(prompts[i]) for i in chunk])  # tokens or decoded text
        body = self._create_payload(batch, generate=False, seed=self._seed, eos=self.eos_string)
        body.update(echo=True, max_tokens=0, logprobs=max(1, int(body.get("logprobs") or 1)))
        return body

    # payloads are built here (the tokenizer stays on this thread); only the POSTs run in parallel
    payloads = [payload(chunk) for chunk in chunks]
    workers = max(1, int(getattr(self, "_concurrent", 1)))
    progress = tqdm(total=len(prompts), desc="Requesting API", disable=disable_tqdm)
    prompt_stats: list[TokenStats] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        responses = pool.map(lambda body: _post_completions(self, body), payloads)
        for chunk, response in zip(chunks, responses, strict=True):  # in chunk order
            prompt_stats += parse_completions_response(
                response,
                [len(prompts[i]) for i in chunk],
                [start_of_prompt[i] for i in chunk],
                exact_length=not self.tokenized_requests,
            )
            progress.update(len(chunk))
    progress.close()
    return _assemble(
        plan, [prompt_stats[p].tail(k) for p, k in zip(prompt_of_window, plan.ks, strict=True)]
    )


# --------------------------------------------------------------------------------------------
# Default and installation
# --------------------------------------------------------------------------------------------


def _lm_token_stats(
    self: Any, requests: list[Instance], disable_tqdm: bool = False
) -> list[TokenStats]:
    """Default ``LM.token_stats``: unsupported, except for a vLLM backend whose module was
    imported after this one (then the vLLM method is installed and used)."""
    vllm_module = sys.modules.get(_VLLM_MODULE)
    if vllm_module is not None and isinstance(self, vllm_module.VLLM):
        _install_on(vllm_module.VLLM, vllm_token_stats)
        return vllm_token_stats(self, requests, disable_tqdm=disable_tqdm)
    raise _unsupported(self)


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
    vllm_module = sys.modules.get(_VLLM_MODULE)
    if vllm_module is not None:
        _install_on(vllm_module.VLLM, vllm_token_stats)


install()
