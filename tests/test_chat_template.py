"""The package's tasks under the harness's --apply_chat_template, through the real harness.

A chat prompt ends with the assistant header and a newline; the answer token must still be the
answer token (checked against the model's next-token distribution after the whole prompt), and
the target delimiter is dropped as the harness's own multiple_choice requests drop it.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from support.harness import evaluate

LIMIT = 6


def _run(lm, task_manager, task: str, **kwargs):
    return evaluate(lm, task_manager, task, LIMIT, **kwargs)


def _next_token_logprobs(lm, context: str) -> np.ndarray:
    """Brute force: log-softmax of the model's next-token logits after the whole ``context``."""
    ids = torch.tensor([lm.tok_encode(context)])
    with torch.no_grad():
        logits = lm.model(ids).logits[0, -1].double()
    return torch.log_softmax(logits, dim=-1).numpy()


def _first_token(lm, context: str, continuation: str) -> int:
    """The first token of ``continuation`` after ``context`` (the context tokenised alone)."""
    whole, alone = lm.tok_encode(context + continuation), lm.tok_encode(context)
    assert whole[: len(alone)] == alone
    return whole[len(alone)]


def test_vocab_task_reads_the_answer_letter_not_the_newline(tiny_chat_lm, task_manager):
    out = _run(tiny_chat_lm, task_manager, "calib_mmlu_vocab_mini", apply_chat_template=True)
    samples = out["samples"]["calib_mmlu_vocab_mini"]
    assert len(samples) == LIMIT
    for sample in samples:
        context = sample["arguments"][0][0]
        assert context.endswith("<|im_start|>assistant\n")
        assert [args[1] for args in sample["arguments"]] == ["A", "B", "C", "D"]  # no delimiter
        logprobs = _next_token_logprobs(tiny_chat_lm, context)
        record = sample["ece"]
        letters = [_first_token(tiny_chat_lm, context, letter) for letter in "ABCD"]
        np.testing.assert_allclose(record["letter_probs"], np.exp(logprobs[letters]), rtol=1e-4)
        assert sample["option_mass"] <= 1.0 + 1e-6
        np.testing.assert_allclose(record["confidence"], np.exp(logprobs.max()), rtol=1e-4)
        assert record["correct"] == int(np.argmax(logprobs) == letters[record["label"]])


def test_facts_task_reads_the_first_object_token(tiny_chat_lm, task_manager):
    out = _run(tiny_chat_lm, task_manager, "calib_facts_mini", apply_chat_template=True)
    for sample in out["samples"]["calib_facts_mini"]:
        context, continuation = sample["arguments"][0]
        record = sample["ece"]
        assert context.endswith("<|im_start|>assistant\n")
        assert continuation == record["obj_label"]  # no " " delimiter under the template
        logprobs = _next_token_logprobs(tiny_chat_lm, context)
        gold = _first_token(tiny_chat_lm, context, continuation)
        np.testing.assert_allclose(record["object_token_prob"], np.exp(logprobs[gold]), rtol=1e-4)
        np.testing.assert_allclose(record["confidence"], np.exp(logprobs.max()), rtol=1e-4)
        assert record["correct"] == int(np.argmax(logprobs) == gold)


@pytest.mark.parametrize("task", ["calib_mmlu_vocab_mini", "calib_facts_mini", "calib_mmlu_mini"])
def test_without_template_the_delimiter_stays(tiny_chat_lm, task_manager, task):
    out = _run(tiny_chat_lm, task_manager, task)
    for sample in out["samples"][task]:
        assert all(args[1].startswith(" ") for args in sample["arguments"])


def test_mmlu_acc_equals_the_harness_multiple_choice_under_the_template(tiny_chat_lm, task_manager):
    """calib_mmlu is the harness's own multiple_choice: same requests with and without."""
    out = _run(tiny_chat_lm, task_manager, "calib_mmlu_mini", apply_chat_template=True)
    for sample in out["samples"]["calib_mmlu_mini"]:
        assert [args[1] for args in sample["arguments"]] == ["A", "B", "C", "D"]
        lls = [resp[0][0] for resp in sample["resps"]]
        assert sample["acc"] == int(np.argmax(lls) == sample["doc"]["answer"])


def test_clm_warns_once_and_scores_the_text_unchanged(tiny_chat_lm, task_manager, caplog):
    plain = _run(tiny_chat_lm, task_manager, "calib_clm_mini")
    with caplog.at_level(logging.WARNING):
        chat = _run(tiny_chat_lm, task_manager, "calib_clm_mini", apply_chat_template=True)
    warnings = [r for r in caplog.records if "no chat turn" in r.getMessage()]
    assert len(warnings) == 1 and "calib_clm_mini" in warnings[0].getMessage()
    assert (
        chat["results"]["calib_clm_mini"]["ece,none"]
        == plain["results"]["calib_clm_mini"]["ece,none"]
    )
