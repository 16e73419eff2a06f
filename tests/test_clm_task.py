"""calib_clm end to end through the real harness on the tiny model (64-token window)."""

from __future__ import annotations

import lm_eval
import pytest
from lm_eval.models.huggingface import HFLM
from support.harness import write_task

from calib_tasks.token_stats import UnsupportedBackendError

N_DOCS = 4


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir):
    return HFLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=8)


def test_unsupported_backend_is_a_clear_error(task_manager):
    with pytest.raises(Exception, match=r"(?s)token_stats.*hf.*vllm.*local-completions"):
        lm_eval.simple_evaluate(
            model="dummy", tasks=["calib_clm_mini"], task_manager=task_manager, limit=2
        )


def test_unsupported_backend_fails_before_any_request_is_sent(task_manager, monkeypatch):
    """calib_mmlu's loglikelihood requests would otherwise run first, and be lost."""
    from lm_eval.models.dummy import DummyLM

    sent = []
    monkeypatch.setattr(DummyLM, "loglikelihood", lambda self, requests, **_: sent.append(1))
    with pytest.raises(UnsupportedBackendError, match=r"task 'calib_clm_mini'.*DummyLM"):
        lm_eval.simple_evaluate(
            model="dummy",
            tasks=["calib_mmlu_mini", "calib_clm_mini"],
            task_manager=task_manager,
            limit=2,
        )
    assert sent == []


def test_empty_document_fails_naming_task_and_document(tmp_path):
    pages = [{"page": "Some text here."}, {"page": "   "}]
    manager = write_task(
        tmp_path, "_calib_clm_template_yaml", "calib_clm_broken", pages, doc_to_target="page"
    )
    with pytest.raises(ValueError, match=r"calib_clm_broken: document 1 of split 'test'.*empty"):
        lm_eval.simple_evaluate(model="dummy", tasks=["calib_clm_broken"], task_manager=manager)
