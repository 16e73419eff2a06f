"""The metric table is the one source of the calibration metrics: a row added there reaches the
results, the samples and the README's list, with nothing else to edit."""

from __future__ import annotations

import re
from pathlib import Path

import lm_eval
import pytest
from lm_eval.tasks import TaskManager
from support.runs import save_run

from calib_tasks import task_dir
from calib_tasks.harness import aggregations
from calib_tasks.report.build import write_report
from calib_tasks.report.entries import ReportOptions
from calib_tasks.scoring import metric_table
from calib_tasks.scoring.records import MULTICLASS, TOP_LABEL

README = Path(__file__).parent.parent / "README.md"


# A test-local row: the mean confidence of top-label and multiclass records (registered once).
THROWAWAY = metric_table.CalibMetric(
    key="test_mean_confidence",
    higher_is_better=False,
    compute={
        kind: lambda pool, options: float(pool.confidence.mean())
        for kind in (TOP_LABEL, MULTICLASS)
    },
    description="mean confidence (a test's throw-away row)",
)
aggregations.register(THROWAWAY)


@pytest.fixture
def throwaway_metric(monkeypatch):
    """The table with ``THROWAWAY`` added as its last row."""
    monkeypatch.setattr(metric_table, "METRICS", (*metric_table.METRICS, THROWAWAY))
    return THROWAWAY


@pytest.mark.parametrize("task", ["calib_mmlu_mini", "calib_facts_mini"])
def test_a_new_row_reaches_results_samples_and_report(
    throwaway_metric, tiny_long_lm, task, tmp_path
):
    manager = TaskManager(include_path=str(task_dir()), include_defaults=False)
    out = lm_eval.simple_evaluate(
        model=tiny_long_lm, tasks=[task], task_manager=manager, limit=5, log_samples=True
    )
    samples = out["samples"][task]
    expected = sum(s["ece"]["confidence"] for s in samples) / len(samples)
    assert out["results"][task]["test_mean_confidence,none"] == pytest.approx(expected)
    assert out["higher_is_better"][task]["test_mean_confidence"] is False
    assert all(s["test_mean_confidence"] == "<calib record: see 'ece'>" for s in samples)
    # and the report's table of every metric in the results file
    save_run(out, tmp_path / "out")
    write_report([tmp_path / "out"], tmp_path / "report", ReportOptions())
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "test_mean_confidence" in summary


def test_a_row_the_yaml_lists_again_is_an_error(tmp_path):
    (tmp_path / "calib_twice.yaml").write_text(
        f"include: {task_dir() / 'calib_mmlu_mini.yaml'}\n"
        "task: calib_twice\n"
        "metric_list:\n  - metric: ece\n    aggregation: calib_ece\n"
    )
    manager = TaskManager(include_path=str(tmp_path), include_defaults=False)
    with pytest.raises(ValueError, match=r"calib_twice: metric_list names \['ece'\]"):
        manager.load_task_or_group(["calib_twice"])


def test_readme_lists_every_metric_of_the_table():
    """Each row's key is listed, as itself or as a listed metric under a rule's or a confidence
    method's suffix, and each recalibrator's ECE under the ``ece_recal_<r>`` row."""
    listed = set(re.findall(r"^\| `([a-z0-9_<>]+)` \|", README.read_text(encoding="utf-8"), re.M))
    for metric in metric_table.METRICS:
        base = metric.key.removesuffix(metric.rule.suffix) if metric.rule.suffix else metric.key
        if metric.method is not None:
            base = base.removesuffix(f"_{metric.method.name}")
        if metric.recalibrator is not None:
            base = "ece_recal_<r>"
        assert base in listed, metric.key
