"""calib-report's confidence-rule table, its flip notice and its recalibration, on runs written
here: two runs whose order by ECE flips between the sum and the letter rule (the notice appears,
in words), two runs whose order agrees under every rule and by SCE (no notice); the rule and
recalibration tables against recomputations."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from support.runs import write_records
from support.summary import table_rows

import calib_metrics as cm
from calib_metrics.classwise import static_calibration_error
from calib_metrics.recalibration import TemperatureScaling
from calib_tasks.report.build import write_report
from calib_tasks.report.entries import ReportOptions
from calib_tasks.scoring.confidence_rules import RULES, OptionScores
from calib_tasks.scoring.records import choice_record

TASK = "calib_letters"
N = 300
FLIP = "THE ORDER OF THE RUNS FLIPS"


def _records(
    option_probs: list[float], accuracy: float, lengths: tuple[float, ...] = (1.0,) * 4
) -> list[dict]:
    """``N`` documents whose options have raw probabilities about ``option_probs`` (the sum rule
    renormalises them, the letter rule takes them as they are), option 0 predicted, gold in the
    first ``accuracy`` share of documents and one of the others after; the options are
    ``lengths`` characters long (one each by default: norm rule = sum rule)."""
    records = []
    for i in range(N):
        probs = np.array(option_probs)
        probs[0] *= 1 + 0.04 * (i % 5 - 2)  # confidences spread a little around their mean
        lls = np.log(probs)
        scores = OptionScores(lls, lengths, lls)  # one-token options: min rule = sum rule
        gold = 0 if i < accuracy * N else 1 + i % 3
        records.append(choice_record(scores, gold, RULES))
    return records


# sum rule: confidence 0.75, accuracy 0.45; letter rule: confidence 0.45 -> calibrated
OVERCONFIDENT_SUM = ([0.45, 0.05, 0.05, 0.05], 0.45)
# sum rule: confidence 0.5, accuracy 0.5 -> calibrated; letter rule: confidence 0.09
CALIBRATED_SUM = ([0.09, 0.03, 0.03, 0.03], 0.5)
# worse than OVERCONFIDENT_SUM under every rule and by SCE
WORSE = ([0.09, 0.01, 0.01, 0.01], 0.3)


def _report(tmp_path: Path, runs: dict[str, tuple]) -> str:
    """summary.md of the runs ``runs`` (name -> arguments of ``_records``)."""
    folders = [tmp_path / name for name in runs]
    for folder, spec in zip(folders, runs.values(), strict=True):
        write_records(folder, TASK, _records(*spec))
    result = write_report(folders, tmp_path / "report", ReportOptions())
    return result.summary.read_text(encoding="utf-8")


def test_the_notice_appears_when_the_order_flips_between_rules(tmp_path):
    summary = _report(tmp_path, {"run-a": OVERCONFIDENT_SUM, "run-b": CALIBRATED_SUM})
    assert summary.count(FLIP) == 2  # in the warnings at the top and in the task's section
    assert "by ECE under the sum rule: run-b, run-a" in summary
    assert "by ECE under the letter rule: run-a, run-b" in summary


def test_no_notice_when_every_ranking_agrees(tmp_path):
    summary = _report(tmp_path, {"run-a": OVERCONFIDENT_SUM, "run-c": WORSE})
    assert FLIP not in summary
    assert "Confidence rules of calib_letters" in summary


def test_the_rule_table_equals_a_recomputation(tmp_path):
    summary = _report(tmp_path, {"run-a": OVERCONFIDENT_SUM})
    rows = {(r[0], r[1]): r[2:] for r in table_rows(summary, "Confidence rules of")}
    records = _records(*OVERCONFIDENT_SUM)
    labels = np.array([r["label"] for r in records])
    for rule in RULES:
        probs = np.array([r[rule.field] for r in records])
        confidence, correct = probs.max(1), (probs.argmax(1) == labels).astype(float)
        ece = cm.ece(confidence, correct)
        interval = cm.bootstrap_ci(confidence, correct, metric="ece")
        row = rows[("run-a", rule.name)]
        assert row[0] == f"{correct.mean():.3f}"
        assert row[1] == f"{ece:.3f} [{interval.low:.3f}, {interval.high:.3f}]"
        sce = static_calibration_error(probs, labels) if rule.normalised else math.nan
        assert row[2] == (f"{sce:.3f}" if rule.normalised else "n/a")
    assert 0.28 < float(rows[("run-a", "sum")][1].split()[0]) < 0.32  # conf. 0.75, acc. 0.45
    assert float(rows[("run-a", "letter")][1].split()[0]) < 0.02


def test_recalibration_table_and_temperature(tmp_path):
    summary = _report(tmp_path, {"run-a": OVERCONFIDENT_SUM})
    records = _records(*OVERCONFIDENT_SUM)
    scores = np.array([r["loglikelihoods"] for r in records])
    labels = np.array([r["label"] for r in records])
    temperature = TemperatureScaling.fit(scores, labels).temperature
    assert temperature > 1  # overconfident
    assert f"Temperature fitted on all documents: {temperature:.3f} [" in summary
    rows = {r[0]: r[1:] for r in table_rows(summary, "Recalibration of calib_letters")}
    assert set(rows) == {"as measured", "temperature", "platt", "isotonic", "histogram"}
    before = float(rows["as measured"][0].split()[0])
    after = float(rows["temperature"][0].split()[0])
    assert 0.28 < before < 0.32 and after < 0.05
    assert any((tmp_path / "report" / "figures").glob("reliability_recalibrated__*.png"))


NORM_SAME = "The norm rule gives the sum rule's option probabilities in every record"
ONE_CHARACTER = "every option is one character long (answer letters)"


def test_rules_that_coincide_with_the_sum_rule_say_why(tmp_path):
    summary = _report(tmp_path, {"run-a": OVERCONFIDENT_SUM, "run-b": CALIBRATED_SUM})
    rows = {(r[0], r[1]): r[2:] for r in table_rows(summary, "Confidence rules of")}
    for run in ("run-a", "run-b"):  # the identical rows that the table explains
        assert rows[(run, "norm")] == rows[(run, "sum")] == rows[(run, "min")]
    assert f"{NORM_SAME} (run-a, run-b): {ONE_CHARACTER}, and a log-likelihood divided" in summary
    assert "The min rule gives the sum rule's option probabilities in every record (run-a, " in (
        summary
    )
    assert "The letter rule gives" not in summary


def test_no_such_sentence_when_the_options_differ_in_length(tmp_path):
    summary = _report(tmp_path, {"run-a": (*OVERCONFIDENT_SUM, (1.0, 2.0, 3.0, 4.0))})
    rows = {(r[0], r[1]): r[2:] for r in table_rows(summary, "Confidence rules of")}
    assert rows[("run-a", "norm")] != rows[("run-a", "sum")]
    assert NORM_SAME not in summary and ONE_CHARACTER not in summary


def test_the_recalibration_note_says_how_the_folds_were_made(tmp_path):
    """Folds of whole subjects only when the records have two or more subjects; with one, or
    none, the note says that items were dealt to folds one by one, and why."""
    records = _records(*OVERCONFIDENT_SUM)
    cases = {
        "none": (records, "folds of single items: the records have no subject or relation"),
        "one": (
            [{**r, "subject": "algebra"} for r in records],
            "folds of single items: every record has the same subject ('algebra')",
        ),
        "two": (
            [{**r, "subject": ("algebra", "anatomy")[i % 2]} for i, r in enumerate(records)],
            "folds of whole subjects (2 subjects)",
        ),
    }
    for name, (rows, words) in cases.items():
        run = write_records(tmp_path / name / "run", TASK, rows).parent
        write_report([run], tmp_path / name / "report", ReportOptions())
        summary = (tmp_path / name / "report" / "summary.md").read_text()
        assert words in summary, name
        assert "grouped by subject or relation" not in summary
