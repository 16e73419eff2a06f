"""calib-report's options reach every table: with ``--binning equal_mass --bins 20 --seed 7``
the headline numbers, the confidence-rule table, the recalibration table (and the temperature's
interval) and the breakdowns all equal a recomputation with those options, done here with
calib_metrics' primitives."""

from __future__ import annotations

import numpy as np
import pytest
from support.runs import write_records
from support.summary import table_rows

import calib_metrics as cm
from calib_metrics.bootstrap import index_bootstrap_ci
from calib_metrics.classwise import classwise_ece, static_calibration_error
from calib_metrics.helm import helm_ece_equal_mass, helm_selective_accuracy
from calib_metrics.recalibration import (
    HistogramBinning,
    IsotonicCalibration,
    PlattScaling,
    TemperatureScaling,
    cross_fit,
)
from calib_tasks.report.cli import main
from calib_tasks.scoring.confidence_rules import RULES, OptionScores
from calib_tasks.scoring.records import choice_record

TASK = "calib_options"
RUN = "run-a"
N = 240
BINS, STRATEGY, SEED = 20, "equal_mass", 7
SUBJECTS = {"algebra": "stem", "anatomy": "other", "law": "humanities"}


def _records() -> list[dict]:
    """``N`` four-option documents under every rule (options of 1 to 4 characters and tokens, so
    that no rule gives the sum rule's probabilities), overconfident, with a subject and its
    category (breakdowns, and cross-fitting folds of whole subjects)."""
    rng = np.random.default_rng(11)
    records = []
    for i in range(N):
        lls = np.log(rng.dirichlet(np.ones(4) * 0.4))
        scores = OptionScores(lls, [1.0, 2.0, 3.0, 4.0], lls - rng.uniform(0, 0.5, 4))
        gold = int(np.argmax(lls)) if rng.random() < 0.55 else int(rng.integers(4))
        subject = list(SUBJECTS)[i % 3]
        records.append(
            choice_record(scores, gold, RULES, subject=subject, category=SUBJECTS[subject])
        )
    return records


def _ece(confidence: np.ndarray, correct: np.ndarray) -> float:
    return cm.ece(confidence, correct, n_bins=BINS, strategy=STRATEGY)


def _interval(confidence: np.ndarray, correct: np.ndarray, metric=_ece) -> str:
    """The metric with its interval, as the report writes it (the options' seed)."""
    ci = cm.bootstrap_ci(confidence, correct, metric=metric, seed=SEED)
    return _with_interval(ci)


def _with_interval(ci: cm.ConfidenceInterval) -> str:
    return f"{ci.estimate:.3f} [{ci.low:.3f}, {ci.high:.3f}]"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[str, str, list[dict]]:
    """(summary.md, the task's breakdown file, the records) of calib-report with the options."""
    folder = tmp_path_factory.mktemp("options")
    records = _records()
    write_records(folder / RUN, TASK, records)
    out = folder / "report"
    argv = [str(folder / RUN), "--out", str(out), "--binning", STRATEGY, "--bins", str(BINS)]
    assert main([*argv, "--seed", str(SEED)]) == 0
    breakdown = (out / "breakdowns" / f"{TASK}__run1-{RUN}.md").read_text(encoding="utf-8")
    return (out / "summary.md").read_text(encoding="utf-8"), breakdown, records


def _arrays(records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    confidence = np.array([r["confidence"] for r in records])
    return confidence, np.array([r["correct"] for r in records], dtype=float)


def _options(records: list[dict], field: str = "probs") -> tuple[np.ndarray, np.ndarray]:
    return np.array([r[field] for r in records]), np.array([r["label"] for r in records])


def test_the_headline_numbers_use_the_options(report):
    summary, _, records = report
    confidence, correct = _arrays(records)
    probs, labels = _options(records)
    (row,) = table_rows(summary, f"## Task {TASK}")
    assert row[1:7] == [
        str(N),
        f"{correct.mean():.3f}",
        _interval(confidence, correct),
        f"{cm.mce(confidence, correct, n_bins=BINS, strategy=STRATEGY):.3f}",
        f"{cm.brier_multiclass(probs, labels):.3f}",
        f"{cm.auroc(confidence, correct):.3f}",
    ]
    assert f"{BINS} equal-mass bins" in summary and f"seed {SEED}" in summary


def test_the_rule_table_uses_the_options(report):
    summary, _, records = report
    rows = {row[1]: row[2:] for row in table_rows(summary, "Confidence rules of")}
    assert set(rows) == {rule.name for rule in RULES}
    for rule in RULES:
        probs, labels = _options(records, rule.field)
        pred = probs.argmax(1)
        confidence, correct = probs[np.arange(N), pred], (pred == labels).astype(float)
        expected = [f"{correct.mean():.3f}", _interval(confidence, correct)]
        if rule.normalised:
            expected += [
                f"{static_calibration_error(probs, labels, n_bins=BINS):.3f}",
                f"{classwise_ece(probs, labels, n_bins=BINS, strategy=STRATEGY):.3f}",
                f"{cm.brier_multiclass(probs, labels):.3f}",
            ]
        else:
            expected += ["n/a"] * 3
        expected += [  # HELM's metrics keep their own 10 equal-mass bins
            f"{helm_ece_equal_mass(confidence, correct):.3f}",
            f"{helm_selective_accuracy(confidence, correct):.3f}",
        ]
        assert rows[rule.name] == expected, rule.name


def _temperature(scores: np.ndarray, labels: np.ndarray) -> TemperatureScaling:
    return TemperatureScaling.fit(scores, labels)


def test_the_recalibration_table_and_temperature_use_the_options(report):
    summary, _, records = report
    confidence, correct = _arrays(records)
    probs, labels = _options(records)
    scores = np.array([r["loglikelihoods"] for r in records])
    subjects = np.array([r["subject"] for r in records])

    def sce(option_probs: np.ndarray) -> str:
        return _with_interval(
            index_bootstrap_ci(
                lambda i: static_calibration_error(option_probs[i], labels[i], n_bins=BINS),
                N,
                seed=SEED,
            )
        )

    def row(conf: np.ndarray, option_probs: np.ndarray | None) -> list[str]:
        return [
            _interval(conf, correct),
            "n/a" if option_probs is None else sce(option_probs),
            _interval(conf, correct, metric=cm.brier_top_label),
        ]

    out_of_fold = cross_fit(_temperature, scores, labels, groups=subjects)
    expected = {"as measured": row(confidence, probs)}
    expected["temperature"] = row(out_of_fold.max(1), out_of_fold)
    for name, fit in (
        ("platt", PlattScaling.fit),
        ("isotonic", IsotonicCalibration.fit),
        ("histogram", HistogramBinning.fit),
    ):
        recalibrated = np.clip(cross_fit(fit, confidence, correct, groups=subjects), 0.0, 1.0)
        expected[name] = row(recalibrated, None)
    rows = {row[0]: row[1:] for row in table_rows(summary, f"Recalibration of {TASK}")}
    assert rows == expected
    temperature = index_bootstrap_ci(
        lambda i: _temperature(scores[i], labels[i]).temperature, N, seed=SEED
    )
    assert temperature.estimate == _temperature(scores, labels).temperature
    assert f"Temperature fitted on all documents: {_with_interval(temperature)} (" in summary


def test_the_breakdowns_use_the_options(report):
    _, breakdown, records = report
    for field in ("category", "subject"):
        rows = table_rows(breakdown, f"## Per {field}\n")
        expected = []
        for group in sorted({r[field] for r in records}):
            confidence, correct = _arrays([r for r in records if r[field] == group])
            expected.append(
                [
                    group,
                    str(confidence.size),
                    f"{correct.mean():.3f}",
                    f"{confidence.mean():.3f}",
                    f"{_ece(confidence, correct):.3f}",
                ]
            )
        assert rows == expected, field
