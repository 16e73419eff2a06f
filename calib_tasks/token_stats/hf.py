"""``hf``: ``lm_eval.models.huggingface.HFLM``, from the log-softmax of its forward pass
(the logits of the scored positions only, projected from the final hidden states: see
``hf_projection``)."""

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from calib_tasks.token_stats.hf_projection import Projection
from calib_tasks.token_stats.spec import BackendSpec, unsupported
from calib_tasks.token_stats.types import REQUEST_TYPE, TokenStats
from calib_tasks.token_stats.windows import Plan, sorted_sequences

eval_logger = logging.getLogger(__name__)

# Upper bound on the elements of one float32 block of logits reduced at once (128 MiB).
_REDUCE_ELEMENTS = 1 << 25


def _check(lm: Any) -> None:
    """Refuse hf models that are not causal (decoder-only) text models."""
    if getattr(lm, "backend", "causal") != "causal":
        raise unsupported(lm, f"only causal (decoder-only) models, this one is {lm.backend!r}")
    if getattr(lm, "MULTIMODAL", False):
        raise unsupported(lm, "multimodal hf models are not supported")


def score_windows(
    lm: Any, plan: Plan, disable_tqdm: bool, *, split_projection: bool = True
) -> list[TokenStats | None]:
    """The windows of ``HFLM.loglikelihood_rolling`` / ``_loglikelihood_tokens`` (window length
    ``lm.max_length``), one forward pass row per window.

    Rows whose model input is identical (e.g. the single-token answer options of one prompt)
    share one row when the backend's ``logits_cache`` is on, as the harness shares them for
    one-token continuations. Rows are sorted longest first and batched by ``lm.batch_size``
    (``"auto"``: detected once for the full window, see ``detect_batch_size``). Statistics are
    reduced from the logits in at least float32 (``softmax_dtype`` float64 is honoured), top-1 =
    first argmax over the logits' whole last dimension, on the logits' device. With
    ``world_size > 1`` every rank runs the same number of rows (padded with throw-away rows), as
    ``loglikelihood_rolling`` pads its windows.

    ``split_projection``: the logits of only the scored positions are computed from the final
    hidden states, ``_REDUCE_ELEMENTS`` at a time (``hf_projection``; extra memory
    O(B*T*H + chunk*V)); False, or a model that cannot be split so: from the full ``[B, T, V]``
    logits of ``_model_call`` (extra memory O(B*T*V)).
    """
    import torch

    projection = Projection(lm, split=split_projection)
    # model input of a window = its sequence minus the last token (see _loglikelihood_tokens)
    rows, row_of_window = sorted_sequences(
        [tuple(seq[:-1]) for seq in plan.seqs], share=bool(getattr(lm, "logits_cache", True))
    )
    windows_of_row: list[list[int]] = [[] for _ in rows]
    for w, row in enumerate(row_of_window):
        windows_of_row[row].append(w)

    batch_size = lm.batch_size
    if batch_size == "auto":
        batch_size = detect_batch_size(lm, projection)
        eval_logger.info("%s: detected batch size %d", REQUEST_TYPE, batch_size)
    batch_size = int(batch_size)

    n_real = len(rows)
    if lm.world_size > 1:
        count = torch.tensor(n_real, device=lm.device)
        gathered = lm.all_gather(count).cpu().detach().numpy().tolist()
        padding = max(gathered) - n_real
        filler = rows[0] if rows else (lm.prefix_token_id,)
        rows = rows + [filler] * padding
        windows_of_row += [[] for _ in range(padding)]

    compute_dtype = _compute_dtype(lm)
    window_stats: list[TokenStats | None] = [None] * len(plan.seqs)
    n_batches = math.ceil(len(rows) / batch_size)
    for start in tqdm(
        range(0, len(rows), batch_size),
        total=n_batches,
        desc=f"Running {REQUEST_TYPE} requests",
        disable=disable_tqdm or lm.rank != 0,
    ):
        batch = range(start, min(start + batch_size, len(rows)))
        _score_batch(
            lm,
            projection,
            [rows[i] for i in batch],
            [[(w, plan.seqs[w], plan.ks[w]) for w in windows_of_row[i]] for i in batch],
            compute_dtype,
            window_stats,
        )
    return window_stats


def _compute_dtype(lm: Any) -> Any:
    """float32, or the backend's ``softmax_dtype`` when that is wider."""
    import torch

    softmax_dtype = getattr(lm, "softmax_dtype", None)
    if softmax_dtype is not None and softmax_dtype.itemsize > torch.float32.itemsize:
        return softmax_dtype
    return torch.float32


def detect_batch_size(lm: Any, projection: Projection) -> int:
    """``batch_size: auto`` for token statistics: the largest batch, from ``lm.max_batch_size``
    down by halving on out-of-memory (accelerate's ``find_executable_batch_size``, as
    ``HFLM._detect_batch_size``), whose forward pass over full windows of ``lm.max_length``
    tokens and the reduction of one chunk of logits fit. Under a split projection that is the
    split's footprint, not the full logits'; otherwise ``HFLM._detect_batch_size`` itself. Under
    data parallelism, the smallest over the ranks."""
    import torch
    from accelerate.utils import find_executable_batch_size

    if not projection.split:
        return int(lm._detect_batch_size())  # a collective op under data parallelism

    @find_executable_batch_size(starting_batch_size=lm.max_batch_size)
    def forward_batch(batch_size: int) -> int:
        batch = torch.ones((batch_size, int(lm.max_length)), dtype=torch.long, device=lm.device)
        logits = projection.forward(batch)
        step = max(1, _REDUCE_ELEMENTS // logits.vocab_size)
        n = min(step, batch_size * logits.length)
        index = torch.arange(n, device=logits.device)
        block = logits.rows(index // logits.length, index % logits.length)
        torch.logsumexp(block.to(_compute_dtype(lm)), dim=-1)
        return batch_size

    try:
        batch_size = forward_batch()
    except RuntimeError as error:
        if "No executable batch size found" not in str(error):
            raise
        batch_size = 1
    if lm.world_size > 1:
        gathered = lm.all_gather(torch.tensor([batch_size], device=lm.device))
        batch_size = min(gathered.cpu().detach().numpy().tolist())
    return int(batch_size)


def _score_batch(
    lm: Any,
    projection: Projection,
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
    logits = projection.forward(torch.from_numpy(batch).to(lm.device))
    # T' > T when the model prepends virtual tokens (prompt tuning): _loglikelihood_tokens shifts
    # the scored slice by the difference in the same way.
    offset = logits.length - batch.shape[1]

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

    # each scored position once (windows sharing a row may score the same one), in order
    length = logits.length
    scored, of_target = np.unique(row_index * length + position, return_inverse=True)
    by_position = np.argsort(of_target, kind="stable")
    bounds = np.searchsorted(of_target[by_position], np.arange(len(scored) + 1))

    device = logits.device
    row_t = torch.from_numpy(scored // length).to(device)
    pos_t = torch.from_numpy(scored % length).to(device)
    of_target_t = torch.from_numpy(of_target).to(device)
    tgt_t = torch.from_numpy(target).to(device)
    true_lp = torch.empty(target.shape[0], dtype=compute_dtype, device=device)
    top1_lp = torch.empty_like(true_lp)
    hit = torch.empty(target.shape[0], dtype=torch.bool, device=device)
    step = max(1, _REDUCE_ELEMENTS // logits.vocab_size)
    for i in range(0, len(scored), step):
        j = min(i + step, len(scored))
        block = logits.rows(row_t[i:j], pos_t[i:j]).to(compute_dtype)  # [m, V]
        log_norm = torch.logsumexp(block, dim=-1)
        best, argmax = block.max(dim=-1)  # first maximal index on ties, like argmax
        sel = torch.from_numpy(by_position[bounds[i] : bounds[j]]).to(device)
        local = of_target_t[sel] - i
        true_lp[sel] = block[local, tgt_t[sel]] - log_norm[local]
        top1_lp[sel] = (best - log_norm)[local]
        hit[sel] = argmax[local] == tgt_t[sel]
        del block
    del logits
    true_np = true_lp.float().cpu().numpy()
    top1_np = top1_lp.float().cpu().numpy()
    hit_np = hit.cpu().numpy()
    for (_, w, _, k), s in zip(flat, starts.tolist(), strict=True):
        window_stats[w] = TokenStats(true_np[s : s + k], top1_np[s : s + k], hit_np[s : s + k])


HF = BackendSpec(
    name="hf",
    class_path="lm_eval.models.huggingface.HFLM",
    check=_check,
    rolling_max_seq_len=lambda lm: int(lm.max_length),
    seq_cap=lambda lm: int(lm.max_length) + 1,
    score=score_windows,
)
hf_token_stats = HF.token_stats
