"""Every calibration metric in the harness's results equals its brute-force recomputation from
the records in the samples file (tests/support/brute_force.py: plain loops, not calib_metrics;
HELM's rows: HELM's own package): one CLI run per task through the real harness, on the tiny
model, driven by the metric table (a row without a reference here fails)."""

from __future__ import annotations

import dataclasses
import json
import math

import calibration  # HELM's package (uncertainty-calibration), the peer of the helm_* keys
import numpy as np
import pytest
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM
from support import brute_force as bf
from support.data import mini_pages
from support.generation import record_confidences
from support.harness import run_cli
from support.runs import read_output

from calib_metrics.recalibration import (
    HistogramBinning,
    IsotonicCalibration,
    PlattScaling,
    TemperatureScaling,
    cross_fit,
)
from calib_tasks import task_dir
from calib_tasks.scoring import metric_table
from calib_tasks.scoring.records import GENERATION, HISTOGRAM, MULTICLASS, TOP_LABEL
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
    "calib_facts_gen_mini": (
        GENERATION,
        20,
        {
            "calib_confidence": "seq,seq_joint,seq_min,answer,ptrue,verbalized",
            "calib_recalibration": "platt,isotonic,histogram",
        },
    ),
}
#: The filter the keys of a task carry (the harness's "none" unless the task has its own).
FILTERS = {"calib_facts_gen_mini": "object"}
RECALIBRATORS = {
    "temperature": TemperatureScaling.fit,
    "platt": PlattScaling.fit,
    "isotonic": IsotonicCalibration.fit,
    "histogram": HistogramBinning.fit,
}


#: Results and brute force agree to rounding: their sums run in other orders.
TOLERANCE = 1e-12


def _top_label(records):
    conf = np.array([r["confidence"] for r in records])
    return conf, np.array([r["correct"] for r in records], dtype=float)


def _options(records, field="probs"):
    """Each document's option probabilities under the rule's ``field``, and the gold labels."""
    return [r[field] for r in records], [r["label"] for r in records]


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
    """The brute-force ECE of the cross-fitted recalibration (the maps are calib_metrics'
    own, checked against scipy in tests/test_metrics_recalibration.py)."""
    conf, correct = _top_label(records)
    if name == "temperature":
        scores = np.array([r["loglikelihoods"] for r in records])
        labels = np.array([r["label"] for r in records])
        probs = cross_fit(_temperature, scores, labels, groups=_groups(records))
        return bf.ece(probs.max(axis=1), correct)
    recalibrated = cross_fit(RECALIBRATORS[name], conf, correct, groups=_groups(records))
    return bf.ece(np.clip(recalibrated, 0, 1), correct)


def _histograms(records):
    return [r["histogram"] for r in records]


def _interval(kind, records):
    if kind == HISTOGRAM:
        return bf.document_ece_interval(_histograms(records))
    return bf.item_ece_interval(*_top_label(records))


# (key, kind) -> brute-force reference from the records
REFERENCES = {
    **{
        (key, kind): lambda records, fn=fn: fn(*_top_label(records))
        for key, fn in (("ece", bf.ece), ("mce", bf.mce), ("auroc", bf.auroc))
        for kind in (TOP_LABEL, MULTICLASS)
    },
    ("brier", TOP_LABEL): lambda records: bf.brier_top_label(*_top_label(records)),
    ("brier", MULTICLASS): lambda records: bf.brier_multiclass(*_options(records)),
    ("nll", MULTICLASS): lambda records: bf.nll(*_options(records)),
    **{
        (key, HISTOGRAM): lambda records, name=name: bf.histogram_metrics(_histograms(records))[
            name
        ]
        for key, name in (
            ("acc", "acc"),
            ("ece", "ece"),
            ("mce", "mce"),
            ("brier", "brier_top_label"),
            ("uninformative_scores", "uninformative"),
        )
    },
    **{
        ("ece_ci_low", kind): lambda records, kind=kind: _interval(kind, records)[0]
        for kind in (TOP_LABEL, MULTICLASS, HISTOGRAM)
    },
    **{
        ("ece_ci_high", kind): lambda records, kind=kind: _interval(kind, records)[1]
        for kind in (TOP_LABEL, MULTICLASS, HISTOGRAM)
    },
    ("uninformative_scores", TOP_LABEL): lambda records: bf.uninformative(_top_label(records)[0]),
    ("uninformative_scores", MULTICLASS): lambda records: bf.uninformative(
        _top_label(records)[0], _options(records)[0]
    ),
}

# option-probability metric -> its brute force under a rule's record field (multiclass records)
PER_RULE = {
    "ece": lambda records, field: bf.ece(*bf.top_label(*_options(records, field))),
    "brier": lambda records, field: bf.brier_multiclass(*_options(records, field)),
    "classwise_ece": lambda records, field: bf.classwise_ece(*_options(records, field)),
    "sce": lambda records, field: bf.sce(*_options(records, field)),
}


def _method_records(records, method):
    """A generation task's records as top-label ones under one confidence method (those that
    have a confidence under it)."""
    return [
        {
            "confidence": record_confidences(r)[method],
            "correct": r["correct"],
            "relation": r["relation"],
        }
        for r in records
        if record_confidences(r)[method] is not None
    ]


def _generation_reference(metric, records):
    """The brute-force value of a generation row: per method on its top-label records (None when
    none has a confidence), the plain ``ece`` under the first method, counts of the missing."""
    if metric.key == "acc":
        return sum(r["correct"] for r in records) / len(records)
    if metric.key in ("answer_not_found", "verbalized_unparsed"):
        return float(sum(record_confidences(r)[metric.method.name] is None for r in records))
    method = (
        metric.method.name if metric.key != "ece" else next(iter(record_confidences(records[0])))
    )
    scored = _method_records(records, method)
    if not scored:
        return None
    if metric.recalibrator is not None:
        return _recalibrated_ece(scored, metric.recalibrator.name)
    base = metric.key.removesuffix(f"_{method}")
    if base == "aurc":
        return bf.aurc(*_top_label(scored))
    if (base, TOP_LABEL) in REFERENCES:
        return REFERENCES[(base, TOP_LABEL)](scored)
    return reference(dataclasses.replace(metric, key=base, method=None), TOP_LABEL, scored)


def reference(metric, kind, records):
    """The brute-force value of ``metric`` (a row of the table) on ``records`` of ``kind``; a
    row without one fails the test."""
    if kind == GENERATION:
        return _generation_reference(metric, records)
    if metric.recalibrator is not None:
        return _recalibrated_ece(records, metric.recalibrator.name)
    if not metric.rule.suffix and (metric.key, kind) in REFERENCES:
        return REFERENCES[(metric.key, kind)](records)
    base = metric.key.removesuffix(metric.rule.suffix) if metric.rule.suffix else metric.key
    if kind == TOP_LABEL:
        confidence, correct = _top_label(records)
    else:
        confidence, correct = map(np.array, bf.top_label(*_options(records, metric.rule.field)))
    correct = correct.astype(int)  # HELM's package wants ints
    if base == "helm_ece_10_bin":
        return calibration.get_ece_em(confidence, correct, num_bins=10)
    if base == "helm_selective_acc_10":
        return calibration.get_selective_stats(confidence, correct)[1]
    if kind == MULTICLASS and base in PER_RULE:
        return PER_RULE[base](records, metric.rule.field)
    pytest.fail(f"{metric.key}: no brute-force reference for {kind} records; write one")


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
    suffix = f",{FILTERS.get(task, 'none')}"
    assert {m.key + suffix for m in rows} <= set(metrics)
    for metric in rows:
        expected = reference(metric, kind, records)
        found = metrics[metric.key + suffix]
        if expected is None:  # a method under which no answer has a confidence
            assert found is None, metric.key
        else:
            assert found == pytest.approx(expected, abs=TOLERANCE), metric.key
        assert results["higher_is_better"][task][metric.key] is metric.higher_is_better
    ci = ("ece_ci_low", "ece", "ece_ci_high")
    if kind == GENERATION:
        ci = tuple(f"{key}_seq" for key in ci)
    low, estimate, high = (metrics[key + suffix] for key in ci)
    assert low <= estimate <= high
    for key, value in metrics.items():
        if key.endswith(suffix) and "stderr" not in key:
            unmeasured = value is None and kind == GENERATION  # checked against None above
            assert unmeasured or (isinstance(value, float) and math.isfinite(value)), key
    assert results["versions"][task] == 1.0


def test_mmlu_records_keep_what_breakdowns_need(cli_runs):
    results, samples = cli_runs("calib_mmlu_mini")
    records = [s["ece"] for s in samples]
    conf, correct = _top_label(records)
    probs = np.array(_options(records)[0])
    assert results["results"]["calib_mmlu_mini"]["acc,none"] == correct.mean()
    assert all(r["category"] == SUBJECT_CATEGORY[r["subject"]] for r in records)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert np.array_equal(conf, probs.max(axis=1))


def test_clm_numbers_equal_the_backend_and_loglikelihood_rolling(cli_runs, tiny_model_dir):
    results, samples = cli_runs("calib_clm_mini")
    metrics = results["results"]["calib_clm_mini"]
    records = [s["ece"] for s in samples]
    lm = HFLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=8)
    pages = mini_pages(len(records))
    # the same numbers straight from the backend's per-token statistics on the same documents
    stats = lm.token_stats([Instance("token_stats", {}, ("", page), 0) for page in pages])
    confidence = np.concatenate(
        [np.minimum(np.exp(s.top1_logprob.astype(float)), 1) for s in stats]
    )
    correct = np.concatenate([s.top1_is_true for s in stats])
    n_tokens = sum(len(lm.tok_encode(page)) for page in pages)
    assert confidence.size == n_tokens == sum(r["n_tokens"] for r in records)
    assert metrics["acc,none"] == pytest.approx(correct.mean(), abs=1e-12)
    assert metrics["ece,none"] == pytest.approx(bf.ece(confidence, correct), abs=1e-9)
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
