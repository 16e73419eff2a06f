"""calib_facts_gen: the facts of calib_facts (``calib_tasks.tasks.facts``: LAMA T-REx, the same
prompt and few-shot examples of the same relation) as short answers the model generates greedily
up to ".", "," or a new line; correct = the generated text equals the object after
normalisation (case, punctuation, articles and whitespace ignored, the YAML's exact_match);
its confidences are those of ``calib_tasks.generation``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from calib_tasks.generation.task import CalibGenerationTask
from calib_tasks.tasks.facts import check_fact


class CalibFactsGenTask(CalibGenerationTask):
    """The facts as short answers to generate (module docstring)."""

    check_doc = staticmethod(check_fact)
    fewshot_group_field = "relation"

    def record_extras(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """The fact's relation (cross-fitting folds and breakdowns group by it) and labels."""
        return {key: doc[key] for key in ("relation", "sub_label", "obj_label")}
