"""Calibration of any multiple-choice task of the harness, with its own prompt, few-shot, filters.

``CalibMultipleChoiceTask`` is a ``multiple_choice`` task whose documents get one multiclass
record each (``calib_tasks.scoring.records``): the probabilities of every option under each
confidence
rule the task computes (``calib_tasks.scoring.confidence_rules``; by default ``sum``, the rule of
the
harness's ``acc``, reported as ``ece``, ``brier``, ..., and ``norm``, the rule of ``acc_norm``,
reported as ``ece_norm``, ...), the options' log-likelihoods, the gold index, and the top-label
view of the ``sum`` rule. Under the ``min`` rule the task sends ``token_stats`` requests in place
of its ``loglikelihood`` ones (the same requests, the same forward passes), whose responses the
harness's ``process_results`` reads as the pair it expects.

The harness's own ``acc`` / ``acc_norm`` (whatever the task's metric list asks for) come from the
harness's own ``process_results``, bit for bit. A task YAML wraps a harness task, or one of the
user's own from ``--include_path``, by name::

    task: calib_arc_easy
    class: !function calib_tasks.tasks.multiple_choice.CalibMultipleChoiceTask
    wraps: arc_easy

Everything of the wrapped task's config is kept (dataset, prompt, choices, target, few-shot,
filters, metrics) except its name; keys given beside ``wraps`` override it. Before any model
call every document is checked: its prompt not whitespace only, choices a non-empty list, one
gold option among them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
from lm_eval.api.instance import Instance
from lm_eval.api.task import ConfigurableTask

from calib_tasks.harness import task_paths
from calib_tasks.scoring.confidence_rules import OptionScores, letter_option_problem, rule_named
from calib_tasks.scoring.records import MULTICLASS, choice_record
from calib_tasks.tasks.base import CalibTask, blank_context_problem
from calib_tasks.token_stats import REQUEST_TYPE, TokenStats

WRAPS_KEY = "wraps"
OUTPUT_TYPE = "multiple_choice"


#: What each kind of wrapper needs of the task it wraps, by output type.
_NEEDS = {
    OUTPUT_TYPE: "calibration of the option probabilities needs a multiple_choice task (a "
    "generate_until task is wrapped with class: !function "
    "calib_tasks.generation.CalibGenerationTask)",
    "generate_until": "calibration of generated answers needs a generate_until task (a "
    "multiple_choice task is wrapped with class: !function "
    "calib_tasks.multiple_choice.CalibMultipleChoiceTask)",
}


def wrapped_config(name: str, wrapper: str, output_type: str = OUTPUT_TYPE) -> dict[str, Any]:
    """The full config of the task ``name`` (its YAML, includes and functions resolved) as the
    task managers of this process index it, for the task ``wrapper`` that wraps it; a name that
    is unknown, a group, a tag, a Python task or not of ``output_type`` is an error naming both
    (and, for a group, how to calibrate one)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = task_paths.harness_entry(name)
    if entry is not None and entry.kind.name in ("GROUP", "TAG"):
        what = "a group" if entry.kind.name == "GROUP" else "a tag"
        raise ValueError(
            f"{wrapper}: wraps {name!r}, {what}; a wrapper wraps one {output_type} task. "
            "Wrap each of its tasks (calib_<task> with wraps: <task>) and list the wrappers in "
            "a group, or run the group itself with --log_samples: calib-report pools a group's "
            "tasks into one calibration entry, '<group> (pooled)'"
        )
    if entry is None or entry.yaml_path is None:
        raise ValueError(f"{wrapper}: wraps {name!r}, which is no task the harness knows")
    config = dict(load_yaml(entry.yaml_path, resolve_func=True))
    if "class" in config:
        raise ValueError(f"{wrapper}: wraps {name!r}, a Python task; only YAML tasks are wrapped")
    found = config.get("output_type")
    if found != output_type:
        raise ValueError(
            f"{wrapper}: wraps {name!r}, whose output_type is {found!r}; {_NEEDS[output_type]}"
        )
    for structural in ("task", "tag", "group", "task_alias"):
        config.pop(structural, None)
    return config


class CalibMultipleChoiceTask(CalibTask):
    """A harness multiple-choice task with a calibration record per document (module
    docstring)."""

    record_kind = MULTICLASS

    def __init__(self, config: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config=config, **kwargs)
        self._per_token = any(rule.needs_token_stats for rule in self.settings.rules)
        if self._per_token:  # checked against the run's backend before any request (preflight)
            self.request_type = REQUEST_TYPE
            needing = [rule.name for rule in self.settings.rules if rule.needs_token_stats]
            self.request_type_reason = f"its confidence rule(s) {needing} need per-token scores"
        self._check_documents()

    @classmethod
    def resolved_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """``CalibTask.resolved_config``, a ``wraps`` key replaced by the config of the task it
        names (``wrapped_config``; the keys given beside it override that config); a config
        that is not ``multiple_choice`` then is an error naming the task."""
        config = super().resolved_config(config)
        if WRAPS_KEY in config:
            own = {k: v for k, v in config.items() if k != WRAPS_KEY}
            config = {**wrapped_config(config[WRAPS_KEY], str(config.get("task"))), **own}
        if config.get("output_type") != OUTPUT_TYPE:
            raise ValueError(
                f"{config.get('task')}: output_type is {config.get('output_type')!r}; "
                f"{cls.__name__} needs a multiple_choice task"
            )
        return config

    def _check_documents(self) -> None:
        """Every evaluated document's prompt, options and gold, before any model call (once the
        task is built: the harness sets up ``doc_to_choice`` after loading the data)."""
        letters = rule_named("letter") in self.settings.rules
        for index, doc in enumerate(self.eval_docs):
            try:
                problem = blank_context_problem(self.fewshot_context(doc, 0))
                if problem is not None:
                    raise ValueError(problem)
                choices, _ = self.options_and_gold(doc)
                problem = letter_option_problem(choices) if letters else None
                if problem is not None:
                    raise ValueError(f"{problem} (confidence rule 'letter')")
            except ValueError as error:
                raise ValueError(
                    f"{self.config.task}: document {index} of the evaluated split is invalid: "
                    f"{error}"
                ) from None

    def options_and_gold(self, doc: Mapping[str, Any]) -> tuple[list[str], int]:
        """The document's options (``doc_to_choice``) and gold index, as the harness's
        ``process_results`` derives it (``doc_to_target``, or ``doc_to_text`` for a task whose
        options sit in the context); ``ValueError`` when they do not fit together."""
        choices = self.doc_to_choice(doc)
        if (
            not isinstance(choices, list)
            or not choices
            or not all(isinstance(c, str) and c for c in choices)
        ):
            raise ValueError(
                f"the choices must be a non-empty list of non-empty strings, got {choices!r}"
            )
        gold = self.doc_to_text(doc) if self.multiple_input else self.doc_to_target(doc)
        if isinstance(gold, list):
            raise ValueError(
                f"it has several gold answers ({gold!r}): tasks with multiple gold answers "
                "(multiple_target) are not supported; calibration needs one gold option"
            )
        if isinstance(gold, str):
            if gold not in choices:
                raise ValueError(f"the gold answer {gold!r} is none of the {len(choices)} choices")
            gold = choices.index(gold)
        if isinstance(gold, bool) or not isinstance(gold, (int, np.integer)):
            raise ValueError(f"the gold answer must be an index or a choice, got {gold!r}")
        if not 0 <= gold < len(choices):
            raise ValueError(f"the gold index {gold} is out of range for {len(choices)} choices")
        return choices, int(gold)

    def record_extras(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """Extra record fields for breakdowns (none here; MMLU adds subject and category)."""
        return {}

    def construct_requests(self, doc: dict, ctx: Any, **kwargs: Any) -> list[Instance]:
        """The harness's requests; under the ``min`` rule each as a ``token_stats`` request."""
        requests = super().construct_requests(doc, ctx, **kwargs)
        if not self._per_token:
            return requests
        return [dataclasses.replace(r, request_type=REQUEST_TYPE) for r in requests]

    def score(self, doc: dict, results: list[tuple[float, bool]]) -> dict[str, Any]:
        """The harness's own metrics of the document and its calibration record."""
        if self.config_results is not None:  # the wrapped task's own process_results
            stock = self.config_results(doc, results)
        else:
            stock = ConfigurableTask.process_results(self, doc, results)
        choices, gold = self.options_and_gold(doc)
        options = results[: len(choices)]
        scores = OptionScores(
            [ll for ll, _ in options],
            [float(len(choice)) for choice in choices],
            self._min_token_logprobs(options) if self._per_token else None,
        )
        record = choice_record(scores, gold, self.settings.rules, **self.record_extras(doc))
        return {**stock, **self.calib_values(record)}

    def _min_token_logprobs(self, options: list[Any]) -> list[float]:
        """Each option's smallest token log-probability, from its ``token_stats`` response."""
        if not all(isinstance(r, TokenStats) and r.n > 0 for r in options):
            raise ValueError(
                f"{self.config.task}: the min rule needs a token_stats response with at least "
                f"one scored token per option, got {[type(r).__name__ for r in options]}"
            )
        return [float(r.true_logprob.min()) for r in options]
