"""token_stats through the harness's own hf backend on the tiny GPT-2 (64-token window)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.api.model import CacheHook, CachingLM
from lm_eval.models.huggingface import HFLM
from support.stats import assert_same_stats, stats_requests
from support.tiny_model import WINDOW

from calib_tasks.token_stats import REQUEST_TYPE, TokenStats, UnsupportedBackendError

# the hf backend's device; CALIB_TEST_DEVICE=cuda reruns this module on a GPU
DEVICE = os.environ.get("CALIB_TEST_DEVICE", "cpu")
# the harness sums a window's float32 log-probabilities in float32: its own rounding grows with
# the document (about 1e-4 at -2000 nats); token_stats sums are taken in float64
SUM_TOLERANCE = {"abs": 1e-4, "rel": 1e-7}
PROSE = (
    "The capital of France is Paris. Paris is the capital of France. Berlin is the capital of "
    "Germany. Madrid is located in Spain. The language of Brazil is Portuguese. The currency of "
    "Japan is the yen. Water boils at one hundred degrees. Alice was born in London and works as "
    "a physician. Bob plays the piano. The quick brown fox jumps over the lazy dog. "
)


@pytest.fixture(scope="module")
def lm(tiny_model_dir: Path) -> HFLM:
    return HFLM(pretrained=str(tiny_model_dir), device=DEVICE, batch_size=1)


def documents(docs: list[str]) -> list[Instance]:
    return stats_requests([("", doc) for doc in docs])


def doc_with_tokens(lm: HFLM, n_tokens: int, seed: int = 0) -> str:
    """Seeded random words (no repeated token windows) making exactly ``n_tokens`` tokens.

    Byte-level BPE splits " word" pieces apart before merging, so letter-only words separated by
    spaces cost a fixed number of tokens each; one-token words make up the exact count.
    """
    words = sorted({w.strip(".,") for w in PROSE.split()} - {""})
    words = [w for w in words if w.isalpha()]
    cost = {w: len(lm.tok_encode(" " + w)) for w in words}
    assert min(cost.values()) == 1, "no one-token word to fill with"
    rng = np.random.default_rng(seed)
    text = "The"
    total = len(lm.tok_encode(text))
    while total < n_tokens:
        fitting = [w for w in words if cost[w] <= n_tokens - total]
        word = fitting[rng.integers(len(fitting))]
        text += " " + word
        total += cost[word]
    assert len(lm.tok_encode(text)) == n_tokens
    return text


@pytest.fixture(scope="module")
def docs(lm: HFLM) -> list[str]:
    """Documents shorter than, equal to, and several times the 64-token window."""
    lengths = [1, 5, 63, 64, 65, 128, 129, 200, 320]
    assert len(lm.tok_encode("The")) == 1
    return [doc_with_tokens(lm, n, seed=i) for i, n in enumerate(lengths)]


@pytest.fixture
def batch_size(lm: HFLM, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    size = getattr(request, "param", 1)
    monkeypatch.setattr(lm, "batch_size_per_gpu", size)
    return size


class CallCounter:
    """Wraps ``HFLM._model_call``: forward passes and rows (windows) processed."""

    def __init__(self, lm: HFLM, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.rows = 0
        original = lm._model_call

        def counted(inps: torch.Tensor, *args, **kwargs):
            self.calls += 1
            self.rows += inps.shape[0]
            assert inps.shape[1] <= WINDOW
            return original(inps, *args, **kwargs)

        monkeypatch.setattr(lm, "_model_call", counted)


# ------------------------------------------------------------------------------------------
# the response type


def test_token_stats_is_compact_frozen_and_typed():
    n = 100_000
    rng = np.random.default_rng(0)
    true = -rng.random(n)
    stats = TokenStats(true, true + 0.1, rng.random(n) < 0.3)
    assert stats.n == n
    assert stats.true_logprob.dtype == np.float32 and stats.top1_logprob.dtype == np.float32
    assert stats.top1_is_true.dtype == np.bool_
    text = repr(stats)
    assert text == str(stats) and text.startswith(f"TokenStats(n={n}, ") and len(text) < 100
    with pytest.raises(ValueError):
        stats.true_logprob[0] = 0.0  # read-only
    with pytest.raises(AttributeError):
        stats.n = 3  # type: ignore[misc]
    assert repr(TokenStats([], [], [])) == "TokenStats(n=0)"
    with pytest.raises(ValueError, match="equal length"):
        TokenStats([0.0, 1.0], [0.0], [True])


# ------------------------------------------------------------------------------------------
# cost: ceil(N / window) windows per document


@pytest.mark.parametrize("batch_size", [1, 4], indirect=True)
def test_one_forward_row_per_window(lm, docs, batch_size, monkeypatch):
    n_tokens = [len(lm.tok_encode(doc)) for doc in docs]
    assert {63, 64, 65, 128, 320} <= set(n_tokens)
    counter = CallCounter(lm, monkeypatch)
    stats = lm.token_stats(documents(docs))
    windows = sum(math.ceil(n / WINDOW) for n in n_tokens)
    assert [s.n for s in stats] == n_tokens  # every token scored once
    assert counter.rows == windows
    assert counter.calls == math.ceil(windows / batch_size)


def test_per_document_forward_passes(lm, docs, batch_size, monkeypatch):
    counter = CallCounter(lm, monkeypatch)
    for doc in docs:
        before = counter.calls
        lm.token_stats(documents([doc]))
        assert counter.calls - before == math.ceil(len(lm.tok_encode(doc)) / WINDOW)


def test_identical_model_inputs_share_a_row_like_logits_cache(lm, monkeypatch):
    context = "Answer: A B C D. The capital of France is Paris. Answer:"
    pairs = [(context, f" {letter}") for letter in "ABCD"]
    assert all(len(lm._encode_pair(c, x)[1]) == 1 for c, x in pairs)
    counter = CallCounter(lm, monkeypatch)
    shared = lm.token_stats(stats_requests(pairs))
    assert counter.rows == 1
    monkeypatch.setattr(lm, "logits_cache", False)
    separate = lm.token_stats(stats_requests(pairs))
    assert counter.rows == 1 + 4
    for a, b in zip(shared, separate, strict=True):
        assert_same_stats(a, b, atol=0)
    assert len({float(s.top1_logprob[0]) for s in shared}) == 1  # same position, same top-1


# ------------------------------------------------------------------------------------------
# values: brute force from the raw logits


def brute_force_document(lm: HFLM, doc: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows [0, 64), [64, 128), ... of the document, each predicted with as much context as
    fits the window (the first from the prefix token); log_softmax of the model's raw logits."""
    tokens = lm.tokenizer(doc).input_ids
    true, top1, hit = [], [], []
    for start in range(0, len(tokens), WINDOW):
        end = min(start + WINDOW, len(tokens))
        if start == 0:
            inputs = [lm.prefix_token_id] + tokens[: end - 1]
        else:
            inputs = tokens[end - 1 - WINDOW : end - 1]
        with torch.no_grad():
            logits = lm.model(torch.tensor([inputs], device=lm.device)).logits[0].cpu()
        logprobs = torch.log_softmax(logits.double(), dim=-1)[-(end - start) :]
        targets = torch.tensor(tokens[start:end])
        true.append(logprobs.gather(1, targets[:, None]).squeeze(1).numpy())
        top1.append(logprobs.max(dim=-1).values.numpy())
        hit.append((logprobs.argmax(dim=-1) == targets).numpy())
    return np.concatenate(true), np.concatenate(top1), np.concatenate(hit)


@pytest.mark.parametrize("batch_size", [1, 3], indirect=True)
def test_documents_equal_brute_force_from_logits(lm, docs, batch_size):
    for doc, stats in zip(docs, lm.token_stats(documents(docs)), strict=True):
        true, top1, hit = brute_force_document(lm, doc)
        np.testing.assert_allclose(stats.true_logprob, true, rtol=0, atol=1e-5)
        np.testing.assert_allclose(stats.top1_logprob, top1, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(stats.top1_is_true, hit)
        assert np.all(stats.top1_logprob >= stats.true_logprob)


def test_pairs_equal_brute_force_from_logits(lm, docs):
    pairs = [
        ("The capital of France is", " Paris."),
        ("Water boils at", " one hundred degrees. Alice was born in London"),
        (docs[-1], " The quick brown fox"),  # context longer than the window: left truncation
    ]
    stats_list = lm.token_stats(stats_requests(pairs))
    for (context, continuation), stats in zip(pairs, stats_list, strict=True):
        whole = lm.tokenizer(context + continuation).input_ids
        k = len(whole) - len(lm.tokenizer(context).input_ids)
        inputs = whole[:-1][-WINDOW:]
        with torch.no_grad():
            logits = lm.model(torch.tensor([inputs], device=lm.device)).logits[0].cpu()
        logprobs = torch.log_softmax(logits.double(), dim=-1)[-k:]
        targets = torch.tensor(whole[-k:])
        assert stats.n == k
        np.testing.assert_allclose(
            stats.true_logprob, logprobs.gather(1, targets[:, None]).squeeze(1), atol=1e-5, rtol=0
        )
        np.testing.assert_allclose(stats.top1_logprob, logprobs.max(-1).values, atol=1e-5, rtol=0)
        np.testing.assert_array_equal(stats.top1_is_true, logprobs.argmax(-1) == targets)


# ------------------------------------------------------------------------------------------
# agreement with the harness's own request types


@pytest.mark.parametrize("batch_size", [1, 5], indirect=True)
def test_document_sums_equal_loglikelihood_rolling(lm, docs, batch_size):
    rolling = lm.loglikelihood_rolling(
        [Instance("loglikelihood_rolling", {}, (doc,), 0) for doc in docs], disable_tqdm=True
    )
    stats = lm.token_stats(documents(docs), disable_tqdm=True)
    for value, s in zip(rolling, stats, strict=True):
        assert float(s.true_logprob.sum(dtype=np.float64)) == pytest.approx(value, **SUM_TOLERANCE)


def greedy_continuations(lm: HFLM, contexts: list[str]) -> list[tuple[str, str]]:
    """(context, decoded argmax next token): pairs the model continues greedily, mostly."""
    pairs = []
    for context in contexts:
        with torch.no_grad():
            inputs = torch.tensor([lm.tok_encode(context)], device=lm.device)
            logits = lm.model(inputs).logits[0, -1]
        pairs.append((context, lm.tokenizer.decode([int(logits.argmax())])))
    return pairs


def test_pair_sums_and_greedy_equal_loglikelihood(lm, docs):
    # well inside the window; no trailing whitespace, which token_stats leaves unscored (below)
    contexts = [PROSE[i : i + 60].rstrip() for i in range(0, 300, 13)]
    pairs = [
        ("The capital of France is", " Paris"),
        ("The capital of France is ", "Paris"),  # trailing space moves to the continuation
        ("Bob plays", " the piano. The quick brown fox jumps over the lazy dog."),
        (docs[-1], " Water boils at one hundred degrees."),  # truncated from the left
        *greedy_continuations(lm, contexts),
    ]
    harness = lm.loglikelihood(
        [Instance("loglikelihood", {}, pair, 0) for pair in pairs], disable_tqdm=True
    )
    stats = lm.token_stats(stats_requests(pairs), disable_tqdm=True)
    greedy = [bool(np.all(s.top1_is_true)) for s in stats]
    assert greedy == [is_greedy for _, is_greedy in harness]
    assert any(greedy) and not all(greedy)  # both outcomes exercised
    for (value, _), s in zip(harness, stats, strict=True):
        assert float(s.true_logprob.sum(dtype=np.float64)) == pytest.approx(value, **SUM_TOLERANCE)


def test_whitespace_ending_the_context_is_conditioned_on_not_scored(lm):
    """``_encode_pair`` moves it into the continuation (a chat prompt ends with a newline): the
    scored positions are still exactly the continuation's own tokens."""
    context, continuation = "The capital of France is\n", "Paris"
    stripped, whitespace = context.rstrip(), "\n"
    whole = lm.tok_encode(stripped + whitespace + continuation)
    assert whole[: len(lm.tok_encode(stripped + whitespace))] == lm.tok_encode(context)
    n_continuation = len(whole) - len(lm.tok_encode(context))
    (moved,) = lm.token_stats(stats_requests([(context, continuation)]), disable_tqdm=True)
    (everything,) = lm.token_stats(
        stats_requests([(stripped, whitespace + continuation)]), disable_tqdm=True
    )
    assert moved.n == n_continuation < everything.n
    assert_same_stats(moved, everything.tail(n_continuation))
    ((harness, _),) = lm.loglikelihood(
        [Instance("loglikelihood", {}, (context, continuation), 0)], disable_tqdm=True
    )
    assert float(everything.true_logprob.sum(dtype=np.float64)) == pytest.approx(
        harness, **SUM_TOLERANCE
    )


def test_auto_batch_size_gives_the_same_stats(lm, docs, monkeypatch):
    reference = lm.token_stats(documents(docs))
    monkeypatch.setattr(lm, "batch_size_per_gpu", "auto")
    for a, b in zip(reference, lm.token_stats(documents(docs)), strict=True):
        assert_same_stats(a, b)


def test_data_parallel_ranks_run_the_same_number_of_rows(lm, docs, batch_size, monkeypatch):
    reference = lm.token_stats(documents(docs))
    n_windows = sum(math.ceil(len(lm.tok_encode(d)) / WINDOW) for d in docs)
    # pretend to be rank 0 of 2, the other rank having 3 more rows to run
    monkeypatch.setattr(lm, "_world_size", 2)
    monkeypatch.setattr(lm, "all_gather", lambda t: torch.stack([t, t + 3]))
    counter = CallCounter(lm, monkeypatch)
    for a, b in zip(reference, lm.token_stats(documents(docs)), strict=True):
        assert_same_stats(a, b, atol=0)
    assert counter.rows == n_windows + 3
    # a rank without requests still runs its share of forward passes
    assert lm.token_stats([]) == []
    assert counter.rows == n_windows + 3 + 3


def test_caching_lm_passes_token_stats_through_uncached(lm, docs, tmp_path):
    requests = documents(docs[:3])
    reference = lm.token_stats(requests)
    cached = CachingLM(lm, str(tmp_path / "cache.db"))
    try:
        for a, b in zip(reference, cached.token_stats(requests), strict=True):
            assert_same_stats(a, b, atol=0)
        assert len(cached.dbdict) == 0
    finally:
        lm.set_cache_hook(CacheHook(None))


# ------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    ("pair", "what"),
    [(("", ""), "the document tokenises to no"), (("Paris is", ""), "the continuation tokenises")],
)
def test_nothing_to_score_is_a_value_error_naming_the_request(lm, pair, what):
    requests = [
        Instance(REQUEST_TYPE, {}, ("", "Some text."), 0),
        Instance(REQUEST_TYPE, {}, pair, 3),
    ]
    with pytest.raises(ValueError, match=rf"token_stats request #1 \(idx 3; .*\): {what}"):
        lm.token_stats(requests)


def test_continuation_longer_than_the_window_is_a_value_error(lm, docs):
    with pytest.raises(ValueError, match=r"continuation has 3\d\d tokens, more than the 64"):
        lm.token_stats(stats_requests([("Context.", docs[-1])]))


def test_seq2seq_hf_model_is_rejected(lm, monkeypatch):
    monkeypatch.setattr(lm, "backend", "seq2seq")
    with pytest.raises(UnsupportedBackendError, match=r"HFLM.*causal.*hf.*vllm.*local-completions"):
        lm.token_stats(documents(["Some text."]))


def test_unsupported_backend_error_names_backend_and_alternatives():
    from lm_eval.models.dummy import DummyLM

    with pytest.raises(NotImplementedError) as info:
        DummyLM().token_stats(documents(["Some text."]))
    assert isinstance(info.value, UnsupportedBackendError)
    message = str(info.value)
    for part in ("lm_eval.models.dummy.DummyLM", "token_stats", "hf", "vllm", "local-completions"):
        assert part in message


# ------------------------------------------------------------------------------------------
# installation leaves the harness as it was


CHECK_INSTALL = """
import importlib.util, json, sys
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM, TemplateLM
from lm_eval.models.dummy import DummyLM
from lm_eval.models.huggingface import HFLM
from lm_eval.models import openai_completions as oc

classes = [LM, TemplateLM, HFLM, DummyLM, oc.TemplateAPI, oc.LocalCompletionsAPI,
           oc.LocalChatCompletion, oc.OpenAICompletionsAPI]
before = {c.__qualname__: dict(vars(c)) for c in classes}
lm = HFLM(pretrained=sys.argv[1], device="cpu", batch_size=2)
docs = [("The quick brown fox. " * k) for k in (1, 4, 9)]
pairs = [("The capital of France is", " Paris"), ("Bob plays", " the piano.")]

def run():
    return (
        lm.loglikelihood([Instance("loglikelihood", {}, p, 0) for p in pairs], disable_tqdm=True),
        lm.loglikelihood_rolling(
            [Instance("loglikelihood_rolling", {}, (d,), 0) for d in docs], disable_tqdm=True
        ),
    )

plain = run()
import calib_tasks.token_stats as ts
import calib_tasks.token_stats  # noqa: F811
spec = importlib.util.spec_from_file_location("token_stats_second_copy", ts.__file__)
second = importlib.util.module_from_spec(spec)
spec.loader.exec_module(second)  # the same file under another name, as the harness's
sys.modules[spec.name] = second  # !function loader does it (tasks/_yaml_loader.py)
ts.install()
second.install()
after = {c.__qualname__: dict(vars(c)) for c in classes}
changed = {
    name: sorted(k for k in set(before[name]) | set(after[name])
                 if before[name].get(k) is not after[name].get(k))
    for name in before
}
stats = lm.token_stats([Instance("token_stats", {}, ("", d), 0) for d in docs])
print(json.dumps({
    "changed": changed,
    "same_results": run() == plain,
    "hf_method_is_first_copy": HFLM.token_stats is ts.hf_token_stats,
    "response_type": type(stats[0]).__module__,
    "sums": [float(s.true_logprob.sum()) for s in stats],
    "rolling": plain[1],
}))
"""


def test_install_is_idempotent_and_changes_no_existing_method(tiny_model_dir):
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root)}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHECK_INSTALL), str(tiny_model_dir)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["changed"] == {
        "LM": ["token_stats"],
        "TemplateLM": [],
        "HFLM": ["token_stats"],
        "DummyLM": [],
        "TemplateAPI": [],
        "LocalCompletionsAPI": ["token_stats"],
        "LocalChatCompletion": [],
        "OpenAICompletionsAPI": [],
    }
    assert out["same_results"] and out["hf_method_is_first_copy"]
    assert out["response_type"] == "calib_tasks.token_stats"
    assert out["sums"] == pytest.approx(out["rolling"], **SUM_TOLERANCE)


# ------------------------------------------------------------------------------------------
# through the harness's evaluator


def probe_task(tmp_path: Path, texts: list[str]):
    """A harness task that sends one token_stats request per document."""
    from lm_eval.api.task import ConfigurableTask

    class ProbeTask(ConfigurableTask):
        def construct_requests(self, doc: dict, ctx: str, **kwargs):
            kwargs.pop("apply_chat_template", None)
            kwargs.pop("chat_template", None)
            return Instance(REQUEST_TYPE, doc, ("", doc["text"]), 0, **kwargs)

    def process_results(doc: dict, results: list[TokenStats]) -> dict:
        (stats,) = results
        return {"n_tokens": stats.n, "logprob": float(stats.true_logprob.sum(dtype=np.float64))}

    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return ProbeTask(
        config={
            "task": "token_stats_probe",
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test",
            "doc_to_text": "",
            "doc_to_target": "text",
            "output_type": "loglikelihood_rolling",
            "process_results": process_results,
            "metric_list": [
                {"metric": "n_tokens", "aggregation": "mean", "higher_is_better": True},
                {"metric": "logprob", "aggregation": "mean", "higher_is_better": True},
            ],
        }
    )


@pytest.mark.parametrize("use_cache", [False, True])
def test_evaluator_dispatches_token_stats(lm, docs, tmp_path, use_cache):
    from lm_eval.evaluator import evaluate

    texts = docs[2:7]
    model = CachingLM(lm, str(tmp_path / "cache.db")) if use_cache else lm
    try:
        out = evaluate(
            lm=model,
            task_dict={"token_stats_probe": probe_task(tmp_path, texts)},
            limit=3,
            log_samples=True,
        )
    finally:
        lm.set_cache_hook(CacheHook(None))
    reference = lm.token_stats(documents(texts[:3]))
    metrics = out["results"]["token_stats_probe"]
    assert metrics["n_tokens,none"] == pytest.approx(np.mean([s.n for s in reference]))
    assert metrics["logprob,none"] == pytest.approx(
        np.mean([s.true_logprob.sum(dtype=np.float64) for s in reference]), abs=1e-9
    )
    samples = out["samples"]["token_stats_probe"]
    assert len(samples) == 3
    for sample, stats in zip(samples, reference, strict=True):
        assert str(sample["resps"]) == f"[[{stats!r}]]"  # what the samples file holds
