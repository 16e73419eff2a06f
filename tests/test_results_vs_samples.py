"""Every calibration metric in the harness's results equals calib_metrics recomputed by brute
force from the records in the samples file: one CLI run per task through the real harness, on
the tiny model, driven by the metric table (a row without a reference here fails)."""

from __future__ import annotations

import json
import math

import calibration  # HELM's package (uncertainty-calibration), the peer of the helm_* keys
import numpy as np
import pytest
from harness_run import read_output, run_cli
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

import calib_metrics as cm
from calib_metrics.recalibration import (
    HistogramBinning,
    IsotonicCalibration,
    PlattScaling,
    TemperatureScaling,
    cross_fit,
)
from calib_tasks import task_dir
from calib_tasks.scoring import metric_table
from calib_tasks.scoring.records import HISTOGRAM, MULTICLASS, TOP_LABEL
from calib_tasks.scoring.settings import task_settings
from calib_tasks.tasks.clm import HISTOGRAM_RESOLUTION
from calib_tasks.tasks.mmlu import SUBJECT_CATEGORY

# task -> (record kind, --limit, --metadata): every confidence rule and recalibrator where the
# task computes them
EVERY_RULE = {"calib_rules": "sum,norm,min,letter"}
RECALIBRATION = {"calib_recalibration": ["temperature", "platt", "isotonic", "histogram"]}
TASKS = {
    "calib_mmlu_mini": (MULTICLASS, 60, {**EVERY_RULE, **RECALIBRATION}),
    "calib_mmlu_vocab_mini": (TOP_LABEL, 30, {}),
    "calib_facts_mini": (TOP_LABEL, 60, {"calib_recalibration": "platt,isotonic,histogram"}),
    "calib_clm_mini": (HISTOGRAM, 4, {}),
}
RECALIBRATORS = {
    "temperature": TemperatureScaling.fit,
    "platt": PlattScaling.fit,
    "isotonic": IsotonicCalibration.fit,
    "histogram": HistogramBinning.fit,
}


def _top_label(records):
    conf = np.array([r["confidence"] for r in records])
    return conf, np.array([r["correct"] for r in records], dtype=float)


def _options(records, field="probs"):
    return np.array([r[field] for r in records]), np.array([r["label"] for r in records])


def _rule_top_label(records, field):
    """(confidence, correct) of the first most probable option under the rule's field."""
    conf, correct = [], []
    for r in records:
        probs = r[field]
        best = max(range(len(probs)), key=lambda j: (probs[j], -j))
        conf.append(min(probs[best], 1.0))
        correct.append(float(best == r["label"]))
    return np.array(conf), np.array(correct)


def _classwise(records, field):
    """Every (document, option) pair as one prediction, binned by one ECE."""
    probs, labels = _options(records, field)
    pairs = [
        (p, float(j == y)) for row, y in zip(probs, labels, strict=True) for j, p in enumerate(row)
    ]
    return cm.ece(*map(np.array, zip(*pairs, strict=True)))


def _sce(records, field):
    probs, labels = _options(records, field)
    k = probs.shape[1]
    return sum(cm.ece(probs[:, j], (labels == j).astype(float)) for j in range(k)) / k


def _groups(records):
    for field in ("subject", "relation"):
        values = [r.get(field) for r in records]
        if None not in values and len(set(values)) >= 2:
            return np.array(values)
    return None


def _temperature(scores, labels):
    """The fitted temperature; infinite where the scores say nothing of the gold option."""
    try:
        return TemperatureScaling.fit(scores, labels)
    except ValueError:
        return TemperatureScaling(math.inf)


def _recalibrated_ece(records, name):
    conf, correct = _top_label(records)
    if name == "temperature":
        scores = np.array([r["loglikelihoods"] for r in records])
        labels = np.array([r["label"] for r in records])
        probs = cross_fit(_temperature, scores, labels, groups=_groups(records))
        return cm.ece(probs.max(axis=1), correct)
    recalibrated = cross_fit(RECALIBRATORS[name], conf, correct, groups=_groups(records))
    return cm.ece(np.clip(recalibrated, 0, 1), correct)


def _merged(records):
    return cm.ConfidenceHistogram.merge(
        cm.ConfidenceHistogram.from_dict(r["histogram"]) for r in records
    )


def _tokens(records):
    return cm.histogram_metrics(_merged(records))


def _interval(kind, records):
    if kind == HISTOGRAM:
        histograms = (cm.ConfidenceHistogram.from_dict(r["histogram"]) for r in records)
        return cm.bootstrap_ci(histograms=cm.canonical_order(histograms), metric="ece")
    return cm.bootstrap_ci(*_top_label(records), metric="ece")


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


def _per_rule(records, field, base):
    """The brute-force value of the option-probability metric ``base`` under ``field``."""
    if base == "ece":
        return cm.ece(*_rule_top_label(records, field))
    if base == "brier":
        return cm.brier_multiclass(*_options(records, field))
    if base == "classwise_ece":
        return _classwise(records, field)
    assert base == "sce", base
    return _sce(records, field)


def reference(metric, kind, records):
    """The brute-force value of ``metric`` (a row of the table) on ``records`` of ``kind``, and
    whether it must equal the results exactly (HELM's peer agrees to rounding only)."""
    if metric.recalibrator is not None:
        return _recalibrated_ece(records, metric.recalibrator.name), True
    if not metric.rule.suffix and (metric.key, kind) in REFERENCES:
        return REFERENCES[(metric.key, kind)](records), True
    base = metric.key.removesuffix(metric.rule.suffix) if metric.rule.suffix else metric.key
    if kind == TOP_LABEL:
        top_label = _top_label(records)
    else:
        top_label = _rule_top_label(records, metric.rule.field)
    confidence, correct = top_label[0], top_label[1].astype(int)  # HELM's package wants ints
    if base == "helm_ece_10_bin":
        return calibration.get_ece_em(confidence, correct, num_bins=10), False
    if base == "helm_selective_acc_10":
        return calibration.get_selective_stats(confidence, correct)[1], False
    assert kind == MULTICLASS, (metric.key, kind)
    return _per_rule(records, metric.rule.field, base), True


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
                + ["--log_samples", "--metadata", json.dumps(TASKS[task][2])],
                cwd=tmp,
            )
            results, samples = read_output(tmp / "out")
            runs[task] = (results, samples[task])
        return runs[task]

    return run


@pytest.mark.parametrize("task", TASKS)
def test_results_equal_brute_force_from_the_samples(cli_runs, task):
    kind, limit, metadata = TASKS[task]
    results, samples = cli_runs(task)
    metrics = results["results"][task]
    records = [sample["ece"] for sample in samples]
    assert len(records) == limit
    settings = task_settings(metadata, task, kind)
    rows = metric_table.metrics_for(kind, settings)
    assert {f"{m.key},none" for m in rows} <= set(metrics)
    for metric in rows:
        expected, exact = reference(metric, kind, records)
        found = metrics[f"{metric.key},none"]
        assert found == (expected if exact else pytest.approx(expected, abs=1e-12)), metric.key
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


def test_the_runs_cover_every_row_of_the_table():
    """Each row is computed, and checked above, by at least one of the runs."""
    covered = set()
    for task, (kind, _, metadata) in TASKS.items():
        settings = task_settings(metadata, task, kind)
        covered |= {m.key for m in metric_table.metrics_for(kind, settings)}
    assert covered == {m.key for m in metric_table.METRICS}
