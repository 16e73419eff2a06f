"""calib_mmlu: MMLU calibration as one harness task over the pooled questions of all subjects.

The prompt is the harness's own MMLU prompt (``lm_eval/tasks/mmlu/default``): a subject
description line, the question, ``A.``..``D.`` options and ``Answer:``, with the first k dev
questions of the same subject as few-shot examples. The four option log-likelihoods are
renormalised with a softmax; prediction = argmax (exactly the stock task's ``acc``), confidence =
the probability of the prediction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import datasets
from lm_eval.api.instance import Instance

from calib_tasks.scoring.records import TOP_LABEL, top_label_record
from calib_tasks.tasks.base import TokenStatsTask, bundled_test_split, probability
from calib_tasks.tasks.multiple_choice import CalibMultipleChoiceTask
from calib_tasks.token_stats import TokenStats

LETTERS = ("A", "B", "C", "D")

SUBJECT_CATEGORY: dict[str, str] = {
    "abstract_algebra": "stem",
    "anatomy": "stem",
    "astronomy": "stem",
    "business_ethics": "other",
    "clinical_knowledge": "other",
    "college_biology": "stem",
    "college_chemistry": "stem",
    "college_computer_science": "stem",
    "college_mathematics": "stem",
    "college_medicine": "other",
    "college_physics": "stem",
    "computer_security": "stem",
    "conceptual_physics": "stem",
    "econometrics": "social_sciences",
    "electrical_engineering": "stem",
    "elementary_mathematics": "stem",
    "formal_logic": "humanities",
    "global_facts": "other",
    "high_school_biology": "stem",
    "high_school_chemistry": "stem",
    "high_school_computer_science": "stem",
    "high_school_european_history": "humanities",
    "high_school_geography": "social_sciences",
    "high_school_government_and_politics": "social_sciences",
    "high_school_macroeconomics": "social_sciences",
    "high_school_mathematics": "stem",
    "high_school_microeconomics": "social_sciences",
    "high_school_physics": "stem",
    "high_school_psychology": "social_sciences",
    "high_school_statistics": "stem",
    "high_school_us_history": "humanities",
    "high_school_world_history": "humanities",
    "human_aging": "other",
    "human_sexuality": "social_sciences",
    "international_law": "humanities",
    "jurisprudence": "humanities",
    "logical_fallacies": "humanities",
    "machine_learning": "stem",
    "management": "other",
    "marketing": "other",
    "medical_genetics": "other",
    "miscellaneous": "other",
    "moral_disputes": "humanities",
    "moral_scenarios": "humanities",
    "nutrition": "other",
    "philosophy": "humanities",
    "prehistory": "humanities",
    "professional_accounting": "other",
    "professional_law": "humanities",
    "professional_medicine": "other",
    "professional_psychology": "social_sciences",
    "public_relations": "social_sciences",
    "security_studies": "social_sciences",
    "sociology": "social_sciences",
    "us_foreign_policy": "social_sciences",
    "virology": "other",
    "world_religions": "humanities",
}


def check_doc(doc: Mapping[str, Any]) -> str | None:
    """None for a well-formed cais/mmlu document, else what is wrong with it."""
    missing = [k for k in ("question", "subject", "choices", "answer") if doc.get(k) is None]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    choices = doc["choices"]
    if not isinstance(choices, Sequence) or isinstance(choices, str) or len(choices) != 4:
        return f"'choices' must be a list of 4 options, got {choices!r}"
    answer = doc["answer"]
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < 4:
        return f"gold index 'answer' must be an int in 0..3, got {answer!r}"
    if doc["subject"] not in SUBJECT_CATEGORY:
        return f"unknown MMLU subject {doc['subject']!r}"
    return None


class CalibMMLUTask(CalibMultipleChoiceTask):
    """MMLU pooled over subjects, with per-subject first-k few-shot examples: the generic
    multiple-choice calibration task, its records carrying subject and category."""

    check_doc = staticmethod(check_doc)
    fewshot_group_field = "subject"

    def record_extras(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """The subject and its category, for the report's breakdowns."""
        return {"subject": doc["subject"], "category": SUBJECT_CATEGORY[doc["subject"]]}


class CalibMMLUVocabTask(TokenStatsTask, CalibMMLUTask):
    """calib_mmlu_vocab: the same prompts, confidence over the whole vocabulary.

    One ``token_stats`` request per option letter (" A".." D"; "A".."D" under a chat template, as
    the harness's multiple_choice requests) gives, at the answer position, the top-1 next-token
    probability (confidence), whether the top-1 token is the gold letter (correct), and each
    letter's own probability; their sum is the mass the model puts on the answer format at all.
    """

    record_kind = TOP_LABEL

    def construct_requests(self, doc: dict, ctx: Any, **kwargs: Any) -> list[Instance]:
        delimiter = self.answer_delimiter(kwargs.get("apply_chat_template", False))
        return [
            self.token_stats_request(doc, ctx, delimiter + letter, i, **kwargs)
            for i, letter in enumerate(LETTERS)
        ]

    def score(self, doc: dict, results: list[TokenStats]) -> dict[str, Any]:
        """The top-1 probability and correctness at the gold letter's answer position."""
        gold = int(doc["answer"])
        letter_probs = [probability(r.true_logprob[0]) for r in results]
        record = top_label_record(
            probability(results[gold].top1_logprob[0]),
            bool(results[gold].top1_is_true[0]),
            letter_probs=letter_probs,
            label=gold,
            subject=doc["subject"],
            category=SUBJECT_CATEGORY[doc["subject"]],
        )
        return {
            "acc": record["correct"],
            "option_mass": sum(letter_probs),
            **self.calib_values(record),
        }


def load_mini(**_: Any) -> datasets.DatasetDict:
    """The bundled mini MMLU (real dev questions, cais/mmlu schema) as a one-split dataset."""
    return bundled_test_split("mmlu_mini.jsonl")
