"""token_stats on the hf backend projects only the scored positions' hidden states to logits,
chunk by chunk (``calib_tasks.token_stats.hf_projection``): the numbers of the full-logits path,
for every decoder family it claims, with the vocabulary-sized logits of a whole window never made.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from lm_eval.models.huggingface import HFLM
from support.stats import PAIRS, assert_same_stats, stats_requests
from support.tiny_model import FAMILY_CONFIGS, WINDOW, build_tiny_family

from calib_tasks.token_stats import hf, hf_projection
from calib_tasks.token_stats.windows import assemble, plan_windows

REQUESTS = stats_requests(PAIRS)
# rows of logits reduced at once in these tests, so that windows of 64 positions take several
CHUNK_ROWS = 8


def same(lm: HFLM) -> dict[str, float]:
    """The tolerance of two float32 paths: 1e-6, or 4 units of rounding of the model's largest
    logit when that is more (the split's logits come from a matrix product of another shape than
    the full forward's, which rounds differently in the last bits, and a log-probability is a
    difference of logits)."""
    tokens = torch.tensor([lm.tok_encode(PAIRS[1][1])[:WINDOW]])
    with torch.no_grad():
        largest = float(lm.model(tokens).logits.abs().max())
    return {"atol": max(1e-6, 4 * torch.finfo(torch.float32).eps * largest)}


FALLBACK = "computing the full [batch, window, vocabulary] logits"


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict:
    root = tmp_path_factory.mktemp("families")
    built = {f: build_tiny_family(root / f, f, tiny_model_dir) for f in FAMILY_CONFIGS}
    return {"gpt2": tiny_model_dir, **built}


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    vocab = 2000
    monkeypatch.setattr(hf, "_REDUCE_ELEMENTS", CHUNK_ROWS * vocab)


def full_logits_path(lm: HFLM, requests) -> list:
    """The statistics from the full [B, T, V] logits of ``_model_call`` (the path before the
    split, kept as the fallback)."""
    plan = plan_windows(
        lm, requests, rolling_max_seq_len=int(lm.max_length), seq_cap=int(lm.max_length) + 1
    )
    return assemble(plan, hf.score_windows(lm, plan, True, split_projection=False))


class HeadRows:
    """Records how many positions each call of the output embeddings module projects."""

    def __init__(self, lm: HFLM) -> None:
        self.rows: list[int] = []
        head = lm.model.get_output_embeddings()
        self.handle = head.register_forward_hook(
            lambda module, args, output: self.rows.append(int(np.prod(output.shape[:-1])))
        )


def brute_force_pair(lm: HFLM, model, context: str, continuation: str, dtype=torch.float64):
    """Log-probabilities and top-1 of the continuation's tokens from the model's own full logits
    (context and continuation split by the harness's ``_encode_pair``)."""
    ctx, cont = lm._encode_pair(context, continuation)
    with torch.no_grad():
        logits = model(torch.tensor([ctx + cont[:-1]])).logits[0, -len(cont) :].to(dtype)
    logprobs = torch.log_softmax(logits, dim=-1)
    targets = torch.tensor(cont)
    true = logprobs.gather(1, targets[:, None]).squeeze(1)
    return true.numpy(), logprobs.max(-1).values.numpy(), (logprobs.argmax(-1) == targets).numpy()


@pytest.mark.parametrize("batch_size", [1, 5])
@pytest.mark.parametrize("family", ["gpt2", *FAMILY_CONFIGS])
def test_split_gives_the_full_logits_numbers(family, batch_size, family_dirs, small_chunks, caplog):
    lm = HFLM(pretrained=str(family_dirs[family]), device="cpu", batch_size=batch_size)
    assert lm.max_length == WINDOW
    full = full_logits_path(lm, REQUESTS)
    head = HeadRows(lm)
    with caplog.at_level(logging.WARNING):
        split = lm.token_stats(REQUESTS)
    head.handle.remove()
    assert FALLBACK not in caplog.text
    tolerance = same(lm)
    for a, b in zip(split, full, strict=True):
        assert_same_stats(a, b, **tolerance)
    # the model's own forward projected one position per row; then chunks of CHUNK_ROWS
    assert max(head.rows) <= max(batch_size, CHUNK_ROWS)
    # and independent of both paths: the model's full logits for the short pairs
    for (context, continuation), stats in zip(PAIRS, split, strict=True):
        short = len(lm.tok_encode(context + continuation)) < WINDOW
        if context and context == context.rstrip() and short:
            true, top1, hit = brute_force_pair(lm, lm.model, context, continuation)
            atol = max(1e-5, tolerance["atol"])
            np.testing.assert_allclose(stats.true_logprob, true, rtol=0, atol=atol)
            np.testing.assert_allclose(stats.top1_logprob, top1, rtol=0, atol=atol)
            np.testing.assert_array_equal(stats.top1_is_true, hit)


def test_the_full_logits_path_projects_every_position(family_dirs):
    """The recorder above can tell the two paths apart."""
    lm = HFLM(pretrained=str(family_dirs["llama"]), device="cpu", batch_size=2)
    head = HeadRows(lm)
    full_logits_path(lm, REQUESTS)
    assert max(head.rows) == 2 * WINDOW


def test_softmax_float64_is_honoured(family_dirs, caplog):
    lm = HFLM(
        pretrained=str(family_dirs["gemma3"]), device="cpu", batch_size=3, softmax_dtype="float64"
    )
    with caplog.at_level(logging.WARNING):
        split = lm.token_stats(REQUESTS)
    assert FALLBACK not in caplog.text
    for a, b in zip(split, full_logits_path(lm, REQUESTS), strict=True):
        assert_same_stats(a, b, **same(lm))


def test_an_unknown_logit_transform_falls_back_to_full_logits_loudly(
    family_dirs, monkeypatch, caplog
):
    """Gemma 3's soft-capping, unknown to the split: the check against the model's own logits
    catches it, and the numbers are the model's."""
    lm = HFLM(pretrained=str(family_dirs["gemma3"]), device="cpu", batch_size=4)
    reference = full_logits_path(lm, REQUESTS)
    known = {k: v for k, v in hf_projection.LOGIT_TRANSFORMS.items() if "softcap" not in k}
    monkeypatch.setattr(hf_projection, "LOGIT_TRANSFORMS", known)
    with caplog.at_level(logging.WARNING):
        stats = lm.token_stats(REQUESTS)
    fallbacks = [r for r in caplog.records if FALLBACK in r.getMessage()]
    assert len(fallbacks) == 1, "one log line per token_stats call"
    assert "Gemma3ForCausalLM" in fallbacks[0].getMessage()
    assert "differ from the projection" in fallbacks[0].getMessage()
    for a, b in zip(stats, reference, strict=True):
        assert_same_stats(a, b, atol=0)


def test_a_model_that_never_calls_its_output_module_falls_back(family_dirs, monkeypatch, caplog):
    lm = HFLM(pretrained=str(family_dirs["gpt2"]), device="cpu", batch_size=4)
    reference = full_logits_path(lm, REQUESTS)
    unused = torch.nn.Linear(32, 2000, bias=False)
    monkeypatch.setattr(lm.model, "get_output_embeddings", lambda: unused)
    with caplog.at_level(logging.WARNING):
        stats = lm.token_stats(REQUESTS)
    assert "never called the output embeddings module" in caplog.text
    for a, b in zip(stats, reference, strict=True):
        assert_same_stats(a, b, atol=0)


def test_peft_lora_and_prompt_tuned_models(family_dirs, small_chunks, caplog):
    from peft import LoraConfig, PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(family_dirs["llama"])
    configs = {
        "lora": LoraConfig(r=2, target_modules=["q_proj", "lm_head"], task_type="CAUSAL_LM"),
        "prompt": PromptTuningConfig(num_virtual_tokens=3, task_type="CAUSAL_LM"),
    }
    for name, config in configs.items():
        torch.manual_seed(1)
        base = AutoModelForCausalLM.from_pretrained(family_dirs["llama"])
        model = get_peft_model(base, config)
        if name == "lora":  # LoRA's B starts at zero: make the adapter change the numbers
            for parameter_name, parameter in model.named_parameters():
                if "lora_B" in parameter_name:
                    torch.nn.init.normal_(parameter, std=0.5)
        model.eval()
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=3, max_length=WINDOW - 3)
        with caplog.at_level(logging.WARNING):
            split = lm.token_stats(REQUESTS)
        assert FALLBACK not in caplog.text, name
        for a, b in zip(split, full_logits_path(lm, REQUESTS), strict=True):
            assert_same_stats(a, b, **same(lm))
        context, continuation = PAIRS[3]
        true, _, hit = brute_force_pair(lm, model, context, continuation)
        np.testing.assert_allclose(split[3].true_logprob, true, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(split[3].top1_is_true, hit)


def test_auto_batch_size_counts_the_split_footprint(family_dirs, small_chunks, monkeypatch):
    """Under a memory budget that the full logits of 3 windows exceed, ``batch_size: auto``
    finds the largest batch the split needs, not the full logits' 2."""
    lm = HFLM(pretrained=str(family_dirs["llama"]), device="cpu", batch_size="auto")
    monkeypatch.setattr(lm, "max_batch_size", 16)
    reference = full_logits_path(lm, REQUESTS[:3])
    budget = 2 * WINDOW * 2000  # elements of logits that "fit"

    def out_of_memory(module, args, output):
        if output.numel() > budget:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to ...")

    lm.model.get_output_embeddings().register_forward_hook(out_of_memory)
    assert lm._detect_batch_size() == 2  # the harness's own detection: full logits
    projection = hf_projection.Projection(lm)
    assert hf.detect_batch_size(lm, projection) == 16
    for a, b in zip(lm.token_stats(REQUESTS[:3]), reference, strict=True):
        assert_same_stats(a, b, **same(lm))


@pytest.mark.parametrize("unknown_softcap", [False, True])
def test_bfloat16_split_and_its_check(family_dirs, monkeypatch, caplog, unknown_softcap):
    """In bfloat16 the check still tells a missing soft-cap from rounding."""
    lm = HFLM(pretrained=str(family_dirs["gemma3"]), device="cpu", batch_size=4, dtype="bfloat16")
    reference = full_logits_path(lm, REQUESTS)
    if unknown_softcap:
        known = {k: v for k, v in hf_projection.LOGIT_TRANSFORMS.items() if "softcap" not in k}
        monkeypatch.setattr(hf_projection, "LOGIT_TRANSFORMS", known)
    with caplog.at_level(logging.WARNING):
        stats = lm.token_stats(REQUESTS)
    assert (FALLBACK in caplog.text) == unknown_softcap
    bfloat16_rounding = {"atol": 4 * torch.finfo(torch.bfloat16).eps * 5.0}  # logits <= cap 5
    for a, b in zip(stats, reference, strict=True):
        assert_same_stats(a, b, **bfloat16_rounding)


def test_one_scored_position_is_the_only_one_projected(family_dirs):
    """Four answer letters after one prompt (calib_mmlu_vocab's request): one forward row; its
    last position projected by the model and again by the check, and the scored position once."""
    lm = HFLM(pretrained=str(family_dirs["gemma3"]), device="cpu", batch_size=4)
    pairs = [("Answer: A B C D. The capital of France is Paris. Answer:", f" {c}") for c in "ABCD"]
    assert all(len(lm._encode_pair(*pair)[1]) == 1 for pair in pairs)
    head = HeadRows(lm)
    stats = lm.token_stats(stats_requests(pairs))
    head.handle.remove()
    assert head.rows == [1, 1, 1]
    assert len({float(s.top1_logprob[0]) for s in stats}) == 1
    assert len({float(s.true_logprob[0]) for s in stats}) == 4


def test_a_model_that_needs_every_position_after_its_head_falls_back(
    family_dirs, monkeypatch, caplog
):
    """A model whose forward pass fails on logits of the last position only (it reshapes them
    by the sequence length, say) is scored from its full logits, with the reason logged."""
    lm = HFLM(pretrained=str(family_dirs["llama"]), device="cpu", batch_size=4)
    reference = full_logits_path(lm, REQUESTS)

    def every_position(module, args, output):
        if output.shape[1] == 1:
            raise RuntimeError("shape '[4, 64, 2000]' is invalid for input of size 8000")

    lm.model.get_output_embeddings().register_forward_hook(every_position)
    with caplog.at_level(logging.WARNING):
        stats = lm.token_stats(REQUESTS)
    assert "is invalid for input of size" in caplog.text and FALLBACK in caplog.text
    for a, b in zip(stats, reference, strict=True):
        assert_same_stats(a, b, atol=0)


def test_a_model_without_a_findable_output_module_falls_back(family_dirs, monkeypatch, caplog):
    lm = HFLM(pretrained=str(family_dirs["gpt2"]), device="cpu", batch_size=4)
    reference = full_logits_path(lm, REQUESTS)

    def not_implemented():
        raise NotImplementedError("remote code without get_output_embeddings")

    monkeypatch.setattr(lm.model, "get_output_embeddings", not_implemented)
    with caplog.at_level(logging.WARNING):
        stats = lm.token_stats(REQUESTS)
    assert "output embeddings module cannot be found" in caplog.text
    for a, b in zip(stats, reference, strict=True):
        assert_same_stats(a, b, atol=0)


def test_a_one_percent_unknown_scale_is_caught(family_dirs, caplog):
    """The check is tight: logits scaled by 1.01 after the head do not pass for rounding."""
    lm = HFLM(pretrained=str(family_dirs["llama"]), device="cpu", batch_size=4)

    def scaled(module, args, output):
        output.logits = output.logits * 1.01
        return output

    lm.model.register_forward_hook(scaled)
    reference = full_logits_path(lm, REQUESTS)
    with caplog.at_level(logging.WARNING):
        stats = lm.token_stats(REQUESTS)
    assert "differ from the projection" in caplog.text
    for a, b in zip(stats, reference, strict=True):
        assert_same_stats(a, b, atol=0)
