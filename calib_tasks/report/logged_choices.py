"""Calibration records of any harness multiple-choice task, from its logged samples alone.

A ``--log_samples`` line of a ``multiple_choice`` task holds, per option, the request
(``arguments`` -> ``gen_args_<i>`` -> ``arg_0`` context, ``arg_1`` continuation), the backend's
response (``filtered_resps[i]``: log-likelihood and is-greedy, written as strings), the gold
``target`` (as a string) and the harness's own verdicts ``acc`` and ``acc_norm``. So a run made
without this package (any lm-eval 0.4.x run, a leaderboard's published details) can still be
scored, under the two confidence rules of the harness's own headlines (``LOGGED_RULES``, from
``calib_tasks.scoring.confidence_rules``):

* ``sum``: softmax of the options' summed log-likelihoods, the rule of the harness's ``acc``;
* ``norm``: softmax of the log-likelihoods divided by each option's length in characters (the
  continuation without the task's ``target_delimiter``; at least 1), the rule of ``acc_norm``.
  Not for a task whose options sit in the context (``multiple_input``, e.g. winogrande): the
  lengths that ``acc_norm`` divides by are not in the logged requests.

The gold option is resolved as the harness resolved it (``ConfigurableTask.doc_to_target``, or
``doc_to_text`` for a task whose options sit in the context, then ``process_results``): an
integer is an option's index, a string is looked up among the options' texts. The samples file
logs ``target`` as a string either way, so the task's config in the results file (``configs``
-> task) says which, when its ``doc_to_target`` is an integer, a field of the document or a
template (rendered on the logged document, in a sandbox). When it says nothing (a function, of
which the results file keeps only the source; no results file), the logged ``target`` is read
both ways. Every reading is then checked against the line's logged ``acc`` (1 exactly when the
first option of highest log-likelihood is gold): exactly one must remain, else the line is a
problem line, never a guess. A line whose ``acc_norm`` the ``norm`` rule does not reproduce is
a problem line of that rule only.

Each rule's records are multiclass records (``calib_tasks.scoring.records``) of the line under
that rule alone (its option scores in place of the log-likelihoods: ``probs`` are the rule's
probabilities, and temperature scaling rescales the rule's scores), of the lines of the file's
first filter (a task of several filters logs each document once per filter).
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from calib_tasks.scoring.confidence_rules import SUM, OptionScores, Rule, rule_named
from calib_tasks.scoring.records import Record, choice_record, parse_record

NORM = rule_named("norm")
#: The rules a logged run is scored under: those of the harness's ``acc`` and ``acc_norm``.
LOGGED_RULES: tuple[Rule, ...] = (SUM, NORM)
#: The harness's default ``target_delimiter`` (``TaskConfig``).
DEFAULT_DELIMITER = " "


def _regex_replace(string: str, pattern: str, repl: str, count: int = 0) -> str:
    """The harness's own ``regex_replace`` template filter (``lm_eval.utils``)."""
    return re.sub(pattern, repl, string, count=count)


#: The harness's template environment (``lm_eval.utils.env``), sandboxed: a results file may
#: come from anywhere.
_TEMPLATES = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)
_TEMPLATES.filters["regex_replace"] = _regex_replace


@dataclass
class ChoiceRecords:
    """Per rule of ``LOGGED_RULES``, the records of the usable lines; ``problems`` are
    ``"<file>:<line>: <what>"``; ``multiple_input`` when the options sit in the context (then no
    ``norm`` records)."""

    records: dict[Rule, list[Record]] = field(
        default_factory=lambda: {rule: [] for rule in LOGGED_RULES}
    )
    problems: list[str] = field(default_factory=list)
    multiple_input: bool = False


@dataclass(frozen=True)
class LoggedOptions:
    """One line's options: their texts (the continuations without the target delimiter, or the
    contexts when ``multiple_input``) and log-likelihoods."""

    texts: list[str]
    loglikelihoods: list[float]
    multiple_input: bool

    @property
    def scores(self) -> OptionScores:
        """The options' scores for the confidence rules: their log-likelihoods, and their
        lengths in characters (at least 1)."""
        return OptionScores(self.loglikelihoods, [max(len(text), 1) for text in self.texts])


def _options(sample: Mapping[str, Any], delimiter: str) -> LoggedOptions:
    """The options of a logged line (``ValueError`` if it is not a multiple-choice sample)."""
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
    if len(set(contexts)) == 1:
        texts = [c.removeprefix(delimiter) if delimiter else c for c in continuations]
        return LoggedOptions(texts, lls, multiple_input=False)
    if len(set(continuations)) == 1:
        return LoggedOptions(contexts, lls, multiple_input=True)
    raise ValueError(
        "the options' requests share neither their context nor their continuation (requests "
        "this reader does not know, such as acc_mutual_info's unconditional ones)"
    )


def _configured_gold(spec: Any, doc: Any, has_choices: bool) -> Any:
    """What the harness's ``doc_to_target`` (or ``doc_to_text``) returned for ``doc`` under the
    config value ``spec``: an integer as it is, a field of the document its value, a template
    rendered (digits read as an integer when the task has ``doc_to_choice``, a bracketed list as
    a list). None when the config does not say: a function (of which a results file keeps only
    the source), no value, a template that does not render on the logged document."""
    if isinstance(spec, (int, list)) and not isinstance(spec, bool):
        return spec
    if not isinstance(spec, str) or not isinstance(doc, dict):
        return None
    if spec in doc:
        return doc[spec]
    try:
        text = _TEMPLATES.from_string(spec).render(**doc)
    except Exception:  # any failure of an arbitrary template: the config does not say
        return None
    literal = (text.isdigit() and has_choices) or (
        len(text) >= 2 and text[0] == "[" and text[-1] == "]"
    )
    if not literal:
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None if text.isdigit() else text  # the harness fails on the first, keeps the other


def _option_of(gold: Any, texts: Sequence[str]) -> int | None:
    """The option ``gold`` names as ``process_results`` reads it (an integer is an index, a
    string an option's text), or None when it names none."""
    if isinstance(gold, int) and not isinstance(gold, bool):
        return gold if 0 <= gold < len(texts) else None
    if isinstance(gold, str) and gold in texts:
        return texts.index(gold)
    return None


def _readings(gold: Any, target: str, options: LoggedOptions) -> dict[int, str]:
    """The options that can be gold, each with how it was read: ``gold`` as the harness typed it
    when the config says (None when not), else ``target`` as an index and as a text (any option
    for ``multiple_input``, whose gold is not logged); ``ValueError`` when none can be."""
    texts, k = options.texts, len(options.texts)
    if isinstance(gold, list):
        raise ValueError(f"several gold options {gold!r} (a list target): not supported")
    if gold is not None:
        index = _option_of(gold, texts)
        if index is None:
            raise ValueError(f"the gold {gold!r} names none of the {k} options {texts!r}")
        return {index: f"gold {gold!r}"}
    if options.multiple_input:
        return {i: "doc_to_text's index, which no config value gives" for i in range(k)}
    readings = {}
    if target.isascii() and target.isdigit() and int(target) < k:
        readings[int(target)] = f"target {target!r} as an index"
    if target in texts:
        readings.setdefault(texts.index(target), f"target {target!r} as an option's text")
    if not readings:
        raise ValueError(f"target {target!r} is neither an option index nor an option's text")
    return readings


def _described(readings: Mapping[int, str]) -> str:
    """``readings`` in words: ``"option 2 by <how>; options 0, 1 by <how>"``."""
    by_way: dict[str, list[int]] = {}
    for option, how in readings.items():
        by_way.setdefault(how, []).append(option)
    return "; ".join(
        f"option{'s' if len(of) > 1 else ''} {', '.join(map(str, of))} by {how}"
        for how, of in by_way.items()
    )


def _verdict(sample: Mapping[str, Any], key: str) -> bool | None:
    """The harness's logged ``acc`` (or ``acc_norm``) of the line, None when absent or not 0/1."""
    value = sample.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    return None


def _harness_gold(
    sample: Mapping[str, Any], config: Mapping[str, Any], options: LoggedOptions
) -> int:
    """The line's gold option as the harness resolved it (see the module docstring);
    ``ValueError`` saying why when the line does not determine it."""
    spec = config.get("doc_to_text" if options.multiple_input else "doc_to_target")
    has_choices = config.get("doc_to_choice") is not None
    gold = _configured_gold(spec, sample.get("doc"), has_choices)
    if config.get("use_prompt"):  # a promptsource prompt, not the config, gave the target
        gold = None
    target = str(sample.get("target"))
    if options.multiple_input and not isinstance(gold, int):
        gold = None  # its gold is doc_to_text's index; a string is no reading of the config
    elif not options.multiple_input and gold is not None and str(gold) != target:
        gold = None  # the config does not give the logged target: read the target itself
    readings = _readings(gold, target, options)
    pred = int(np.argmax(options.loglikelihoods))
    acc = _verdict(sample, "acc")
    kept = [i for i in readings if acc is None or (i == pred) == acc]
    if len(kept) == 1:
        return kept[0]
    read = _described(readings)
    if not kept:
        raise ValueError(
            f"the harness's acc is {int(acc)} but the gold read from the line ({read}) "
            f"gives {int(not acc)} (the first option of highest log-likelihood is {pred})"
        )
    logged = "not logged" if acc is None else int(acc)
    raise ValueError(
        f"the gold option is ambiguous: options {kept} remain ({read}; the harness's acc is "
        f"{logged}) and the task config in the results file does not say which the harness used"
    )


def read_choice_records(path: Path, config: Mapping[str, Any] | None = None) -> ChoiceRecords:
    """Both rules' records of every usable line of the samples file at ``path``; ``config`` is
    the task's config from the results file (``configs`` -> task; empty when there is none)."""
    config = config or {}
    delimiter = str(config.get("target_delimiter", DEFAULT_DELIMITER))
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
            options = _options(sample, delimiter)
            gold = _harness_gold(sample, config, options)
        except json.JSONDecodeError as error:
            out.problems.append(f"{path}:{number}: not valid JSON ({error.msg}; truncated?)")
            continue
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as error:
            out.problems.append(f"{path}:{number}: {error}")
            continue
        out.records[SUM].append(_rule_record(SUM, options, gold))
        if options.multiple_input:
            out.multiple_input = True
            continue
        problem = _norm_problem(sample, options, gold)
        if problem is None:
            out.records[NORM].append(_rule_record(NORM, options, gold))
        else:
            out.problems.append(f"{path}:{number}: {problem}; left out of the norm rule")
    if out.multiple_input:
        out.records[NORM] = []
    return out


def _rule_record(rule: Rule, options: LoggedOptions, gold: int) -> Record:
    """The line's multiclass record under ``rule`` (a normalised rule) alone: the rule's option
    scores in place of the log-likelihoods."""
    return parse_record(choice_record(OptionScores(rule.scores(options.scores)), gold))


def _norm_problem(sample: Mapping[str, Any], options: LoggedOptions, gold: int) -> str | None:
    """None when the norm rule's prediction reproduces the line's logged ``acc_norm`` (or none
    is logged), else what it gives and what the harness logged."""
    logged = _verdict(sample, "acc_norm")
    pred = int(np.argmax(NORM.scores(options.scores)))
    if logged is None or (pred == gold) == logged:
        return None
    return (
        f"the harness's acc_norm is {int(logged)} but the options' log-likelihoods per "
        f"character of {options.texts!r} give {int(not logged)}"
    )
