"""Every backend of ``calib_tasks.token_stats.BACKENDS`` gives the hf backend's statistics.

One row per backend and setting (batch size, concurrency, prompts as tokens or text): its model
on the tiny GPT-2 (vLLM's and the completions server's fakes of tests/support/fakes.py answer
from its logits) with the hf backend's windows, asked through the evaluator's dispatch
``getattr(lm, "token_stats")`` for the same documents and pairs; a row also checks what its
setting must show (how the prompts were batched, what was sent). Adding a backend is its module,
its spec in ``BACKENDS`` and its row here; a fourth backend, declared below as one spec, shows it.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM, TemplateLM
from lm_eval.models.dummy import DummyLM
from lm_eval.models.huggingface import HFLM
from support.fakes import (
    FakeCompletionsServer,
    completions_lm,
    install_vllm_module,
    needs_api_extra,
    prompt_logsoftmax,
)
from support.stats import PAIRS, REVERSED, TEXT, assert_same_stats, stats_requests
from support.tiny_model import WINDOW

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

REQUESTS = stats_requests(PAIRS)


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


#: A row: the backend's model in one setting, and the check of what that setting must show,
#: run after the statistics were compared.
Row = Callable[..., tuple[LM, Callable[[], None]]]


def nothing_more() -> None:
    return None


def hf_row(request: pytest.FixtureRequest, batch_size: int) -> tuple[LM, Callable[[], None]]:
    """Another batch size: other batches, the same statistics."""
    path = str(request.getfixturevalue("tiny_model_dir"))
    return HFLM(pretrained=path, device="cpu", batch_size=batch_size), nothing_more


def vllm_row(
    request: pytest.FixtureRequest, batch_size: int | str
) -> tuple[LM, Callable[[], None]]:
    """The stand-in for lm_eval's VLLM, its module imported after calib_tasks.token_stats (so
    the method is installed on first use); max_length 66 makes the hf backend's windows. Each
    distinct window sequence is one prompt, in batches of ``batch_size`` ("auto": one batch)."""
    hf = request.getfixturevalue("hf")
    lm = install_vllm_module(request.getfixturevalue("monkeypatch"))(hf, batch_size)

    def batched() -> None:
        prompts = sum(lm.calls)
        # the windows of the documents TEXT[:30], TEXT and REVERSED * 2
        windows = 1 + math.ceil(len(hf.tok_encode(TEXT)) / WINDOW)
        windows += math.ceil(len(hf.tok_encode(REVERSED * 2)) / WINDOW)
        windows += len(PAIRS) - 3 - 1  # one a pair, the duplicate's shared
        assert prompts == windows
        batches = 1 if batch_size == "auto" else math.ceil(prompts / batch_size)
        assert len(lm.calls) == batches

    return lm, batched


def completions_row(
    request: pytest.FixtureRequest, **options: Any
) -> tuple[LM, Callable[[], None]]:
    """local-completions on the fake server with ``options``; max_length 66 makes the hf
    backend's windows."""
    server = FakeCompletionsServer(request.getfixturevalue("hf"))
    request.getfixturevalue("monkeypatch").setattr("requests.post", server)
    lm = completions_lm(request.getfixturevalue("tiny_model_dir"), **options)

    def sent() -> None:
        # the first request, the alignment self-check's generation (one prompt), the others
        assert [payload["echo"] for payload in server.payloads].count(False) == 1
        assert server.payloads[1]["echo"] is False
        for payload in server.payloads:
            prompt = payload["prompt"]
            if options.get("tokenized_requests", True):
                assert all(isinstance(p, list) for p in prompt)
            else:
                assert isinstance(prompt, str if options["batch_size"] == 1 else list)
            size = 1 if payload["echo"] is False else options["batch_size"]
            assert len(prompt if isinstance(prompt, list) else [prompt]) <= size

    return lm, sent


def fourth_row(request: pytest.FixtureRequest) -> tuple[LM, Callable[[], None]]:
    request.getfixturevalue("fourth_backend")
    return FourthLM(request.getfixturevalue("hf")), nothing_more


ROWS: dict[str, Row] = {
    "hf": hf_row,
    "vllm": vllm_row,
    "local-completions": completions_row,
    "fourth": fourth_row,
}
#: Per backend, the settings of its rows (keyword arguments of its row function).
SETTINGS: dict[str, list[dict[str, Any]]] = {
    "hf": [{"batch_size": 1}],
    "vllm": [{"batch_size": 2}, {"batch_size": "auto"}],
    "local-completions": [
        {"batch_size": 1},
        {"batch_size": 2},
        {"batch_size": 3, "num_concurrent": 2},
        {"batch_size": 1, "tokenized_requests": False},
        {"batch_size": 2, "tokenized_requests": False},
    ],
    "fourth": [{}],
}
MARKS = {"local-completions": needs_api_extra}


def test_every_backend_has_a_row():
    assert [spec.name for spec in backends_module.BACKENDS] + ["fourth"] == list(ROWS)
    assert list(SETTINGS) == list(ROWS)


@pytest.mark.parametrize(
    ("backend", "setting"),
    [
        pytest.param(
            name,
            setting,
            marks=MARKS.get(name, ()),
            id="-".join([name, *(f"{key}={value}" for key, value in setting.items())]),
        )
        for name in ROWS
        for setting in SETTINGS[name]
    ],
)
def test_backend_gives_the_hf_statistics(backend, setting, request, reference):
    lm, check_setting = ROWS[backend](request, **setting)
    check_backend(lm)
    stats = getattr(lm, REQUEST_TYPE)(REQUESTS, disable_tqdm=True)
    (spec,) = [s for s in backends_module.BACKENDS if s.name == backend]
    assert vars(type(lm))[REQUEST_TYPE] is spec.token_stats  # installed from the spec
    assert len(stats) == len(reference)
    for got, want in zip(stats, reference, strict=True):
        assert_same_stats(got, want)
    check_setting()


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
