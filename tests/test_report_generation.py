"""calib-report on generative tasks: the table of confidence methods x metrics, the flip notice
between methods, the figures per method (reliability, risk-coverage), the recalibration per
method, and the skip note of a stock generate_until run (no log-probabilities logged).

Two sources: runs written here from hand-made generation records (two runs whose order by ECE
flips between the seq and the ptrue method, answers without an ``answer`` or a ``verbalized``
confidence, a method whose confidences are all equal), checked against brute force computed in
the test; and one real run of the tiny model through the harness (a wrapped and a stock
``generate_until`` task), checked against brute force on the records its samples file logged
and against its results file.
"""

from __future__ import annotations

import doctest
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from support import brute_force as bf
from support.generation import record_confidences, write_generation_task, write_generation_wrapper
from support.harness import evaluate
from support.runs import read_output, save_run
from support.summary import table_rows

import calib_metrics as cm
from calib_metrics.helm import helm_ece_equal_mass
from calib_metrics.recalibration import (
    HistogramBinning,
    IsotonicCalibration,
    PlattScaling,
    cross_fit,
)
from calib_tasks.render import risk_coverage
from calib_tasks.render.risk_coverage import RiskCoverageData
from calib_tasks.report.build import write_report
from calib_tasks.report.entries import ReportOptions, task_entries
from calib_tasks.report.methods import method_rows
from calib_tasks.report.notes import Notes
from calib_tasks.report.recalibration import method_recalibrations
from calib_tasks.report.runs import find_run_files, read_run
from calib_tasks.scoring.records import generation_record

TASK = "calib_gen_hand"
N = 200
FLIP = "THE ORDER OF THE RUNS FLIPS"
#: The hand-made records' methods, in the order of the task's calib_confidence (seq first: the
#: headline's); seq_min's confidences are all equal (no information).
METHODS = ["seq", "seq_min", "answer", "ptrue", "verbalized"]
REL = 1e-9


# ------------------------------------------------------------------------------ brute force


def _aurc(confidence: list[float], correct: list[float]) -> float:
    """``mean_k E_k / k``: ``E_k`` the expected errors among the k most confident, items of equal
    confidence in random order (each position of a tie block wrong with the block's error
    rate)."""
    order = sorted(range(len(confidence)), key=lambda i: -confidence[i])
    rates: list[float] = []
    start = 0
    while start < len(order):
        end = start
        while end < len(order) and confidence[order[end]] == confidence[order[start]]:
            end += 1
        block = [correct[i] for i in order[start:end]]
        rates += [sum(1 - y for y in block) / len(block)] * len(block)
        start = end
    errors, total = 0.0, 0.0
    for k, rate in enumerate(rates, start=1):
        errors += rate
        total += errors / k
    return total / len(rates)


def _selective_accuracy(confidence: list[float], correct: list[float]) -> float:
    """HELM's selective_acc@10: accuracy of the floor(n / 10) + 1 most confident (first kept on
    ties)."""
    k = len(confidence) // 10 + 1
    order = sorted(range(len(confidence)), key=lambda i: -confidence[i])[:k]
    return sum(correct[i] for i in order) / k


def _scored(records: list[dict], method: str) -> tuple[list[float], list[float]]:
    """(confidence, correct) of the answers with a ``method`` confidence."""
    pairs = [
        (record_confidences(r)[method], float(r["correct"]))
        for r in records
        if record_confidences(r)[method] is not None
    ]
    return [c for c, _ in pairs], [y for _, y in pairs]


def _expected_row(records: list[dict], method: str) -> dict:
    """Every number of the methods table's row of ``method``, by brute force."""
    confidence, correct = _scored(records, method)
    if not confidence:
        return {"n": 0}
    return {
        "n": len(confidence),
        "acc": sum(correct) / len(correct),
        "ece": bf.ece(confidence, correct),
        "interval": bf.item_ece_interval(confidence, correct),
        "brier": bf.brier_top_label(confidence, correct),
        "auroc": bf.auroc(confidence, correct),
        "aurc": _aurc(confidence, correct),
        "helm_selective_acc_10": _selective_accuracy(confidence, correct),
        "uninformative": bf.uninformative(confidence),
        # HELM's equal-mass ECE is checked against HELM's own package in test_metrics_reference
        "helm_ece_10_bin": helm_ece_equal_mass(confidence, correct),
    }


def _check_rows(entry, records: list[dict], options: ReportOptions) -> None:
    """The entry's method rows (full precision) against brute force on ``records``."""
    rows = {row.method.name: row for row in method_rows(entry, options)}
    assert list(rows) == [m for m in METHODS if m in record_confidences(records[0])]
    for name, row in rows.items():
        expected = _expected_row(records, name)
        missing = sum(record_confidences(r)[name] is None for r in records)
        assert (row.n, row.of, row.unscored) == (expected["n"], len(records), missing), name
        if not expected["n"]:
            assert math.isnan(row.ece) and not row.scored
            continue
        assert row.acc == pytest.approx(expected["acc"], rel=REL)
        assert row.ece == pytest.approx(expected["ece"], rel=REL, abs=1e-12), name
        assert (row.ece_low, row.ece_high) == pytest.approx(
            expected["interval"], rel=REL, abs=1e-12
        )
        for column in ("brier", "auroc", "aurc", "helm_selective_acc_10", "helm_ece_10_bin"):
            assert row.values[column] == pytest.approx(expected[column], rel=REL, abs=1e-12), (
                name,
                column,
            )
        assert (row.uninformative is not None) == bool(expected["uninformative"]), name


# ------------------------------------------------------------------------- hand-made runs


def _records(seed: int, calibrated: str) -> list[dict]:
    """``N`` answers, right with probability p (p spread over [0.1, 0.9]); the ``calibrated``
    one of seq and ptrue states p, the other p + 0.3 (overconfident); answer states 0.9 p and
    has none for every 4th answer; verbalized states p to two decimals and has none for every
    5th; seq_min states 0.5 always (no information)."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.1, 0.9, N)
    correct = rng.random(N) < p
    records = []
    for i in range(N):
        stated = {"seq": p[i], "ptrue": p[i]}
        other = "ptrue" if calibrated == "seq" else "seq"
        stated[other] = min(p[i] + 0.3, 1.0)
        confidences = {
            "seq": stated["seq"],
            "seq_min": 0.5,
            "answer": None if i % 4 == 0 else 0.9 * p[i],
            "ptrue": stated["ptrue"],
            "verbalized": None if i % 5 == 0 else round(float(p[i]), 2),
        }
        reply = "no idea" if i % 5 == 0 else f"{round(float(p[i]) * 100)}"
        records.append(
            generation_record(bool(correct[i]), confidences, n_tokens=3, verbalized_reply=reply)
        )
    return records


def _write_run(folder: Path, records: dict[str, list[dict]]) -> None:
    """A run folder of the samples file of ``TASK``: per filter its records, one line each."""
    folder.mkdir(parents=True)
    lines = [
        json.dumps({"doc_id": i, "filter": key, "ece": {**record, "filter": key}})
        for key, of_filter in records.items()
        for i, record in enumerate(of_filter)
    ]
    (folder / f"samples_{TASK}_2026-12-01T00-00-00.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    """Two runs of ``TASK`` under two filters: run-a calibrated under seq, run-b under ptrue
    (so their order by ECE flips between the two methods), and the report on both."""
    root = tmp_path_factory.mktemp("hand")
    records = {
        "run-a": {"whole": _records(1, "seq"), "num": _records(2, "seq")},
        "run-b": {"whole": _records(3, "ptrue"), "num": _records(4, "ptrue")},
    }
    for run, of_run in records.items():
        _write_run(root / run, of_run)
    options = ReportOptions()
    report = write_report([root / run for run in records], root / "report", options)
    return SimpleNamespace(
        root=root,
        records=records,
        report=report,
        options=options,
        summary=report.summary.read_text(encoding="utf-8"),
    )


def _entry(report, task: str, label: str):
    (entry,) = [e for e in report.entries if e.task == task and e.label == label]
    return entry


def test_one_entry_per_task_and_filter(hand):
    names = sorted((e.task, e.label) for e in hand.report.entries)
    assert names == [
        (f"{TASK}, filter {key}", run) for key in ("num", "whole") for run in ("run-a", "run-b")
    ]


def test_the_methods_table_equals_brute_force(hand):
    for run, of_run in hand.records.items():
        for key, records in of_run.items():
            _check_rows(_entry(hand.report, f"{TASK}, filter {key}", run), records, hand.options)


def test_the_methods_table_as_written(hand):
    rows = table_rows(hand.summary, f"Confidence methods of {TASK}, filter whole")
    by_key = {(r[0], r[1]): r[2:] for r in rows}
    assert [r[:2] for r in rows] == [[run, m] for run in ("run-a", "run-b") for m in METHODS]
    for run, of_run in hand.records.items():
        records = of_run["whole"]
        for method in METHODS:
            expected = _expected_row(records, method)
            n, unscored, acc, ece, *columns, uninformative = by_key[(run, method)]
            assert n == str(expected["n"])
            low, high = expected["interval"]
            ece_text = f"{expected['ece']:.3f} [{low:.3f}, {high:.3f}]"
            if method == "seq_min":  # every confidence 0.5
                assert ece == f"**NOT MEASURED** ({ece_text})"
                assert uninformative == "yes (all 200 confidences equal 0.5)"
            else:
                assert ece == ece_text and uninformative == "no"
            assert acc == f"{expected['acc']:.3f}"
            keys = ("brier", "auroc", "aurc", "helm_selective_acc_10", "helm_ece_10_bin")
            assert columns == [f"{expected[k]:.3f}" for k in keys]
            if method == "answer":
                assert unscored == "answer_not_found: 50 of 200"
            elif method == "verbalized":
                assert unscored == "verbalized_unparsed: 40 of 200"
            else:
                assert unscored == "none"


def test_the_headline_row_is_the_first_method_over_every_answer(hand):
    rows = {r[0]: r for r in table_rows(hand.summary, f"## Task {TASK}, filter whole")}
    for run, of_run in hand.records.items():
        records = of_run["whole"]
        expected = _expected_row(records, "seq")
        low, high = expected["interval"]
        row = rows[run]
        assert row[1] == str(N)
        assert row[2] == f"{sum(r['correct'] for r in records) / N:.3f}"
        assert row[3] == f"{expected['ece']:.3f} [{low:.3f}, {high:.3f}]"
        assert row[5] == f"{expected['brier']:.3f}" and row[6] == f"{expected['auroc']:.3f}"
        numbers = _entry(hand.report, f"{TASK}, filter whole", run).numbers
        assert (numbers.method, numbers.scored) == ("seq", N)
    assert "those of the task's first confidence method (seq)" in hand.summary


def test_the_flip_notice_names_the_methods(hand):
    assert hand.summary.count(FLIP) == 4  # two filters, each in the warnings and its section
    assert "which run is better calibrated depends on the confidence method" in hand.summary
    assert "by ECE under the seq method: run-a, run-b" in hand.summary
    assert "by ECE under the ptrue method: run-b, run-a" in hand.summary
    assert "under the seq_min method" not in hand.summary  # NOT MEASURED: not ranked


def test_a_method_without_information_is_a_warning(hand):
    warnings = hand.summary.split("## Warnings", 1)[1].split("\n## ", 1)[0]
    assert f"{TASK}, filter whole: run-a, seq_min method: NOT MEASURED" in warnings


def test_figures_per_method(hand):
    figures = hand.root / "report" / "figures"
    for key in ("whole", "num"):
        for position, run in enumerate(("run-a", "run-b"), start=1):
            name = f"{TASK}-filter-{key}__run{position}-{run}".lower()
            for stem in (f"reliability__{name}", f"reliability_methods__{name}"):
                for suffix in (".png", ".svg"):
                    assert (figures / f"{stem}{suffix}").stat().st_size > 1000, stem
            for suffix in (".png", ".svg"):
                assert (figures / f"risk_coverage__{name}{suffix}").stat().st_size > 1000
            assert f"figures/risk_coverage__{name}.png" in hand.summary
            assert f"figures/reliability_methods__{name}.png" in hand.summary


def test_recalibration_per_method_equals_a_recomputation(hand):
    records = hand.records["run-a"]["whole"]
    entry = _entry(hand.report, f"{TASK}, filter whole", "run-a")
    recalibrations = method_recalibrations(entry, hand.options)
    assert list(recalibrations) == METHODS  # every method scored some answers
    fits = {"platt": PlattScaling.fit, "isotonic": IsotonicCalibration.fit}
    fits["histogram"] = HistogramBinning.fit
    for method, recalibration in recalibrations.items():
        confidence, correct = (np.array(a) for a in _scored(records, method))
        names = [row.recalibrator.name if row.recalibrator else None for row in recalibration.rows]
        assert names == [None, "platt", "isotonic", "histogram"]
        assert recalibration.rows[0].ece.estimate == pytest.approx(bf.ece(confidence, correct))
        for row in recalibration.rows[1:]:
            recalibrated = np.clip(
                cross_fit(fits[row.recalibrator.name], confidence, correct), 0, 1
            )
            assert row.ece.estimate == pytest.approx(bf.ece(recalibrated, correct), abs=1e-12)
    rows = table_rows(hand.summary, f"Recalibration of {TASK}, filter whole, run-a, per")
    assert [r[:2] for r in rows] == [
        [m, r] for m in METHODS for r in ("as measured", "platt", "isotonic", "histogram")
    ]


def test_equal_mass_bins_reach_the_methods_table(hand):
    options, notes = ReportOptions(binning="equal_mass", n_bins=5), Notes(echo=False)
    (files,) = find_run_files([hand.root / "run-a"], notes)
    entries = task_entries(0, read_run(files, notes), "run-a", TASK, options, notes)
    (entry,) = [e for e in entries if e.task == f"{TASK}, filter num"]
    for row in method_rows(entry, options):
        confidence, correct = _scored(hand.records["run-a"]["num"], row.method.name)
        expected = cm.ece(confidence, correct, n_bins=5, strategy="equal_mass")
        assert row.ece == pytest.approx(expected, rel=REL, abs=1e-12)


def test_a_method_that_scored_no_answer(tmp_path):
    records = [
        generation_record(i % 2 == 0, {"seq": 0.2 + 0.003 * i, "verbalized": None})
        for i in range(40)
    ]
    _write_run(tmp_path / "run-c", {"none": records})
    report = write_report([tmp_path / "run-c"], tmp_path / "report", ReportOptions())
    summary = report.summary.read_text(encoding="utf-8")
    rows = {r[1]: r[2:] for r in table_rows(summary, f"Confidence methods of {TASK}")}
    assert rows["verbalized"][:3] == ["0", "verbalized_unparsed: 40 of 40", "n/a"]
    assert f"{TASK}: run-c, verbalized method: no answer has a confidence" in summary
    assert list(method_recalibrations(report.entries[0], ReportOptions())) == ["seq"]


def test_an_unknown_method_is_left_out_with_a_note(tmp_path):
    records = [
        generation_record(i % 3 == 0, {"seq": 0.1 + 0.004 * i, "telepathy": 0.5}) for i in range(30)
    ]
    _write_run(tmp_path / "run-d", {"none": records})
    report = write_report([tmp_path / "run-d"], tmp_path / "report", ReportOptions())
    assert [row.method.name for row in method_rows(report.entries[0], ReportOptions())] == ["seq"]
    assert any("telepathy" in note and "left out" in note for note in report.notes)


# --------------------------------------------------------------------- risk-coverage figure


def test_risk_coverage_data_equals_brute_force():
    rng = np.random.default_rng(5)
    confidence = np.round(rng.random(300), 2)  # ties
    correct = (rng.random(300) < confidence).astype(float)
    data = RiskCoverageData.from_predictions(confidence, correct)
    assert data.aurc == pytest.approx(_aurc(confidence.tolist(), correct.tolist()), rel=REL)
    distinct = rng.permutation(300) / 300
    data = RiskCoverageData.from_predictions(distinct, correct)
    order = np.argsort(-distinct)
    for k in (1, 7, 150, 300):
        assert data.coverage[k - 1] == k / 300
        assert data.accuracy[k - 1] == pytest.approx(correct[order[:k]].mean(), rel=REL)


def test_the_risk_coverage_docstring_examples_run():
    result = doctest.testmod(risk_coverage)
    assert result.attempted > 0 and result.failed == 0


# ------------------------------------------------------------------------- a real run

DOCS = [{"question": f"What is {w} {i}?", "answer": str(i)} for i, w in enumerate("abcdefghijkl")]
REAL_METHODS = ["seq", "seq_min", "answer", "ptrue", "verbalized"]


@pytest.fixture(scope="module")
def real(tmp_path_factory, tiny_long_lm):
    """A stock ``generate_until`` task (filters whole and number) run on the tiny model, then
    its calib wrapper, the gold of every other document set from the stock run to the model's
    own answer under one of the filters (so some answers are right under each); both saved as
    the harness saves them, and reported."""
    from lm_eval.tasks import TaskManager

    folder = tmp_path_factory.mktemp("real_tasks")
    write_generation_task(folder, "gen", DOCS)
    manager = TaskManager(include_path=str(folder), include_defaults=False)
    runs = tmp_path_factory.mktemp("real_runs")
    stock = evaluate(tiny_long_lm, manager, "gen", len(DOCS))
    save_run(stock, runs / "stock")
    answers = {(s["filter"], s["doc_id"]): s["filtered_resps"][0] for s in stock["samples"]["gen"]}
    docs = []
    for i, doc in enumerate(DOCS):  # every 4th right under each filter
        if i % 4 < 2:  # the number filter's output may be "[invalid]": right all the same
            doc = {**doc, "answer": answers[("whole" if i % 4 == 0 else "number", i)]}
        docs.append(doc)
    write_generation_task(folder, "gen", docs, data="golds")
    metadata = {"calib_confidence": ",".join(REAL_METHODS)}
    write_generation_wrapper(folder, "calib_gen", "gen", metadata=metadata)
    manager = TaskManager(include_path=str(folder), include_defaults=False)
    save_run(evaluate(tiny_long_lm, manager, "calib_gen", len(DOCS)), runs / "calib")
    results, samples = read_output(runs / "calib")
    report = write_report([runs / "calib", runs / "stock"], runs / "report", ReportOptions())
    return SimpleNamespace(
        runs=runs,
        results=results["results"]["calib_gen"],
        samples=samples["calib_gen"],
        report=report,
        summary=report.summary.read_text(encoding="utf-8"),
    )


def test_a_real_run_equals_brute_force_on_its_logged_records(real):
    filters = sorted({s["filter"] for s in real.samples})
    assert filters == ["number", "whole"]
    for key in filters:
        records = [s["ece"] for s in real.samples if s["filter"] == key]
        assert len(records) == len(DOCS)
        (entry,) = [e for e in real.report.entries if e.task == f"calib_gen, filter {key}"]
        _check_rows(entry, records, ReportOptions())
        rows = {r[1]: r for r in table_rows(real.summary, f"Confidence methods of {entry.task}")}
        unparsed = sum(record_confidences(r)["verbalized"] is None for r in records)
        not_found = sum(record_confidences(r)["answer"] is None for r in records)
        assert rows["verbalized"][3] == f"verbalized_unparsed: {unparsed} of {len(DOCS)}"
        assert rows["answer"][3] == f"answer_not_found: {not_found} of {len(DOCS)}"
        assert real.results[f"verbalized_unparsed,{key}"] == unparsed
        assert real.results[f"answer_not_found,{key}"] == not_found
        accuracy = sum(r["correct"] for r in records) / len(records)
        assert 0 < accuracy < 1, "the golds make no answer right or none wrong"


def test_a_real_run_agrees_with_its_results_file(real):
    """With the report's default options its numbers are the task's own."""
    for entry in real.report.entries:
        key = entry.task.rsplit(" ", 1)[1]
        assert entry.numbers.acc == real.results[f"acc,{key}"]
        assert entry.numbers.ece == pytest.approx(real.results[f"ece,{key}"], rel=REL)
        for row in method_rows(entry, ReportOptions()):
            if not row.scored:
                assert real.results[f"ece_{row.method.name},{key}"] is None
                continue
            reported = real.results[f"ece_{row.method.name},{key}"]
            assert row.ece == pytest.approx(reported, rel=REL, abs=1e-15)
            reported = real.results[f"auroc_{row.method.name},{key}"]
            assert row.values["auroc"] == pytest.approx(reported, rel=REL)


def test_a_real_run_draws_every_figure(real):
    figures = real.runs / "report" / "figures"
    for prefix in ("reliability__", "reliability_methods__", "risk_coverage__"):
        for key in ("number", "whole"):
            found = list(figures.glob(f"{prefix}calib_gen-filter-{key}__*.png"))
            assert len(found) == 1 and found[0].with_suffix(".svg").exists(), (prefix, key)
    assert (real.runs / "report" / "report.html").stat().st_size > 10_000


def test_a_stock_generate_until_run_is_skipped_saying_why(real):
    assert {e.task.split(",")[0] for e in real.report.entries} == {"calib_gen"}
    (note,) = [n for n in real.report.notes if n.startswith("gen (")]
    assert "output_type generate_until" in note
    assert "no log-probabilities were logged" in note
    assert "no log-probabilities were logged" in real.summary
