"""``CalibGenerationTask``: calibration of any ``generate_until`` task of the harness, with its own
data, prompt, few-shot, ``generation_kwargs``, filters and metrics.

A task YAML wraps a harness task (or one of the user's own from ``--include_path``) by name::

    task: calib_gsm8k
    class: !function calib_tasks.generation.CalibGenerationTask
    wraps: gsm8k

Each document is one ``calib_generate`` request (``calib_tasks.generation.request``); the
task's filters run on the generated text as they do on the stock task's, and the wrapped task's
own per-document metrics are computed on each filter's output exactly as the harness computes
them, so they come out bit for bit. Under each filter, one generation record
(``calib_tasks.scoring.records``) holds whether the answer is right and its confidence under each
method of ``calib_confidence`` (``calib_tasks.scoring.confidence_methods``); the harness suffixes
the keys with the filter's name (``ece_seq,strict-match``).

Settings (task ``metadata`` or ``--metadata``):

* ``calib_correct``: which of the task's own metrics makes an answer right: ``NAME`` (its
  per-document value must be 0/1 or a bool), or ``NAME>=T`` / ``NAME>T`` for a graded one.
  Default: the first metric of the task's ``metric_list``.
* ``calib_confidence``: the methods (default ``seq``).
* ``calib_ptrue_prompt``, ``calib_verbalized_prompt``: the second prompts (``prompts``).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_metric
from lm_eval.api.task import ConfigurableTask

from calib_tasks.generation import prompts, request
from calib_tasks.scoring.confidence_methods import (
    CORRECT_SETTING,
    PTRUE_PROMPT_SETTING,
    VERBALIZED_PROMPT_SETTING,
)
from calib_tasks.scoring.records import GENERATION, generation_record
from calib_tasks.tasks.base import CalibTask, blank_context_problem
from calib_tasks.tasks.multiple_choice import WRAPS_KEY, wrapped_config

OUTPUT_TYPE = "generate_until"
#: The harness's metric of a generate_until task that lists none.
DEFAULT_METRIC = {"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}
_CORRECT = re.compile(r"\s*([^<>=!\s]+)\s*(?:(>=|>)\s*([-+0-9.eE]+))?\s*")


@dataclass(frozen=True)
class Correctness:
    """Which per-document metric makes an answer right: ``metric`` with values 0/1 (no
    ``threshold``), or ``metric >= threshold`` (``strict``: ``>``)."""

    metric: str
    threshold: float | None = None
    strict: bool = False

    def __str__(self) -> str:
        if self.threshold is None:
            return self.metric
        return f"{self.metric}{'>' if self.strict else '>='}{self.threshold:g}"

    def correct(self, values: Mapping[str, Any], task: str, doc: str) -> bool:
        """Whether the document's metric ``values`` make its answer right; ``ValueError`` naming
        task, document and metric when the value is missing, or graded without a threshold."""
        if self.metric not in values:
            raise ValueError(
                f"{task}: document {doc}: its metrics {sorted(values)} have no "
                f"{self.metric!r} ({CORRECT_SETTING} {self})"
            )
        value = values[self.metric]
        if self.threshold is None:
            if isinstance(value, bool) or value in (0, 1):
                return bool(value)
            raise ValueError(
                f"{task}: document {doc}: {self.metric} is {value!r}, not 0/1: a graded "
                f"metric needs a threshold, e.g. {CORRECT_SETTING}: "
                f'"{self.metric}>=0.5"'
            )
        if not isinstance(value, (int, float)) or math.isnan(value):
            raise ValueError(f"{task}: document {doc}: {self.metric} is {value!r}, no number")
        return value > self.threshold if self.strict else value >= self.threshold


def own_metric_names(metric_list: list[dict[str, Any]]) -> list[str]:
    """The names of a ``metric_list``'s metrics as the harness keys their values: a metric given
    as a function (``metric: !function module.fn``) by the function's name."""
    names = []
    for entry in metric_list:
        metric = entry["metric"]
        names.append(metric.__name__ if callable(metric) else str(metric))
    return names


def correctness(metadata: Mapping[str, Any], metric_names: list[str], task: str) -> Correctness:
    """The task's ``calib_correct`` (module docstring); an unknown metric, a malformed value or
    a task without metrics is an error naming the task and its metrics."""
    if not metric_names:
        raise ValueError(f"{task}: the task has no metric to tell right from wrong answers")
    value = metadata.get(CORRECT_SETTING, metric_names[0])
    match = _CORRECT.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(
            f'{task}: {CORRECT_SETTING} must be "METRIC", "METRIC>=T" or "METRIC>T", got {value!r}'
        )
    name, operator, threshold = match.groups()
    if name not in metric_names:
        raise ValueError(
            f"{task}: {CORRECT_SETTING} names {name!r}, not one of the task's metrics "
            f"{metric_names}"
        )
    return Correctness(name, None if threshold is None else float(threshold), operator == ">")


class FilteredAnswer(str):
    """One filter's output for a document (plain text to the metrics and loggers) with the
    ``Generation`` it was extracted from and the filter's ``name``."""

    generation: request.Generation
    filter_name: str

    def __new__(cls, text: str, generation: request.Generation, filter_name: str) -> FilteredAnswer:
        answer = super().__new__(cls, text)
        answer.generation = generation
        answer.filter_name = filter_name
        return answer

    def __reduce__(self) -> tuple[Any, ...]:
        return (FilteredAnswer, (str(self), self.generation, self.filter_name))


def answer_logprob(generation: request.Generation, answer: str) -> float | None:
    """The summed log-probability of the tokens that overlap the last occurrence of ``answer``
    in ``generation``; None when ``answer`` is empty, no span of the text, or the route gave no
    token offsets."""
    start = generation.rfind(answer) if answer else -1
    if start < 0 or not generation.token_ends or generation.token_logprobs is None:
        return None
    end = start + len(answer)
    total, begin = 0.0, 0
    for logprob, token_end in zip(generation.token_logprobs, generation.token_ends, strict=True):
        if begin < end and token_end > start:
            total += logprob
        begin = token_end
    return total


def _probability(logprob: float) -> float:
    return min(math.exp(logprob), 1.0)


def confidences(
    generation: request.Generation, answer: str, methods: list[str]
) -> dict[str, float | None]:
    """The answer's confidence under each method (``confidence_methods``; None where the method
    gives none)."""
    logprobs = generation.token_logprobs or ()
    values: dict[str, float | None] = {}
    for name in methods:
        if name in ("seq", "seq_joint", "seq_min"):
            if not logprobs:
                values[name] = None
            elif name == "seq":
                values[name] = _probability(math.fsum(logprobs) / len(logprobs))
            elif name == "seq_joint":
                values[name] = _probability(math.fsum(logprobs))
            else:
                values[name] = _probability(min(logprobs))
        elif name == "answer":
            logprob = answer_logprob(generation, answer)
            values[name] = None if logprob is None else _probability(logprob)
        elif name == "ptrue":
            values[name] = generation.ptrue
        else:
            reply = generation.verbalized_reply
            cut = generation.verbalized_cut
            values[name] = None if reply is None else prompts.parse_verbalized(reply, cut)
    return values


class CalibGenerationTask(CalibTask):
    """A harness ``generate_until`` task with a generation record per document and filter
    (module docstring)."""

    record_kind = GENERATION
    request_type = request.REQUEST_TYPE

    def __init__(self, config: dict[str, Any] | None = None, **kwargs: Any) -> None:
        config = self.resolved_config(config or {})
        own_metrics = list(config.get("metric_list") or [DEFAULT_METRIC])
        # The harness computes them (the stock twin, with any function); its own config names
        # them, as it keys their values and aggregations by name.
        config["metric_list"] = [
            {**entry, "metric": name}
            for entry, name in zip(own_metrics, own_metric_names(own_metrics), strict=True)
        ]
        metadata = config.get("metadata") or {}
        task = str(config.get("task"))
        self.correctness = correctness(metadata, own_metric_names(own_metrics), task)
        self.ptrue_prompt = prompts.check_prompt(
            metadata.get(PTRUE_PROMPT_SETTING, prompts.PTRUE_PROMPT), "ptrue", task
        )
        self.verbalized_prompt = prompts.check_prompt(
            metadata.get(VERBALIZED_PROMPT_SETTING, prompts.VERBALIZED_PROMPT), "verbalized", task
        )
        super().__init__(config=config, **kwargs)
        self._stock = None if self.config_results else self._stock_twin(own_metrics)
        self._history: tuple[dict, list[dict[str, str]]] | None = None

    @classmethod
    def resolved_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """``CalibTask.resolved_config``, a ``wraps`` key replaced by the config of the task it
        names (the keys given beside it override that config); a config that is not
        ``generate_until``, samples more than one answer per document, or has images or audio is
        an error naming the task."""
        config = super().resolved_config(config)
        task = str(config.get("task"))
        if WRAPS_KEY in config:
            own = {k: v for k, v in config.items() if k != WRAPS_KEY}
            config = {**wrapped_config(config[WRAPS_KEY], task, OUTPUT_TYPE), **own}
        if config.get("output_type") != OUTPUT_TYPE:
            raise ValueError(
                f"{task}: output_type is {config.get('output_type')!r}; {cls.__name__} needs a "
                f"{OUTPUT_TYPE} task"
            )
        if (config.get("repeats") or 1) != 1:
            raise ValueError(
                f"{task}: repeats is {config['repeats']}; a generative calib task scores one "
                "answer per document (repeats: 1)"
            )
        if config.get("doc_to_image") or config.get("doc_to_audio"):
            raise ValueError(f"{task}: multimodal tasks are not supported")
        return config

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> None:
        """``CalibTask.check_config``, and the generation settings (``calib_correct``, the
        prompts)."""
        resolved = cls.resolved_config(config)
        cls.config_settings(resolved)
        metadata = resolved.get("metadata") or {}
        task = str(resolved.get("task"))
        names = own_metric_names(resolved.get("metric_list") or [DEFAULT_METRIC])
        correctness(metadata, names, task)
        prompts.check_prompt(
            metadata.get(PTRUE_PROMPT_SETTING, prompts.PTRUE_PROMPT), "ptrue", task
        )
        prompts.check_prompt(
            metadata.get(VERBALIZED_PROMPT_SETTING, prompts.VERBALIZED_PROMPT), "verbalized", task
        )

    def _stock_twin(self, own_metrics: list[dict[str, Any]]) -> CalibGenerationTask:
        """A shallow copy of the task whose ``process_results`` is the harness's own for its own
        metrics (those of the wrapped task), set up as the harness sets up a task without a
        ``process_results`` function."""
        twin = copy.copy(self)
        twin._config = copy.copy(self.config)
        twin._config.process_results = None
        twin._metric_fn_list, twin._metric_fn_kwargs = {}, {}
        for entry in own_metrics:
            name = entry["metric"]
            options = {
                k: v
                for k, v in entry.items()
                if k not in ("metric", "aggregation", "higher_is_better", "hf_evaluate")
            }
            if callable(name):
                twin._metric_fn_list[name.__name__] = name.__call__
                twin._metric_fn_kwargs[name.__name__] = options
            else:
                twin._metric_fn_list[name] = get_metric(name, bool(entry.get("hf_evaluate")))
                twin._metric_fn_kwargs[name] = options
        return twin

    def check_backend(self, lm: Any) -> None:
        """Refuse, before any request, a backend that cannot serve one of the task's methods
        (``request.check_methods``)."""
        request.check_methods(lm, self.settings.methods, self.config.task)

    def fewshot_context(self, doc: dict, num_fewshot: int, **kwargs: Any):
        """The harness's context; under a chat template the conversation is kept for the
        verbalized turn (``construct_requests`` reads it)."""
        template = kwargs.get("chat_template")
        self._history = None
        if kwargs.get("apply_chat_template") and template is not None:

            def keep(messages: list[dict[str, str]], **options: Any) -> str:
                self._history = (doc, [dict(m) for m in messages])
                return template(messages, **options)

            kwargs["chat_template"] = keep
        return super().fewshot_context(doc, num_fewshot, **kwargs)

    def construct_requests(self, doc: dict, ctx: Any, **kwargs: Any) -> Instance:
        """One ``calib_generate`` request: the harness's generate_until arguments and the plan
        of the confidence methods."""
        chat = kwargs.pop("apply_chat_template", False)
        kwargs.pop("chat_template", None)
        problem = blank_context_problem(ctx)
        if problem is not None:
            raise ValueError(f"{self.config.task}: document {kwargs.get('metadata')}: {problem}")
        history = None
        if chat:
            if self._history is None or self._history[0] is not doc:
                raise RuntimeError(f"{self.config.task}: no conversation kept for the document")
            history = self._history[1]
        plan = request.plan(
            self.settings.methods,
            self.doc_to_text(doc),
            history,
            self.ptrue_prompt,
            self.verbalized_prompt,
        )
        arguments = (ctx, copy.deepcopy(self.config.generation_kwargs), plan)
        return Instance(request.REQUEST_TYPE, doc, arguments, 0, **kwargs)

    def apply_filters(self) -> None:
        """The harness's filters, then each filter's output of a document tied to its
        generation (``FilteredAnswer``); an output that is no text is an error naming task,
        document and filter."""
        super().apply_filters()
        for instance in self._instances:
            generation = instance.resps[0]
            for name, value in instance.filtered_resps.items():
                if not isinstance(value, str):
                    raise ValueError(
                        f"{self.config.task}: document {instance.doc_id}: filter {name!r} gave "
                        f"{type(value).__name__} {value!r}, not one text"
                    )
                instance.filtered_resps[name] = FilteredAnswer(str(value), generation, name)

    def record_extras(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """Extra record fields for breakdowns and cross-fitting folds (none here)."""
        return {}

    def score(self, doc: dict, results: list[Any]) -> dict[str, Any]:
        """The wrapped task's own metrics of the document's answer and its generation record."""
        answer = results[0]
        if not isinstance(answer, FilteredAnswer):
            raise ValueError(f"{self.config.task}: expected a filtered answer, got {answer!r}")
        text = str(answer)
        if self.config_results is not None:
            stock = self.config_results(doc, [text])
        else:
            stock = ConfigurableTask.process_results(self._stock, doc, [text])
        right = self.correctness.correct(stock, self.config.task, str(doc)[:80])
        generation = answer.generation
        methods = [m.name for m in self.settings.methods]
        logprobs = generation.token_logprobs
        record = generation_record(
            right,
            confidences(generation, text, methods),
            filter=answer.filter_name,
            n_tokens=0 if logprobs is None else len(logprobs),
            verbalized_reply=generation.verbalized_reply,
            **self.record_extras(doc),
        )
        return {**stock, **self.calib_values(record)}
