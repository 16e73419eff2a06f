"""Run labels and run order derived from a run's model arguments.

A label names what was evaluated: the stem of ``gguf_file``, else the basename of
``pretrained`` (else ``model``/``path``/``engine``, else the harness's model name), then
``@revision`` when one was given, and ``+ adapter`` for a ``peft`` adapter. Runs are ordered
by model size (``70m``, ``1.4b``, ``12B``... in the label) and training step
(``revision=stepN``) when every run reveals them, else kept in the order given.
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


def run_label(model_args: Mapping[str, str], model: str | None, fallback: str) -> str:
    """A short human label of a run: ``name[@revision][ + adapter]``.

    ``model`` (the harness's ``--model``, e.g. ``dummy``) is used when the arguments name no
    model, and ``fallback`` when neither is known.
    """
    label = _model_name(model_args) or model or fallback
    if model_args.get("revision"):
        label += f"@{model_args['revision']}"
    if model_args.get("peft"):
        label += f" + {_basename(model_args['peft'])}"
    return label


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
    """Positions of the runs (indices into the given sequence) and what the order follows."""

    indices: list[int]
    by: str


def order_runs(model_args: Sequence[Mapping[str, str]]) -> RunOrder:
    """Order runs by model size, then training step, using each only when every run reveals
    it; ties and everything else keep the given order. ``by`` says which keys were used
    (``"model size"``, ``"training step"``, ``"model size, training step"`` or
    ``"run order"``)."""
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
    return RunOrder(indices, ", ".join(used) or "run order")


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
