"""The base classes of this package's harness tasks (named in YAML with ``class: !function``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import datasets
import numpy as np
from lm_eval.api.instance import Instance
from lm_eval.api.samplers import FirstNSampler
from lm_eval.api.task import ConfigurableTask
from lm_eval.api.utils import ends_with_whitespace

from calib_tasks.harness import aggregations, preflight
from calib_tasks.scoring import metric_table
from calib_tasks.scoring.records import PREDICT_ONLY_KEY, RECORD_KEY, RecordKind
from calib_tasks.scoring.settings import TaskSettings, task_settings
from calib_tasks.token_stats import REQUEST_TYPE


def _with_calib_metrics(
    config: Mapping[str, Any], kind: RecordKind, settings: TaskSettings
) -> list[dict[str, Any]]:
    """The task's own ``metric_list`` (e.g. the harness's ``acc``) and, after it, the metric
    table's rows for ``kind`` and ``settings``; a row that the YAML lists again is an error
    naming it."""
    own = list(config.get("metric_list") or [])
    calib = metric_table.metric_list(kind, settings)
    twice = {entry.get("metric") for entry in own} & {entry["metric"] for entry in calib}
    if twice:
        raise ValueError(
            f"{config.get('task')}: metric_list names {sorted(twice)}, which come from "
            "calib_tasks.scoring.metric_table; remove them from the task's YAML"
        )
    return own + calib


def probability(logprob: float) -> float:
    """``exp(logprob)`` in float64, capped at 1 (a float32 log-softmax can exceed 0 by rounding)."""
    return min(float(np.exp(np.float64(logprob))), 1.0)


def blank_context_problem(context: str | Sequence[str]) -> str | None:
    """None unless ``context`` (a document's prompt, or a multiple-input task's prompts) is
    whitespace only without being empty, else the problem. The harness's ``loglikelihood`` moves
    a context's trailing whitespace into the continuation and hands the empty rest to the
    backend, which then fails mid-run (hf: an ``AssertionError``); an empty context is the
    harness's "no context" (scored after the prefix token) and passes."""
    contexts = [context] if isinstance(context, str) else list(context)
    blank = [c for c in contexts if isinstance(c, str) and c and not c.strip()]
    if blank:
        return f"its prompt is whitespace only ({blank[0]!r}): is the question empty?"
    return None


class CalibTask(ConfigurableTask):
    """A ConfigurableTask with document validation and same-group few-shot examples.

    * ``check_config`` raises for a config that cannot make a task (its settings; a subclass
      checks more): run where the harness resolves task names, before the model loads
      (``calib_tasks.harness.task_paths``), and again by ``__init__``.
    * ``check_doc`` returns None for a good raw document and otherwise what is wrong; the task
      then fails while loading, before any model call, naming the task, split and document.
    * ``fewshot_group_field`` (e.g. ``"subject"``): few-shot examples for a document are the first
      k few-shot documents with the same value of that field (the document itself excluded when
      few-shot and test split coincide), as in the harness's per-subject MMLU tasks.
    """

    fewshot_group_field: str | None = None
    #: The confidence rules and recalibrators the task computes (``task_settings``,
    #: from the ``calib_rules`` and ``calib_recalibration`` keys of its ``metadata``).
    settings: TaskSettings
    #: The kind of record the task emits: its calibration metrics are the rows of
    #: ``metric_table.METRICS`` that apply to it.
    record_kind: RecordKind

    def __init__(self, config: dict[str, Any] | None = None, **kwargs: Any) -> None:
        config = self.resolved_config(config or {})
        self.settings = self.config_settings(config)
        own_results = config.get("process_results")
        #: The config's own ``process_results`` function (a wrapped task's), if any: the harness
        #: is given the class's method in its place.
        self.config_results = own_results if callable(own_results) else None
        config["metric_list"] = _with_calib_metrics(config, self.record_kind, self.settings)
        # A non-None process_results makes the harness take metric_list entries as aggregations
        # only; otherwise it looks each metric up, falling back to the hub.
        config["process_results"] = f"{type(self).__qualname__}.process_results"
        super().__init__(config=config, **kwargs)
        self._group_samplers: dict[Any, FirstNSampler] = {}
        if self.fewshot_group_field is not None:
            groups: dict[Any, list[dict]] = defaultdict(list)
            for doc in self.fewshot_docs() or []:
                groups[doc[self.fewshot_group_field]].append(doc)
            self._group_samplers = {key: FirstNSampler(docs) for key, docs in groups.items()}

    @classmethod
    def resolved_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """The config the task is built from: ``config`` (a task YAML's, functions resolved)
        without the ``class`` key; ``ValueError`` naming the task when it cannot make one of
        ``cls``'s tasks (a subclass resolves and checks more, e.g. the task it wraps)."""
        return {k: v for k, v in config.items() if k != "class"}

    @classmethod
    def config_settings(cls, config: Mapping[str, Any]) -> TaskSettings:
        """The settings of the task that ``config`` (resolved) makes, from its ``metadata``
        (``task_settings``); ``ValueError`` naming task and setting otherwise."""
        metadata = config.get("metadata")
        return task_settings(
            metadata if isinstance(metadata, Mapping) else None,
            str(config.get("task")),
            cls.record_kind,
        )

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` naming the task when ``config`` (a task YAML's, functions
        resolved, the run's metadata merged in) cannot make one of ``cls``'s tasks, as far as
        that is known without loading its data: what ``__init__`` checks before it does. Run
        before the model loads (``task_paths.check_package_tasks``)."""
        cls.config_settings(cls.resolved_config(config))

    def download(self, dataset_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """The harness's download, then ``check_doc`` on every raw document of the test and
        few-shot splits. A ``custom_dataset`` function is called here as the harness calls it
        (the metadata and ``dataset_kwargs`` as keyword arguments), without the harness's
        warning that custom kwargs can be passed to ``--metadata`` (a task of this package
        documents its own settings)."""
        load = self.config.custom_dataset
        if callable(load):
            self.dataset = load(
                **(self.config.metadata or {}), **(self.config.dataset_kwargs or {})
            )
        else:
            super().download(dataset_kwargs, **kwargs)
        for split in sorted({self.config.test_split, self.config.fewshot_split} - {None}):
            for index, doc in enumerate(self.dataset[split]):
                problem = self.check_doc(doc)
                if problem is not None:
                    raise ValueError(
                        f"{self.config.task}: document {index} of split {split!r} is invalid: "
                        f"{problem}"
                    )

    def check_doc(self, doc: Mapping[str, Any]) -> str | None:
        """None for a well-formed raw document, else a short description of the problem."""
        return None

    def score(self, doc: dict, results: list[Any]) -> dict[str, Any]:
        """The document's metric values, calibration record included (``calib_values``)."""
        raise NotImplementedError

    def calib_values(self, record: dict[str, Any]) -> dict[str, Any]:
        """The values of every calibration metric of the task for one document's ``record``."""
        return metric_table.metric_values(record, self.record_kind, self.settings)

    def process_results(self, doc: dict, results: list[Any]) -> dict[str, Any]:
        """``score``; under ``--predict_only`` (every metric renamed ``bypass``, whose aggregation
        ignores its values) the calibration record alone, under ``bypass``, so that the samples
        file still carries what ``calib-report`` computes calibration from."""
        values = self.score(doc, results)
        if PREDICT_ONLY_KEY in self._metric_fn_list:
            return {PREDICT_ONLY_KEY: values[RECORD_KEY]}
        return values

    def aggregation(self) -> dict[str, Callable[[list[Any]], Any]]:
        """The harness's aggregations of this task, this package's own wrapped so that their
        warnings and errors name the task (the harness's own are left as they are: it
        bootstraps a stderr only for those it recognises)."""
        return {
            key: aggregations.for_task(self.config.task, fn)
            if aggregations.is_calib_aggregation(fn)
            else fn
            for key, fn in super().aggregation().items()
        }

    def answer_delimiter(self, apply_chat_template: bool) -> str:
        """The target delimiter before an answer, as the harness's multiple_choice requests use
        it: dropped under a chat template (whose prompt ends with the assistant header), unless
        a ``gen_prefix`` that ends without whitespace precedes the answer."""
        gen_prefix = self.config.gen_prefix
        if apply_chat_template and not (gen_prefix and not ends_with_whitespace(gen_prefix)):
            return ""
        return self.config.target_delimiter

    def fewshot_context(self, doc: dict, num_fewshot: int, **kwargs: Any):
        """The harness's context, drawing few-shot examples from the document's own group."""
        field = self.fewshot_group_field
        if field is not None and num_fewshot > 0:
            sampler = self._group_samplers.get(doc[field])
            available = len(sampler.df) if sampler else 0
            if self.config.fewshot_split == self.config.test_split:
                available -= 1  # first_n skips the document itself
            if available < num_fewshot:
                raise ValueError(
                    f"{self.config.task}: {num_fewshot}-shot needs {num_fewshot} few-shot "
                    f"documents with {field} {doc[field]!r}, only {available} available"
                )
            self.sampler = sampler
        return super().fewshot_context(doc, num_fewshot, **kwargs)


class TokenStatsTask(CalibTask):
    """A calib task whose requests are ``token_stats`` requests (``calib_tasks.token_stats``).

    The run's backend is checked for them before any request of the run is sent (``preflight``).
    """

    request_type = REQUEST_TYPE

    def token_stats_request(
        self, doc: dict, context: str, continuation: str, idx: int = 0, **kwargs: Any
    ) -> Instance:
        """One ``token_stats`` request scoring ``continuation`` after ``context``; ``kwargs`` are
        ``construct_requests``' (the chat-template ones are consumed, the rest go to Instance)."""
        kwargs.pop("apply_chat_template", None)
        kwargs.pop("chat_template", None)
        return Instance(REQUEST_TYPE, doc, (context, continuation), idx, **kwargs)


preflight.install()


def bundled_test_split(file_name: str) -> datasets.DatasetDict:
    """The bundled JSON Lines file ``task_configs/data/<file_name>`` as a data set whose one
    split is ``test`` (the offline ``_mini`` tasks' ``custom_dataset``)."""
    from calib_tasks import task_dir

    return datasets.DatasetDict(
        {"test": datasets.Dataset.from_json(str(task_dir() / "data" / file_name))}
    )
