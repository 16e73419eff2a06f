"""The registered calib aggregations, called as the harness calls them: one list of values per
metric key, the keys of one task after another."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from lm_eval.api.registry import get_aggregation as registered

import calib_metrics as cm
from calib_metrics.histogram import canonical_order
from calib_tasks.harness import aggregations
from calib_tasks.scoring import metric_table
from calib_tasks.scoring import records as record_schema
from calib_tasks.scoring.records import histogram_record, share_record, top_label_record

TOP_LABEL_KEYS = ("ece", "mce", "brier", "auroc", "nll", "ece_ci_low", "ece_ci_high")
HISTOGRAM_KEYS = ("ece", "mce", "brier", "acc", "ece_ci_low", "ece_ci_high")


def get_aggregation(key: str):
    """The registered aggregation of the metric table's row ``key``."""
    return registered(f"calib_{key}")


def _task_values(records: list[dict], keys: tuple[str, ...]) -> dict[str, list]:
    """What the harness hands each aggregation: per key, the values of every sample."""
    per_sample = [share_record(record, keys) for record in records]
    return {key: [values[key] for values in per_sample] for key in keys}


def _mmlu_like(seed: int, n: int) -> tuple[list[dict], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(4), size=n)
    labels = rng.integers(0, 4, size=n)
    records = [
        top_label_record(p.max(), p.argmax() == y, probs=p.tolist(), label=int(y))
        for p, y in zip(probs, labels, strict=True)
    ]
    return records, probs, labels


def _documents(seed: int, n_docs: int) -> tuple[list[dict], np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(20, 200, size=n_docs)
    confidence = np.round(rng.random(sizes.sum()), 2)  # on the histogram's cells: exact
    correct = rng.random(sizes.sum()) < confidence
    doc = np.repeat(np.arange(n_docs), sizes)
    records = [
        histogram_record(
            cm.ConfidenceHistogram.from_samples(
                confidence[doc == d], correct[doc == d], resolution=100
            )
        )
        for d in range(n_docs)
    ]
    return records, confidence, correct, doc


def test_interleaved_tasks_each_get_their_own_numbers():
    mmlu, probs, labels = _mmlu_like(0, 300)
    docs, confidence, correct, doc = _documents(1, 12)
    mmlu_values = _task_values(mmlu, TOP_LABEL_KEYS)
    doc_values = _task_values(docs, HISTOGRAM_KEYS)
    top_conf, top_correct = probs.max(axis=1), (probs.argmax(axis=1) == labels).astype(float)
    top_ci = cm.bootstrap_ci(top_conf, top_correct, metric="ece")
    # documents are resampled in their canonical order: the groups numbered in that order
    hists = [cm.ConfidenceHistogram.from_dict(record["histogram"]) for record in docs]
    rank = {id(h): i for i, h in enumerate(canonical_order(hists))}
    canonical_doc = np.array([rank[id(hists[d])] for d in doc])
    doc_ci = cm.bootstrap_ci(confidence, correct, metric="ece", groups=canonical_doc)
    expected_mmlu = {
        "ece": cm.ece(top_conf, top_correct),
        "mce": cm.mce(top_conf, top_correct),
        "brier": cm.brier_multiclass(probs, labels),
        "auroc": cm.auroc(top_conf, top_correct),
        "nll": cm.nll(probs, labels),
        "ece_ci_low": top_ci.low,
        "ece_ci_high": top_ci.high,
    }
    expected_docs = {
        "ece": cm.ece(confidence, correct),
        "mce": cm.mce(confidence, correct),
        "brier": cm.brier_top_label(confidence, correct),
        "acc": correct.mean(),
        "ece_ci_low": doc_ci.low,
        "ece_ci_high": doc_ci.high,
    }
    # one key of one task, then one of the other, and back: no task sees the other's pool
    for mmlu_key, doc_key in zip(TOP_LABEL_KEYS, HISTOGRAM_KEYS, strict=False):
        got = get_aggregation(mmlu_key)(mmlu_values[mmlu_key])
        assert got == pytest.approx(expected_mmlu[mmlu_key], abs=1e-12), mmlu_key
        got = get_aggregation(doc_key)(doc_values[doc_key])
        assert got == pytest.approx(expected_docs[doc_key], abs=1e-12), doc_key
    assert get_aggregation("nll")(mmlu_values["nll"]) == pytest.approx(expected_mmlu["nll"])


def test_records_equal_in_value_but_distinct_are_pooled_afresh():
    records, *_ = _mmlu_like(2, 50)
    first = get_aggregation("ece")(records)
    flipped = [dict(r, correct=1 - r["correct"]) for r in records]
    assert get_aggregation("ece")(flipped) != first
    assert get_aggregation("ece")([dict(r) for r in records]) == first


def test_one_bootstrap_serves_both_interval_ends(monkeypatch):
    calls = []
    bootstrap = cm.bootstrap_ci

    def counting(*args, **kwargs):
        calls.append(1)
        return bootstrap(*args, **kwargs)

    monkeypatch.setattr(record_schema.cm, "bootstrap_ci", counting)
    records, *_ = _mmlu_like(3, 200)
    values = _task_values(records, TOP_LABEL_KEYS)
    low = get_aggregation("ece_ci_low")(values["ece_ci_low"])
    high = get_aggregation("ece_ci_high")(values["ece_ci_high"])
    assert low <= get_aggregation("ece")(values["ece"]) <= high
    assert len(calls) == 1


def test_no_records_and_foreign_values_are_named():
    with pytest.raises(ValueError, match="no samples to aggregate"):
        get_aggregation("ece")([])
    with pytest.raises(ValueError, match="sample 1 is not a 'confidence' record"):
        get_aggregation("mce")([top_label_record(0.5, True), 0.7])
    docs, *_ = _documents(4, 3)
    with pytest.raises(ValueError, match="auroc is not computable from token histograms"):
        get_aggregation("auroc")(docs)


def test_token_interval_does_not_depend_on_the_order_documents_arrive_in():
    """Data parallelism gathers the records rank by rank: 2 ranks give documents 0, 2, 4, ...
    then 1, 3, 5, ...; the interval must be that of one process."""
    docs, *_ = _documents(5, 40)
    two_ranks = docs[0::2] + docs[1::2]
    for key in ("ece_ci_low", "ece_ci_high"):
        one = get_aggregation(key)(_task_values(docs, HISTOGRAM_KEYS)[key])
        two = get_aggregation(key)(_task_values(two_ranks, HISTOGRAM_KEYS)[key])
        assert one == two, key


def test_uninformative_scores_are_marked_and_named(caplog):
    tied = [top_label_record(0.25, i % 4 == 0, probs=[0.25] * 4, label=0) for i in range(20)]
    aggregate = aggregations.for_task("calib_tied", get_aggregation("uninformative_scores"))
    with caplog.at_level("WARNING"):
        assert aggregate(tied) == 1.0
    (warning,) = [r.getMessage() for r in caplog.records if "NO INFORMATION" in r.getMessage()]
    assert "calib_tied" in warning and "all 20 confidences equal 0.25" in warning
    informative, *_ = _mmlu_like(6, 50)
    assert aggregate(informative) == 0.0
    hist = cm.ConfidenceHistogram.from_samples([1.0] * 5, [1, 0, 1, 1, 0], resolution=100)
    ones = [histogram_record(hist)]
    assert aggregate(ones * 3) == 1.0


def test_aggregation_errors_name_the_task():
    docs, *_ = _documents(7, 3)
    aggregate = aggregations.for_task("calib_docs", get_aggregation("auroc"))
    with pytest.raises(ValueError, match="task 'calib_docs': auroc is not computable"):
        aggregate(docs)


def test_the_package_imports_when_plain_metric_names_are_taken():
    """The registry is process-wide: the harness or another plugin may own ``ece`` already."""
    code = (
        "from lm_eval.api.registry import register_aggregation\n"
        "for name in ('ece', 'mce', 'nll', 'auroc', 'aurc', 'smooth_ece', 'brier', 'acc'):\n"
        "    register_aggregation(name)(lambda items: 0.0)\n"
        "import calib_tasks.tasks.base, calib_tasks.tasks.mmlu\n"
        "from lm_eval.api.registry import get_aggregation\n"
        "print(get_aggregation('calib_ece').__name__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "calib_ece"


def test_every_metric_is_registered_under_the_package_prefix():
    for metric in metric_table.METRICS:
        assert registered(metric.aggregation) is aggregations.AGGREGATIONS[metric.key]
        assert metric.aggregation == f"calib_{metric.key}"
