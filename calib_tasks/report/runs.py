"""Finding the harness's output files of each run and reading its results file.

``lm_eval --output_path OUT --log_samples`` writes, per run, into ``OUT/<model>/``:
``results_<date>.json`` and one ``samples_<task>_<date>.jsonl`` per task, all with the same
``<date>`` (ISO time with ``-`` for ``:``, so without ``_``). A run is therefore one folder and
one date; the samples files of a run whose results file is missing or unreadable are still used.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calib_tasks.report.labels import parse_model_args
from calib_tasks.report.notes import Notes
from calib_tasks.scoring.records import PREDICT_ONLY_KEY

RESULTS_PREFIX = "results_"
SAMPLES_PREFIX = "samples_"


@dataclass
class RunFiles:
    """The files of one run: its results file (if found) and its samples file per task."""

    folder: Path
    date_id: str
    results_file: Path | None = None
    samples_files: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class Run:
    """One run as its results file describes it (empty fields when that file is unusable);
    ``configs`` are the harness's task configs (``output_type``, ``target_delimiter``, ...)."""

    files: RunFiles
    model: str | None
    model_args: dict[str, str]
    metrics: dict[str, dict[str, Any]]
    n_samples: dict[str, int]
    groups: frozenset[str]
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Each group's members (tasks or groups), as the results file's ``group_subtasks``.
    group_subtasks: dict[str, list[str]] = field(default_factory=dict)
    #: The dtype the harness reports the model was loaded in (``config.model_dtype``, without
    #: ``torch.``), None when the results file does not say.
    model_dtype: str | None = None

    def group_tasks(self, group: str) -> list[str]:
        """The tasks of ``group``, those of its member groups included, sorted."""
        found: set[str] = set()
        pending, seen = [group], set()
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            seen.add(name)
            members = self.group_subtasks.get(name, [])
            pending += [m for m in members if m in self.group_subtasks]
            found |= {m for m in members if m not in self.group_subtasks}
        return sorted(found)

    @property
    def tasks(self) -> list[str]:
        """Every task (not group) with numbers or samples in this run, sorted by name."""
        return sorted((set(self.metrics) - self.groups) | set(self.files.samples_files))


def _filters_of(metrics: Mapping[str, Any], name: str) -> list[str]:
    prefix = f"{name},"
    return [key[len(prefix) :] for key in metrics if key.startswith(prefix)]


def result_filters(metrics: Mapping[str, Any]) -> list[str]:
    """The filters under which a task's results entry reports an ECE, in the file's order
    (empty for a task that is not a calib task, or ran with ``--predict_only``)."""
    return _filters_of(metrics, "ece")


def is_calib_result(metrics: Mapping[str, Any]) -> bool:
    """Whether a task's results entry looks like a calib task's (it reports an ECE)."""
    return bool(result_filters(metrics))


def is_predict_only_result(metrics: Mapping[str, Any]) -> bool:
    """Whether a task's results entry is that of a ``--predict_only`` run: ``bypass`` (999)
    under some filter and no ECE; such a file holds no numbers, only its samples do."""
    return bool(_filters_of(metrics, PREDICT_ONLY_KEY)) and not is_calib_result(metrics)


def _samples_task_and_date(path: Path) -> tuple[str, str] | None:
    task, sep, date_id = path.name[len(SAMPLES_PREFIX) : -len(".jsonl")].rpartition("_")
    return (task, date_id) if sep and task and date_id else None


def find_run_files(run_dirs: Iterable[Path], notes: Notes) -> list[RunFiles]:
    """The runs under ``run_dirs`` (searched recursively), in the order of the folders given
    and, within one, sorted by folder and date. A run found twice (nested folders) counts once."""
    runs: dict[tuple[Path, str], RunFiles] = {}
    for run_dir in run_dirs:
        if not run_dir.is_dir():
            notes.add(f"{run_dir}: not a folder; skipped")
            continue
        dir_runs: dict[tuple[Path, str], RunFiles] = {}
        for path in sorted(run_dir.rglob(f"{RESULTS_PREFIX}*.json")):
            date_id = path.name[len(RESULTS_PREFIX) : -len(".json")]
            key = (path.parent.resolve(), date_id)
            dir_runs.setdefault(key, RunFiles(path.parent, date_id)).results_file = path
        for path in sorted(run_dir.rglob(f"{SAMPLES_PREFIX}*.jsonl")):
            if (parsed := _samples_task_and_date(path)) is not None:
                task, date_id = parsed
                key = (path.parent.resolve(), date_id)
                dir_runs.setdefault(key, RunFiles(path.parent, date_id)).samples_files[task] = path
        if not dir_runs:
            notes.add(f"{run_dir}: no results_*.json or samples_*.jsonl found; nothing to report")
        for key, run in sorted(dir_runs.items()):
            runs.setdefault(key, run)
    return list(runs.values())


def _group_names(results: dict[str, Any]) -> frozenset[str]:
    group_subtasks = results.get("group_subtasks")
    groups = set(results.get("groups") or {})
    if isinstance(group_subtasks, dict):
        groups |= {name for name, subtasks in group_subtasks.items() if subtasks}
    return frozenset(groups)


def _n_samples(results: dict[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for task, entry in (results.get("n-samples") or {}).items():
        if isinstance(entry, dict) and isinstance(entry.get("effective"), int):
            counts[task] = entry["effective"]
    return counts


def _model_dtype(value: Any) -> str | None:
    """``config.model_dtype`` of a results file (``"torch.float32"``) as ``"float32"``; None
    when it is absent or not a string."""
    return value.removeprefix("torch.") if isinstance(value, str) and value else None


def read_run(files: RunFiles, notes: Notes) -> Run:
    """The run's model, model arguments and per-task metrics from its results file; a missing
    or unreadable results file is noted and leaves them empty (the samples may still serve)."""
    empty = Run(files, None, {}, {}, {}, frozenset())
    if files.results_file is None:
        notes.add(
            f"{files.folder}: samples files of {files.date_id} have no results_{files.date_id}"
            ".json; reporting them from the samples alone"
        )
        return empty
    try:
        results = json.loads(files.results_file.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as error:
        notes.add(
            f"{files.results_file}:{error.lineno}: not valid JSON ({error.msg}, column "
            f"{error.colno}); using this run's samples files only"
        )
        return empty
    except OSError as error:
        notes.add(f"{files.results_file}: cannot be read ({error.strerror}); skipped")
        return empty
    if not isinstance(results, dict) or not isinstance(results.get("results"), dict):
        notes.add(
            f"{files.results_file}: not a harness results file (no 'results' object); "
            "using this run's samples files only"
        )
        return empty
    config = results.get("config") if isinstance(results.get("config"), dict) else {}
    metrics = {
        task: values for task, values in results["results"].items() if isinstance(values, dict)
    }
    model = config.get("model")
    return Run(
        files=files,
        model=str(model) if model is not None else None,
        model_args=parse_model_args(config.get("model_args")),
        model_dtype=_model_dtype(config.get("model_dtype")),
        metrics=metrics,
        n_samples=_n_samples(results),
        groups=_group_names(results),
        group_subtasks={
            name: [str(m) for m in members]
            for name, members in (results.get("group_subtasks") or {}).items()
            if isinstance(members, list) and members
        },
        configs={
            task: values
            for task, values in (results.get("configs") or {}).items()
            if isinstance(values, dict)
        },
    )
