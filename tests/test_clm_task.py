"""calib_clm end to end through the real harness on the tiny model (64-token window)."""

from __future__ import annotations

import json
import math

import lm_eval
import numpy as np
import pytest
from harness_run import read_output, run_cli, write_task
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

import calib_metrics as cm
from calib_tasks import task_dir
from calib_tasks.clm import HISTOGRAM_RESOLUTION

N_DOCS = 4


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir):
    return HFLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=8)


def _mini_pages(n: int) -> list[str]:
    lines = (task_dir() / "data" / "clm_mini.jsonl").read_text().splitlines()
    return [json.loads(line)["page"] for line in lines[:n]]


def test_cli_results_equal_metrics_recomputed_from_samples(tmp_path, tiny_model_dir, tiny_lm):
    out = tmp_path / "out"
    run_cli(
        [
            "--model",
            "hf",
            "--model_args",
            f"pretrained={tiny_model_dir}",
            "--device",
            "cpu",
            "--include_path",
            str(task_dir()),
            "--tasks",
            "calib_clm_mini",
            "--limit",
            str(N_DOCS),
            "--output_path",
            str(out),
            "--log_samples",
        ],
        cwd=tmp_path,
    )
    results, samples = read_output(out)
    metrics = results["results"]["calib_clm_mini"]
    records = [s["ece"] for s in samples["calib_clm_mini"]]
    merged = cm.ConfidenceHistogram.merge(
        cm.ConfidenceHistogram.from_dict(r["histogram"]) for r in records
    )
    exact = cm.histogram_metrics(merged)
    assert metrics["ece,none"] == exact["ece"]
    assert metrics["acc,none"] == exact["acc"]
    assert metrics["mce,none"] == exact["mce"]
    assert metrics["brier,none"] == exact["brier_top_label"]
    assert metrics["ece_ci_low,none"] <= metrics["ece,none"] <= metrics["ece_ci_high,none"]

    # the same numbers straight from the backend's per-token statistics on the same documents
    pages = _mini_pages(N_DOCS)
    stats = tiny_lm.token_stats([Instance("token_stats", {}, ("", page), 0) for page in pages])
    confidence = np.concatenate(
        [np.minimum(np.exp(s.top1_logprob.astype(float)), 1) for s in stats]
    )
    correct = np.concatenate([s.top1_is_true for s in stats])
    n_tokens = sum(len(tiny_lm.tok_encode(page)) for page in pages)
    assert merged.n == confidence.size == n_tokens == sum(r["n_tokens"] for r in records)
    assert metrics["acc,none"] == pytest.approx(correct.mean(), abs=1e-12)
    assert metrics["ece,none"] == pytest.approx(cm.ece(confidence, correct), abs=1e-9)

    # bits_per_byte equals the harness's own loglikelihood_rolling on the same pages
    rolling = tiny_lm.loglikelihood_rolling(
        [Instance("loglikelihood_rolling", {}, (page,), 0) for page in pages]
    )
    n_bytes = sum(len(page.encode("utf-8")) for page in pages)
    assert metrics["bits_per_byte,none"] == pytest.approx(
        -sum(rolling) / n_bytes / math.log(2), rel=1e-5
    )
    # the samples file holds no per-token numbers
    line_sizes = [len(json.dumps(s)) for s in samples["calib_clm_mini"]]
    assert max(line_sizes) < 40 * HISTOGRAM_RESOLUTION * 8


def test_unsupported_backend_is_a_clear_error(task_manager):
    with pytest.raises(Exception, match=r"(?s)token_stats.*hf.*vllm.*local-completions"):
        lm_eval.simple_evaluate(
            model="dummy", tasks=["calib_clm_mini"], task_manager=task_manager, limit=2
        )


def test_empty_document_fails_naming_task_and_document(tmp_path):
    pages = [{"page": "Some text here."}, {"page": "   "}]
    manager = write_task(
        tmp_path, "_calib_clm_template_yaml", "calib_clm_broken", pages, doc_to_target="page"
    )
    with pytest.raises(ValueError, match=r"calib_clm_broken: document 1 of split 'test'.*empty"):
        lm_eval.simple_evaluate(model="dummy", tasks=["calib_clm_broken"], task_manager=manager)
