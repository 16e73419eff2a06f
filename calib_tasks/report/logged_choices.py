"""Calibration records of any harness multiple-choice task, from its logged samples alone.

A ``--log_samples`` line of a ``multiple_choice`` task holds, per option, the request
(``arguments`` -> ``gen_args_<i>`` -> ``arg_0`` context, ``arg_1`` continuation), the backend's
response (``filtered_resps[i]``: log-likelihood and is-greedy, written as strings) and the gold
``target``. So a run made without this package (any lm-eval 0.4.x run, a leaderboard's
published details) can still be scored, under the two rules of the harness's own headlines:

* ``sum``: softmax of the options' summed log-likelihoods, the rule of the harness's ``acc``;
* ``norm``: softmax of the log-likelihoods divided by each option's length in characters (the
  continuation without the task's ``target_delimiter``), the rule of ``acc_norm``. Not for a
  task whose options sit in the context (``multiple_input``, e.g. winogrande): the lengths that
  ``acc_norm`` divides by are not in the logged requests.

The gold index is ``target`` when it is an integer index, else the option whose text equals it.
Each rule's records are multiclass records (``calib_tasks.records``), of the lines of the file's
first filter (a task of several filters logs each document once per filter).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calib_tasks.confidence_rules import OptionScores
from calib_tasks.records import choice_record

RULES = {"sum": "option log-likelihoods", "norm": "length-normalised log-likelihoods"}


@dataclass
class ChoiceRecords:
    """Per rule, the records of the usable lines; ``problems`` are ``"<file>:<line>: <what>"``;
    ``multiple_input`` when the options sit in the context (then no ``norm`` records)."""

    records: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {r: [] for r in RULES})
    problems: list[str] = field(default_factory=list)
    multiple_input: bool = False


def _options(sample: dict[str, Any]) -> tuple[list[str], list[str], list[float]]:
    """Contexts, continuations and log-likelihoods of a line's options (``ValueError`` if the
    line is not a logged multiple-choice sample)."""
    arguments = sample.get("arguments")
    responses = sample.get("filtered_resps")
    if not isinstance(arguments, dict) or not isinstance(responses, list):
        raise ValueError("no 'arguments' / 'filtered_resps' of a multiple-choice sample")
    requests = [arguments[key] for key in sorted(arguments, key=lambda k: int(k.split("_")[-1]))]
    if len(requests) != len(responses) or len(requests) < 2:
        raise ValueError(f"{len(requests)} requests for {len(responses)} responses")
    contexts = [str(r.get("arg_0", "")) for r in requests]
    continuations = [str(r.get("arg_1", "")) for r in requests]
    lls = [float(response[0]) for response in responses]
    if not all(math.isfinite(ll) for ll in lls):
        raise ValueError(f"non-finite option log-likelihood in {lls}")
    return contexts, continuations, lls


def _gold(target: Any, choices: list[str]) -> int:
    text = str(target).strip()
    if text.lstrip("-").isdigit():
        gold = int(text)
        if not 0 <= gold < len(choices):
            raise ValueError(f"gold index {gold} is out of range for {len(choices)} options")
        return gold
    stripped = [choice.strip() for choice in choices]
    if text in stripped:
        return stripped.index(text)
    raise ValueError(f"target {target!r} is neither an option index nor an option's text")


def read_choice_records(path: Path, target_delimiter: str = " ") -> ChoiceRecords:
    """Both rules' records of every usable line of the samples file at ``path``."""
    out = ChoiceRecords()
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        out.problems.append(f"{path}: cannot be read ({error.strerror})")
        return out
    first_filter = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            sample = json.loads(line)
            filter_key = sample.get("filter", "none")
            first_filter = filter_key if first_filter is None else first_filter
            if filter_key != first_filter:  # the same documents again, under another filter
                continue
            contexts, continuations, lls = _options(sample)
            same_context = len(set(contexts)) == 1
            choices = [
                c[len(target_delimiter) :] if target_delimiter and c.startswith(target_delimiter)
                else c
                for c in continuations
            ]  # fmt: skip
            gold = _gold(sample.get("target"), choices if same_context else contexts)
        except json.JSONDecodeError as error:
            out.problems.append(f"{path}:{number}: not valid JSON ({error.msg}; truncated?)")
            continue
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as error:
            out.problems.append(f"{path}:{number}: {error}")
            continue
        out.records["sum"].append(choice_record(OptionScores(lls), gold))
        if same_context:  # the norm rule's records: their log-likelihoods are per character
            lengths = np.array([max(len(choice), 1) for choice in choices], dtype=float)
            normalised = np.asarray(lls) / lengths
            out.records["norm"].append(choice_record(OptionScores(normalised), gold))
        else:
            out.multiple_input = True
    if out.multiple_input:
        out.records["norm"] = []
    return out
