"""calib_facts: first-token fact generation on LAMA T-REx (and the facts of calib_facts_gen,
its generative form: ``calib_tasks.generation.facts``).

Prompt: the relation template with [X] filled by the subject, cut right before [Y]
("Dante was born in"). Few-shot examples (``--num_fewshot k``) are the first k other facts of
the same relation, written out as full sentences.

* calib_facts: the scored continuation is " " + object label; confidence = the top-1 next-token
  probability at the first object token; correct = that top-1 token is the object's first token.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import datasets
from lm_eval.api.instance import Instance

from calib_tasks.scoring.records import TOP_LABEL, top_label_record
from calib_tasks.tasks.base import TokenStatsTask, probability
from calib_tasks.tasks.lama import LAMA_URL, read_trex
from calib_tasks.token_stats import TokenStats


def check_fact(doc: Mapping[str, Any]) -> str | None:
    """None for a usable fact, else what is wrong with it."""
    template = doc.get("template")
    if not isinstance(template, str) or template.count("[X]") != 1 or template.count("[Y]") != 1:
        return f"template must contain [X] and [Y] exactly once, got {template!r}"
    for field in ("sub_label", "obj_label"):
        if not isinstance(doc.get(field), str) or not doc[field].strip():
            return f"{field} is missing or empty"
    if not prompt(doc):
        return f"template {template!r} leaves no prompt before [Y]"
    return None


def prompt(doc: Mapping[str, Any]) -> str:
    """The template with [X] filled, cut right before [Y] (trailing space removed)."""
    return doc["template"].split("[Y]")[0].replace("[X]", doc["sub_label"]).rstrip()


class CalibFactsTask(TokenStatsTask):
    """One ``token_stats`` request per fact, scored at the first object token."""

    record_kind = TOP_LABEL
    check_doc = staticmethod(check_fact)
    fewshot_group_field = "relation"

    def construct_requests(self, doc: dict, ctx: Any, **kwargs: Any) -> Instance:
        delimiter = self.answer_delimiter(kwargs.get("apply_chat_template", False))
        return self.token_stats_request(doc, ctx, delimiter + doc["obj_label"], **kwargs)

    def score(self, doc: dict, results: list[TokenStats]) -> dict[str, Any]:
        """The top-1 probability and correctness at the first object token."""
        (stats,) = results
        record = top_label_record(
            probability(stats.top1_logprob[0]),
            bool(stats.top1_is_true[0]),
            relation=doc["relation"],
            sub_label=doc["sub_label"],
            obj_label=doc["obj_label"],
            object_token_prob=probability(stats.true_logprob[0]),
        )
        return {"acc": record["correct"], **self.calib_values(record)}


def load_trex(source: str = LAMA_URL, lama_path: str | None = None, **_: Any):
    """T-REx facts as a one-split dataset; ``--metadata '{"lama_path": ...}'`` overrides source."""
    return datasets.DatasetDict(
        {"test": datasets.Dataset.from_list(read_trex(lama_path or source))}
    )


def load_mini(**_: Any) -> datasets.DatasetDict:
    """The bundled mini facts (countryinfo, in the LAMA layout)."""
    from calib_tasks import task_dir

    return load_trex(str(task_dir() / "data" / "facts_mini"))
