"""``vllm``: ``lm_eval.models.vllm_causallms.VLLM``, from ``prompt_logprobs=1`` (the true token and
the top-1 token at every prompt position). vllm is imported only by the harness: the method is
installed once the harness has imported its vLLM module."""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from calib_tasks.token_stats.spec import BackendSpec, unsupported
from calib_tasks.token_stats.types import REQUEST_TYPE, TokenStats
from calib_tasks.token_stats.windows import Plan, stats_by_prompt


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


def _check(lm: Any) -> None:
    """Refuse multimodal vLLM models."""
    if getattr(lm, "MULTIMODAL", False):
        raise unsupported(lm, "multimodal vLLM models are not supported")


def _score(lm: Any, plan: Plan, disable_tqdm: bool) -> list[TokenStats]:
    """The windows of ``VLLM.loglikelihood_rolling`` (``max_seq_len = max_length - 2``) and
    ``VLLM._loglikelihood_tokens`` (sequences left-truncated to ``max_length - 1``). Each distinct
    sequence is one prompt sent through the backend's own ``_model_generate(generate=False)``
    (``prompt_logprobs=1, max_tokens=1``; data parallelism through its ray replicas), longest
    first, all at once for ``batch_size="auto"`` else in chunks of ``batch_size``."""
    return stats_by_prompt(
        plan, lambda prompts, starts: _score_prompts(lm, prompts, starts, disable_tqdm)
    )


def _score_prompts(
    lm: Any, prompts: list[tuple[int, ...]], starts: list[int], disable_tqdm: bool
) -> list[TokenStats]:
    chunk = len(prompts) if lm.batch_size == "auto" else int(lm.batch_size)
    stats: list[TokenStats] = []
    for i in tqdm(
        range(0, len(prompts), max(chunk, 1)),
        desc=f"Running {REQUEST_TYPE} requests",
        disable=disable_tqdm,
    ):
        batch = prompts[i : i + chunk]
        outputs = lm._model_generate(requests=[list(p) for p in batch], generate=False)
        for j, (prompt, output) in enumerate(zip(batch, outputs, strict=True)):
            stats.append(stats_from_prompt_logprobs(output.prompt_logprobs, prompt, starts[i + j]))
    return stats


VLLM = BackendSpec(
    name="vllm",
    class_path="lm_eval.models.vllm_causallms.VLLM",
    check=_check,
    rolling_max_seq_len=lambda lm: int(lm.max_length) - 2,
    seq_cap=lambda lm: int(lm.max_length) - 1,
    score=_score,
    lazy=True,
)
vllm_token_stats = VLLM.token_stats
