"""Every calibration metric in the harness's results equals calib_metrics recomputed by brute
force from the records in the samples file: one CLI run per task through the real harness, on
the tiny model, driven by the metric table (a row without a reference here fails)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from harness_run import read_output, run_cli
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

import calib_metrics as cm
from calib_tasks import metric_table, task_dir
from calib_tasks.clm import HISTOGRAM_RESOLUTION
from calib_tasks.mmlu import SUBJECT_CATEGORY
from calib_tasks.records import HISTOGRAM, MULTICLASS, TOP_LABEL

# task -> (record kind, --limit)
TASKS = {
    "calib_mmlu_mini": (MULTICLASS, 60),
    "calib_mmlu_vocab_mini": (TOP_LABEL, 30),
    "calib_facts_mini": (TOP_LABEL, 60),
    "calib_clm_mini": (HISTOGRAM, 4),
}


def _top_label(records):
    conf = np.array([r["confidence"] for r in records])
    return conf, np.array([r["correct"] for r in records], dtype=float)


def _options(records, rule="probs"):
    return np.array([r[rule] for r in records]), np.array([r["label"] for r in records])


def _merged(records):
    return cm.ConfidenceHistogram.merge(
        cm.ConfidenceHistogram.from_dict(r["histogram"]) for r in records
    )


def _tokens(records):
    return cm.histogram_metrics(_merged(records))


def _interval(kind, records):
    if kind == HISTOGRAM:
        return cm.histogram_bootstrap_ci(
            cm.canonical_order(cm.ConfidenceHistogram.from_dict(r["histogram"]) for r in records)
        )["ece"]
    return cm.binned_bootstrap_ci(*_top_label(records))["ece"]


# (key, kind) -> brute-force reference from the records
REFERENCES = {
    **{
        (key, kind): lambda records, fn=fn: fn(*_top_label(records))
        for key, fn in (("ece", cm.ece), ("mce", cm.mce), ("auroc", cm.auroc))
        for kind in (TOP_LABEL, MULTICLASS)
    },
    ("brier", TOP_LABEL): lambda records: cm.brier_top_label(*_top_label(records)),
    ("brier", MULTICLASS): lambda records: cm.brier_multiclass(*_options(records)),
    ("nll", MULTICLASS): lambda records: cm.nll(*_options(records)),
    ("ece_norm", MULTICLASS): lambda records: cm.ece(
        *cm.top_label_from_probs(*_options(records, "probs_norm"))
    ),
    ("brier_norm", MULTICLASS): lambda records: cm.brier_multiclass(
        *_options(records, "probs_norm")
    ),
    **{
        (key, HISTOGRAM): lambda records, name=name: _tokens(records)[name]
        for key, name in (
            ("acc", "acc"),
            ("ece", "ece"),
            ("mce", "mce"),
            ("brier", "brier_top_label"),
        )
    },
    **{
        ("ece_ci_low", kind): lambda records, kind=kind: _interval(kind, records).low
        for kind in (TOP_LABEL, MULTICLASS, HISTOGRAM)
    },
    **{
        ("ece_ci_high", kind): lambda records, kind=kind: _interval(kind, records).high
        for kind in (TOP_LABEL, MULTICLASS, HISTOGRAM)
    },
    ("uninformative_scores", TOP_LABEL): lambda records: float(
        cm.uninformative_reason(_top_label(records)[0]) is not None
    ),
    ("uninformative_scores", MULTICLASS): lambda records: float(
        cm.uninformative_reason(_top_label(records)[0], option_probs=_options(records)[0])
        is not None
    ),
    ("uninformative_scores", HISTOGRAM): lambda records: float(
        cm.histogram_uninformative_reason(_merged(records)) is not None
    ),
}


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory, tiny_long_model_dir, tiny_model_dir):
    """Per task: (results, records) of one ``lm_eval`` run with ``--log_samples``, made on
    first use (the token task on the 64-token window, so that rolling windows are exercised)."""
    runs: dict[str, tuple[dict, list[dict]]] = {}

    def run(task: str):
        if task not in runs:
            tmp = tmp_path_factory.mktemp(task)
            model = tiny_model_dir if task == "calib_clm_mini" else tiny_long_model_dir
            run_cli(
                ["--model", "hf", "--model_args", f"pretrained={model}", "--device", "cpu"]
                + ["--include_path", str(task_dir()), "--tasks", task]
                + ["--limit", str(TASKS[task][1]), "--output_path", str(tmp / "out")]
                + ["--log_samples"],
                cwd=tmp,
            )
            results, samples = read_output(tmp / "out")
            runs[task] = (results, samples[task])
        return runs[task]

    return run


@pytest.mark.parametrize("task", TASKS)
def test_results_equal_brute_force_from_the_samples(cli_runs, task):
    kind, limit = TASKS[task]
    results, samples = cli_runs(task)
    metrics = results["results"][task]
    records = [sample["ece"] for sample in samples]
    assert len(records) == limit
    for metric in metric_table.metrics_for(kind):
        reference = REFERENCES.get((metric.key, kind))
        assert reference is not None, f"no brute-force reference for {metric.key} on {kind}"
        assert metrics[f"{metric.key},none"] == reference(records), metric.key
        assert results["higher_is_better"][task][metric.key] is metric.higher_is_better
    assert metrics["ece_ci_low,none"] <= metrics["ece,none"] <= metrics["ece_ci_high,none"]
    for key, value in metrics.items():
        if key.endswith(",none") and "stderr" not in key:
            assert isinstance(value, float) and math.isfinite(value), key
    assert results["versions"][task] == 1.0


def test_mmlu_records_keep_what_breakdowns_need(cli_runs):
    results, samples = cli_runs("calib_mmlu_mini")
    records = [s["ece"] for s in samples]
    conf, correct = _top_label(records)
    probs, _ = _options(records)
    assert results["results"]["calib_mmlu_mini"]["acc,none"] == correct.mean()
    assert all(r["category"] == SUBJECT_CATEGORY[r["subject"]] for r in records)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert np.array_equal(conf, probs.max(axis=1))


def test_clm_numbers_equal_the_backend_and_loglikelihood_rolling(cli_runs, tiny_model_dir):
    results, samples = cli_runs("calib_clm_mini")
    metrics = results["results"]["calib_clm_mini"]
    records = [s["ece"] for s in samples]
    lm = HFLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=8)
    lines = (task_dir() / "data" / "clm_mini.jsonl").read_text().splitlines()
    pages = [json.loads(line)["page"] for line in lines[: len(records)]]
    # the same numbers straight from the backend's per-token statistics on the same documents
    stats = lm.token_stats([Instance("token_stats", {}, ("", page), 0) for page in pages])
    confidence = np.concatenate(
        [np.minimum(np.exp(s.top1_logprob.astype(float)), 1) for s in stats]
    )
    correct = np.concatenate([s.top1_is_true for s in stats])
    n_tokens = sum(len(lm.tok_encode(page)) for page in pages)
    assert confidence.size == n_tokens == sum(r["n_tokens"] for r in records)
    assert metrics["acc,none"] == pytest.approx(correct.mean(), abs=1e-12)
    assert metrics["ece,none"] == pytest.approx(cm.ece(confidence, correct), abs=1e-9)
    # bits_per_byte equals the harness's own loglikelihood_rolling on the same pages
    rolling = lm.loglikelihood_rolling(
        [Instance("loglikelihood_rolling", {}, (page,), 0) for page in pages]
    )
    n_bytes = sum(len(page.encode("utf-8")) for page in pages)
    assert metrics["bits_per_byte,none"] == pytest.approx(
        -sum(rolling) / n_bytes / math.log(2), rel=1e-5
    )
    # the samples file holds no per-token numbers
    assert max(len(json.dumps(s)) for s in samples) < 40 * HISTOGRAM_RESOLUTION * 8


def test_every_task_kind_has_a_reference_for_every_row():
    for kind in (TOP_LABEL, MULTICLASS, HISTOGRAM):
        for metric in metric_table.metrics_for(kind):
            assert (metric.key, kind) in REFERENCES, (metric.key, kind)
