"""Every backend of ``calib_tasks.token_stats.BACKENDS`` gives the hf backend's statistics.

One row per backend: its model on the tiny GPT-2 (vLLM's and the completions server's fakes of
tests/test_token_stats_backends.py answer from its logits) with the hf backend's windows, asked
through the evaluator's dispatch ``getattr(lm, "token_stats")`` for the same documents and pairs.
Adding a backend is its module, its spec in ``BACKENDS`` and its row here; a fourth backend,
declared below as one spec, shows it.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM, TemplateLM
from lm_eval.models.dummy import DummyLM
from lm_eval.models.huggingface import HFLM
from test_token_stats_backends import (
    REVERSED,
    TEXT,
    WINDOW,
    FakeCompletionsServer,
    completions_lm,
    needs_api_extra,
    prompt_logsoftmax,
)
from test_token_stats_backends import VLLM as VLLMStandIn

from calib_tasks.token_stats import (
    REQUEST_TYPE,
    BackendSpec,
    TokenStats,
    UnsupportedBackendError,
    check_backend,
    install,
)
from calib_tasks.token_stats import backends as backends_module
from calib_tasks.token_stats.windows import Plan, stats_by_prompt

PAIRS = [
    ("", TEXT[:30]),  # a document of one window
    ("", TEXT),
    ("", REVERSED * 2),  # four windows
    ("The capital of France is", " Paris."),
    ("Bob plays ", "the piano"),  # the space moves to the continuation
    ("The capital of France is\n", "Paris"),  # the newline stays context, unscored
    (TEXT, " Alice was born in London"),  # truncated from the left
    *[("Answer: A B C D. Answer:", f" {letter}") for letter in "ABCD"],  # one model input
    ("The capital of France is", " Paris."),  # a duplicate
]
REQUESTS = [Instance(REQUEST_TYPE, {}, pair, i) for i, pair in enumerate(PAIRS)]


class FourthLM(TemplateLM):
    """A fourth backend: scores each window sequence as one prompt, by a forward pass of the
    tiny GPT-2 over the whole prompt (double-precision log-softmax), as a server would."""

    # TemplateLM's request methods, never called here
    _loglikelihood_tokens = loglikelihood_rolling = generate_until = None  # type: ignore[assignment]

    def __init__(self, hf: HFLM) -> None:
        super().__init__()
        self.hf = hf

    @property
    def eot_token_id(self) -> int:
        return self.hf.eot_token_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **_: Any) -> list:
        return self.hf.tok_encode(string)

    def score_prompts(self, prompts: list[tuple[int, ...]], starts: list[int]) -> list[TokenStats]:
        """The statistics of positions ``starts[i]:`` of each prompt."""
        out = []
        for prompt, start in zip(prompts, starts, strict=True):
            rows = prompt_logsoftmax(self.hf, list(prompt))[start - 1 :]  # row i - 1: position i
            targets = torch.tensor(prompt[start:])
            true = rows.gather(1, targets[:, None]).squeeze(1)
            hit = rows.argmax(-1) == targets
            out.append(TokenStats(true.numpy(), rows.max(-1).values.numpy(), hit.numpy()))
        return out


def score_fourth(lm: FourthLM, plan: Plan, disable_tqdm: bool) -> list[TokenStats]:
    return stats_by_prompt(plan, lm.score_prompts)


FOURTH = BackendSpec(
    name="fourth",
    class_path=f"{__name__}.FourthLM",
    check=lambda lm: None,
    rolling_max_seq_len=lambda lm: WINDOW,
    seq_cap=lambda lm: WINDOW + 1,
    score=score_fourth,
)


@pytest.fixture
def fourth_backend(monkeypatch: pytest.MonkeyPatch) -> Iterator[BackendSpec]:
    """FOURTH as its module and its line in BACKENDS would make it: listed, then installed."""
    monkeypatch.setattr(backends_module, "BACKENDS", (*backends_module.BACKENDS, FOURTH))
    install()
    yield FOURTH
    del FourthLM.token_stats  # the class outlives the test


@pytest.fixture(scope="module")
def hf(tiny_model_dir: Path) -> HFLM:
    return HFLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def reference(hf: HFLM) -> list[TokenStats]:
    return hf.token_stats(REQUESTS, disable_tqdm=True)


def hf_row(request: pytest.FixtureRequest) -> LM:
    """Another batch size: other batches, the same statistics."""
    path = str(request.getfixturevalue("tiny_model_dir"))
    return HFLM(pretrained=path, device="cpu", batch_size=1)


def vllm_row(request: pytest.FixtureRequest) -> LM:
    """The stand-in for lm_eval's VLLM, its module imported after calib_tasks.token_stats (so
    the method is installed on first use); max_length 66 makes the hf backend's windows."""
    module = types.ModuleType("lm_eval.models.vllm_causallms")
    module.VLLM = type("VLLM", (VLLMStandIn,), {})  # type: ignore[attr-defined]
    request.getfixturevalue("monkeypatch").setitem(sys.modules, module.__name__, module)
    return module.VLLM(request.getfixturevalue("hf"), 2)  # type: ignore[attr-defined]


def completions_row(request: pytest.FixtureRequest) -> LM:
    """local-completions on the fake server; max_length 66 makes the hf backend's windows."""
    server = FakeCompletionsServer(request.getfixturevalue("hf"))
    request.getfixturevalue("monkeypatch").setattr("requests.post", server)
    return completions_lm(request.getfixturevalue("tiny_model_dir"), batch_size=2)


def fourth_row(request: pytest.FixtureRequest) -> LM:
    request.getfixturevalue("fourth_backend")
    return FourthLM(request.getfixturevalue("hf"))


ROWS: dict[str, Callable[[pytest.FixtureRequest], LM]] = {
    "hf": hf_row,
    "vllm": vllm_row,
    "local-completions": completions_row,
    "fourth": fourth_row,
}
MARKS = {"local-completions": needs_api_extra}


def test_every_backend_has_a_row():
    assert [spec.name for spec in backends_module.BACKENDS] + ["fourth"] == list(ROWS)


@pytest.mark.parametrize(
    "backend", [pytest.param(name, marks=MARKS.get(name, ())) for name in ROWS]
)
def test_backend_gives_the_hf_statistics(backend, request, reference):
    lm = ROWS[backend](request)
    check_backend(lm)
    stats = getattr(lm, REQUEST_TYPE)(REQUESTS, disable_tqdm=True)
    (spec,) = [s for s in backends_module.BACKENDS if s.name == backend]
    assert vars(type(lm))[REQUEST_TYPE] is spec.token_stats  # installed from the spec
    assert len(stats) == len(reference)
    for got, want in zip(stats, reference, strict=True):
        assert got.n == want.n
        np.testing.assert_allclose(got.true_logprob, want.true_logprob, rtol=0, atol=1e-5)
        np.testing.assert_allclose(got.top1_logprob, want.top1_logprob, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(got.top1_is_true, want.top1_is_true)


def test_a_fourth_backend_is_one_spec(hf, request):
    fourth = FourthLM(hf)
    listed = r"local-completions \(lm_eval\.models\.openai_completions\.LocalCompletionsAPI\)"
    with pytest.raises(UnsupportedBackendError, match=rf"FourthLM cannot .*{listed}\.$"):
        check_backend(fourth)  # LM's default before the spec is listed
    request.getfixturevalue("fourth_backend")
    check_backend(fourth)
    installed = FourthLM.token_stats
    install()  # idempotent
    assert FourthLM.token_stats is installed is FOURTH.token_stats
    with pytest.raises(
        UnsupportedBackendError, match=rf"{listed}, fourth \({__name__}\.FourthLM\)\.$"
    ):
        DummyLM().token_stats(REQUESTS)


def test_installation_refuses_to_replace_a_foreign_token_stats(monkeypatch):
    class ForeignLM(FourthLM):
        def token_stats(self, requests: list[Instance]) -> list[TokenStats]:
            return []

    foreign = BackendSpec(
        name="foreign",
        class_path=f"{__name__}.ForeignLM",
        check=FOURTH.check,
        rolling_max_seq_len=FOURTH.rolling_max_seq_len,
        seq_cap=FOURTH.seq_cap,
        score=FOURTH.score,
    )
    monkeypatch.setattr(sys.modules[__name__], "ForeignLM", ForeignLM, raising=False)
    monkeypatch.setattr(backends_module, "BACKENDS", (*backends_module.BACKENDS, foreign))
    with pytest.raises(RuntimeError, match=r"ForeignLM already has a 'token_stats' attribute"):
        install()
    assert vars(ForeignLM)[REQUEST_TYPE] is not foreign.token_stats
