"""Run labels and run order derived from a run's model arguments.

A label names what was evaluated: the basename of ``pretrained`` (else ``model``/``path``/
``engine``, else the harness's model name), then ``@revision`` when one was given, ``+ adapter``
for a ``peft`` adapter, and in parentheses ``dequantized Q4_1 GGUF`` for a ``gguf_file`` (the hf
backend dequantizes GGUF weights, so the run did not compute in Q4_1; the model is named after
the file's stem, its quantization type cut off). Runs that would share a label get, in brackets,
the model arguments in which they differ (``[dtype=bfloat16]``, ``[dtype not set]``).
Runs are ordered by model size (``70m``, ``1.4b``, ``12B``... in the name) and training step
(``revision=stepN``) when every run reveals them, else kept in the order given; only runs along
such an axis form lines (trends).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_SIZE = re.compile(r"(?<![A-Za-z0-9.])(\d+(?:\.\d+)?)([kKmMbBtT])(?![A-Za-z0-9])")
_SIZE_UNIT = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}
_STEP = re.compile(r"^(?:step|global_step|checkpoint-)(\d+)$")
_NAME_KEYS = ("pretrained", "model", "path", "engine")
_GGUF_TYPE = re.compile(r"[.-]((?:[IT]?Q\d+(?:_[A-Z0-9]+)*)|BF16|F16|F32)$", re.IGNORECASE)


def parse_model_args(model_args: str | Mapping[str, Any] | None) -> dict[str, str]:
    """``model_args`` as the harness stores it (``"k=v,k2=v2"`` from the Python API, a dict
    from the CLI, or nothing) as a dict of strings; malformed pieces are ignored."""
    if model_args is None:
        return {}
    if isinstance(model_args, Mapping):
        return {str(k): str(v) for k, v in model_args.items() if v is not None}
    parsed: dict[str, str] = {}
    for piece in str(model_args).split(","):
        key, sep, value = piece.partition("=")
        if sep and key.strip():
            parsed[key.strip()] = value.strip()
    return parsed


def _basename(name: str) -> str:
    return name.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1] or name


def _model_name(model_args: Mapping[str, str]) -> str | None:
    """The model's own name: a GGUF file's stem when one is given (its folder says little)."""
    if model_args.get("gguf_file"):
        return _basename(model_args["gguf_file"]).removesuffix(".gguf")
    name = next((model_args[k] for k in _NAME_KEYS if model_args.get(k)), None)
    return _basename(name) if name else None


def _gguf_name(file: str) -> tuple[str, str]:
    """A GGUF file's model name and what its weights are: ``SmolLM2-135M-Instruct.Q4_1.gguf``
    -> (``SmolLM2-135M-Instruct``, ``Q4_1 GGUF``); a stem without a known quantization type is
    kept whole, with ``GGUF``."""
    stem = _basename(file).removesuffix(".gguf")
    match = _GGUF_TYPE.search(stem)
    if match is None or match.start() == 0:
        return stem, "GGUF"
    return stem[: match.start()], f"{match.group(1)} GGUF"


def run_label(model_args: Mapping[str, str], model: str | None, fallback: str) -> str:
    """A short human label of a run: ``name[@revision][ + adapter][ (dequantized TYPE GGUF)]``
    (see the module docstring).

    ``model`` (the harness's ``--model``, e.g. ``dummy``) is used when the arguments name no
    model, and ``fallback`` when neither is known.
    """
    gguf = model_args.get("gguf_file")
    name, weights = _gguf_name(gguf) if gguf else (_model_name(model_args), None)
    label = name or model or fallback
    if model_args.get("revision"):
        label += f"@{model_args['revision']}"
    if model_args.get("peft"):
        label += f" + {_basename(model_args['peft'])}"
    if weights:
        label += f" (dequantized {weights})"
    return label


def with_differences(
    labels: Sequence[str], model_args: Sequence[Mapping[str, str]], tasks: Sequence[Collection[str]]
) -> list[str]:
    """The labels, each told apart from the labels equal to it where some run of that label
    shares a task with another: each such run's label gets the model arguments in which the runs
    of that label differ, in brackets (``pythia-70m [dtype=float16]``, ``pythia-70m [dtype not
    set]``). Runs of one label on different tasks keep it (they share a row of the comparison
    figure), and so do runs whose arguments are all equal (``unique_labels`` numbers those)."""
    positions: dict[str, list[int]] = {}
    for position, label in enumerate(labels):
        positions.setdefault(label, []).append(position)
    told = list(labels)
    for label, group in positions.items():
        shared = any(not set(tasks[a]).isdisjoint(tasks[b]) for a in group for b in group if a < b)
        keys = dict.fromkeys(key for p in group for key in model_args[p])
        differing = [k for k in keys if len({model_args[p].get(k) for p in group}) > 1]
        if not shared or not differing:
            continue
        for p in group:
            parts = [
                f"{k}={model_args[p][k]}" if k in model_args[p] else f"{k} not set"
                for k in differing
            ]
            told[p] = f"{label} [{', '.join(parts)}]"
    return told


def model_size(model_args: Mapping[str, str]) -> float | None:
    """The parameter count written in the model's name (``pythia-1.4b`` -> 1.4e9), if any."""
    name = _model_name(model_args)
    if not name:
        return None
    match = _SIZE.search(name)
    if match is None:
        return None
    return float(match.group(1)) * _SIZE_UNIT[match.group(2).lower()]


def training_step(model_args: Mapping[str, str]) -> int | None:
    """The training step of a checkpoint revision (``revision=step1000`` -> 1000), if any."""
    match = _STEP.match(model_args.get("revision", ""))
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class RunOrder:
    """Positions of the runs (indices into the given sequence), what the order follows, and
    the lines it allows: each line lists, in order, the positions in the new order (0, 1, ...)
    of runs that differ only along the ordered axis. Runs in the order given form no line."""

    indices: list[int]
    by: str
    lines: list[list[int]]


def _line_key(model_args: Mapping[str, str], along_step: bool) -> tuple[tuple[str, str], ...]:
    """What runs on one line share: their model arguments less the axis the line runs along
    (the revision for training steps, else the size written in the model's name)."""
    if along_step:
        rest = {k: v for k, v in model_args.items() if k != "revision"}
    else:
        rest = {
            k: _SIZE.sub("*", v) if k in (*_NAME_KEYS, "gguf_file") else v
            for k, v in model_args.items()
        }
    return tuple(sorted(rest.items()))


def order_runs(model_args: Sequence[Mapping[str, str]]) -> RunOrder:
    """Order runs by model size, then training step, using each only when every run reveals
    it; ties and everything else keep the given order. ``by`` says which keys were used
    (``"model size"``, ``"training step"``, ``"model size, training step"`` or
    ``"run order"``). Lines join runs along training step when the order follows it (one line
    per model), else along model size (one line per model family: the name less its size, and
    the other arguments); categorical runs (``"run order"``) get none."""
    sizes = [model_size(args) for args in model_args]
    steps = [training_step(args) for args in model_args]
    use_size = bool(sizes) and all(s is not None for s in sizes) and len(set(sizes)) > 1
    use_step = bool(steps) and all(s is not None for s in steps) and len(set(steps)) > 1
    keys = [
        ((sizes[i] or 0.0) if use_size else 0.0, (steps[i] or 0) if use_step else 0, i)
        for i in range(len(model_args))
    ]
    indices = [key[2] for key in sorted(keys)]
    used = [name for name, on in (("model size", use_size), ("training step", use_step)) if on]
    lines: dict[tuple[tuple[str, str], ...], list[int]] = {}
    if used:
        for position, index in enumerate(indices):
            lines.setdefault(_line_key(model_args[index], use_step), []).append(position)
    return RunOrder(
        indices, ", ".join(used) or "run order", [line for line in lines.values() if len(line) > 1]
    )


def unique_labels(labels: Sequence[str], tasks: Sequence[Collection[str]]) -> list[str]:
    """The labels, with a repeat told apart (``x (2)``, ``x (3)``...) only where it shares a
    task with an earlier run of that label: runs of one model on different tasks keep one
    label (and share a row of the comparison figure)."""
    covered: dict[str, set[str]] = {}
    unique = []
    for label, run_tasks in zip(labels, tasks, strict=True):
        candidate, count = label, 1
        while not covered.get(candidate, set()).isdisjoint(run_tasks):
            count += 1
            candidate = f"{label} ({count})"
        covered.setdefault(candidate, set()).update(run_tasks)
        unique.append(candidate)
    return unique
