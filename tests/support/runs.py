"""Run folders in the harness's layout (``lm_eval --output_path --log_samples``): written by the
harness's own ``EvaluationTracker`` or by hand, and read back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def save_run(out: dict[str, Any], folder: Path, tracker: Any = None) -> None:
    """Write ``out`` (``simple_evaluate``'s result, samples logged) as ``lm_eval --output_path
    folder --log_samples`` does: the harness's ``EvaluationTracker`` saves the results file and
    each task's samples file. ``tracker``: the tracker ``simple_evaluate`` was given (made with
    ``output_path=folder``; the model it logged names the run's subfolder), else a new one, which
    writes into ``folder`` itself. ``out`` is left as it is."""
    from lm_eval.loggers import EvaluationTracker

    if tracker is None:
        tracker = EvaluationTracker(output_path=str(folder))
    results = dict(out)
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for task, task_samples in samples.items():
        tracker.save_results_samples(task_name=task, samples=task_samples)


def read_output(output_path: Path) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """The results json and the samples (per task) that ``--output_path --log_samples`` wrote."""
    (results_file,) = output_path.rglob("results_*.json")
    results = json.loads(results_file.read_text())
    samples: dict[str, list[dict[str, Any]]] = {}
    for path in output_path.rglob("samples_*.jsonl"):
        task = path.name[len("samples_") :].rsplit("_", 1)[0]
        samples[task] = [json.loads(line) for line in path.read_text().splitlines()]
    return results, samples


def write_records(folder: Path, task: str, records: list[dict[str, Any]]) -> Path:
    """A run folder (created) with the samples file of ``task`` holding ``records``, one line
    each under ``ece`` (filter ``none``), and no results file; returns the samples file."""
    folder.mkdir(parents=True)
    path = folder / f"samples_{task}_2026-12-01T00-00-00.jsonl"
    lines = [json.dumps({"doc_id": i, "filter": "none", "ece": r}) for i, r in enumerate(records)]
    path.write_text("\n".join(lines) + "\n")
    return path
