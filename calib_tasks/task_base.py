"""The base class of this package's harness tasks (named in YAML with ``class: !function``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from lm_eval.api.samplers import FirstNSampler
from lm_eval.api.task import ConfigurableTask

import calib_tasks.aggregations  # noqa: F401  (registers the aggregations the YAMLs name)


class CalibTask(ConfigurableTask):
    """A ConfigurableTask with document validation and same-group few-shot examples.

    * ``check_doc`` returns None for a good raw document and otherwise what is wrong; the task
      then fails while loading, before any model call, naming the task, split and document.
    * ``fewshot_group_field`` (e.g. ``"subject"``): few-shot examples for a document are the first
      k few-shot documents with the same value of that field (the document itself excluded when
      few-shot and test split coincide), as in the harness's per-subject MMLU tasks.
    """

    fewshot_group_field: str | None = None

    def __init__(self, config: dict[str, Any] | None = None, **kwargs: Any) -> None:
        config = {k: v for k, v in (config or {}).items() if k != "class"}
        if type(self).process_results is not ConfigurableTask.process_results:
            # A non-None process_results makes the harness take metric_list entries as
            # aggregations only; otherwise it looks each metric up, falling back to the hub.
            config["process_results"] = f"{type(self).__qualname__}.process_results"
        super().__init__(config=config, **kwargs)
        self._group_samplers: dict[Any, FirstNSampler] = {}
        if self.fewshot_group_field is not None:
            groups: dict[Any, list[dict]] = defaultdict(list)
            for doc in self.fewshot_docs() or []:
                groups[doc[self.fewshot_group_field]].append(doc)
            self._group_samplers = {key: FirstNSampler(docs) for key, docs in groups.items()}

    def download(self, dataset_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
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
