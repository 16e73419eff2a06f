"""calib-report (its command line, in-process) on samples files doctored with one bad record
each: the report is written (exit 0), the bad part is named with file, line and what it leaves
out, the rule it belongs to is computed on the other records and marked INCOMPLETE, and every
other number is the one of the undoctored file. And ``--bins`` beyond what the data can fill is
refused by name."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from support.runs import write_records
from support.summary import table_rows

import calib_metrics as cm
from calib_tasks.report.cli import main
from calib_tasks.scoring.confidence_rules import RULES, OptionScores, rule_named
from calib_tasks.scoring.records import choice_record

TASK = "calib_doctored"
RUN = "run-a"
N = 60
BAD = 3  # the 0-based index of the doctored record: line 4 of the samples file


def _records() -> list[dict]:
    """``N`` records of 4 options under every rule, options of 1 to 4 characters (so that the
    norm rule differs from the sum rule) and of 1 to 4 tokens (so does the min rule)."""
    rng = np.random.default_rng(5)
    records = []
    for i in range(N):
        lls = np.log(rng.dirichlet(np.ones(4) * 0.7))
        min_lls = lls - rng.uniform(0, 0.5, 4)
        scores = OptionScores(lls, [1.0, 2.0, 3.0, 4.0], min_lls)
        records.append(choice_record(scores, int(rng.integers(4)) if i % 3 else 0, RULES))
    return records


def _report(tmp_path: Path, records: list[dict], capsys) -> tuple[Path, str, str]:
    """calib-report of one run of ``records``: (samples file, summary.md, stderr); exit 0."""
    samples = write_records(tmp_path / RUN, TASK, records)
    out = tmp_path / "report"
    assert main([str(tmp_path / RUN), "--out", str(out)]) == 0
    return samples, (out / "summary.md").read_text(encoding="utf-8"), capsys.readouterr().err


def _rules(summary: str) -> dict[str, list[str]]:
    return {row[1]: row[2:] for row in table_rows(summary, "Confidence rules of")}


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> str:
    """summary.md of the undoctored records."""
    folder = tmp_path_factory.mktemp("clean")
    write_records(folder / RUN, TASK, _records())
    assert main([str(folder / RUN), "--out", str(folder / "report")]) == 0
    return (folder / "report" / "summary.md").read_text(encoding="utf-8")


def _doctored(part: str, value) -> list[dict]:
    records = copy.deepcopy(_records())
    if value is None:
        del records[BAD][part]
    else:
        records[BAD][part][1] = value
    return records


@pytest.mark.parametrize(
    ("part", "value", "problem", "rule"),
    [
        ("probs_norm", float("nan"), "probs_norm[1] must be a number in [0, 1], got nan", "norm"),
        ("probs_norm", 1.7, "probs_norm[1] must be a number in [0, 1], got 1.7", "norm"),
        ("probs_norm", None, "no 'probs_norm', which other records carry", "norm"),
        ("probs_min", -0.2, "probs_min[1] must be a number in [0, 1], got -0.2", "min"),
        ("probs_letter", float("inf"), "probs_letter[1] must be a number in [0, 1], got inf",
         "letter"),
    ],
)  # fmt: skip
def test_a_bad_rule_part_leaves_its_record_out_of_that_rule_only(
    tmp_path, capsys, clean, part, value, problem, rule
):
    records = _doctored(part, value)
    samples, summary, stderr = _report(tmp_path, records, capsys)
    line = f"{samples}:{BAD + 1}: {problem}; left out of the {rule} rule"
    assert line in stderr and line in summary
    rows, before = _rules(summary), _rules(clean)
    assert set(rows) == {r.name for r in RULES if r.name != rule} | {
        f"{rule} **INCOMPLETE: {N - 1} of {N} records**"
    }
    for name in rows:
        if not name.startswith(rule):
            assert rows[name] == before[name]  # the other rules' numbers, unchanged
    # the rule's own numbers: a recomputation on the other records
    kept = [r for i, r in enumerate(records) if i != BAD]
    probs = np.array([r[rule_named(rule).field] for r in kept])
    labels = np.array([r["label"] for r in kept])
    correct = (probs.argmax(1) == labels).astype(float)
    confidence = probs.max(1)
    acc, ece = rows[f"{rule} **INCOMPLETE: {N - 1} of {N} records**"][:2]
    assert acc == f"{correct.mean():.3f}"
    assert ece.startswith(f"{cm.ece(confidence, correct):.3f} [")
    # the task's own table (sum rule) is untouched
    assert table_rows(summary, f"## Task {TASK}") == table_rows(clean, f"## Task {TASK}")


def test_bad_log_likelihoods_are_named_and_leave_out_temperature_scaling(tmp_path, capsys, clean):
    samples, summary, stderr = _report(tmp_path, _doctored("loglikelihoods", float("nan")), capsys)
    line = (
        f"{samples}:{BAD + 1}: loglikelihoods[1] must be a finite number, got nan; left out of "
        "temperature scaling"
    )
    assert line in stderr and line in summary
    assert _rules(summary) == _rules(clean)
    assert f"Not fitted: temperature: only {N - 1} of {N} records carry usable log-likelihoods" in (
        summary
    )
    recalibrated = {row[0]: row[1:] for row in table_rows(summary, "Recalibration of")}
    before = {row[0]: row[1:] for row in table_rows(clean, "Recalibration of")}
    assert "temperature" not in recalibrated
    assert recalibrated == {name: row for name, row in before.items() if name != "temperature"}


def test_a_record_without_option_probabilities_among_others_is_named(tmp_path, capsys, clean):
    records = _doctored("probs", None)
    del records[BAD]["label"]
    samples, summary, stderr = _report(tmp_path, records, capsys)
    line = f"{samples}:{BAD + 1}: no 'probs', which other records carry; left out of the "
    assert line in stderr and line in summary
    rows = _rules(summary)
    assert set(rows) == {f"{r.name} **INCOMPLETE: {N - 1} of {N} records**" for r in RULES}
    kept = [r for i, r in enumerate(records) if i != BAD]
    confidence = np.array([r["confidence"] for r in kept])
    correct = np.array([r["correct"] for r in kept], dtype=float)
    ece = rows[f"sum **INCOMPLETE: {N - 1} of {N} records**"][1]
    assert ece.startswith(f"{cm.ece(confidence, correct):.3f} [")
    assert "Not fitted: temperature: only 59 of 60 records carry usable option probabilities" in (
        summary
    )


def test_bins_beyond_what_the_data_can_fill_are_refused_by_name(tmp_path, capsys):
    write_records(tmp_path / RUN, TASK, _records())
    with pytest.raises(SystemExit) as refused:
        main([str(tmp_path / RUN), "--out", str(tmp_path / "report"), "--bins", "1000000"])
    assert refused.value.code == 2
    assert "argument --bins: at most 1000 bins" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()
    assert main([str(tmp_path / RUN), "--out", str(tmp_path / "report"), "--bins", "1000"]) == 0
