"""How a multiple-choice task's confidence is read off the model: the confidence rules.

Every rule turns the backend's answer for each option into one probability per option; the
prediction is the first option of highest probability and the confidence its probability.
Each document's record keeps every computed rule's probabilities (``Rule.field``), so every
rule's numbers can be recomputed from the samples file. The rules:

* ``sum``: softmax of the options' summed log-likelihoods, the rule of the harness's ``acc``
  (record field ``probs``; metric keys without suffix: ``ece``, ``brier``, ...).
* ``norm``: softmax of the log-likelihoods divided by each option's length in characters, the
  rule of ``acc_norm`` (``probs_norm``; keys ``ece_norm``, ...).
* ``min``: softmax of each option's smallest token log-probability (the continuation-min rule
  of Oh & Hwang, 2024), from ``token_stats`` requests in place of ``loglikelihood`` ones: the
  same forward passes, one per option (``probs_min``; keys ``ece_min``, ...).
* ``letter``: each option's raw probability ``exp(log-likelihood)``, not renormalised over the
  options, for prompts whose options are answer letters: the probability the model puts on the
  letter over its whole vocabulary, HELM's rule (``probs_letter``; keys ``ece_letter``, ...).

A task computes the rules named in its ``calib_rules`` setting (task YAML ``metadata``, or the
harness's ``--metadata``; a list or a comma-separated string); ``sum`` is always computed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from calib_tasks.scoring.metadata import setting_names

#: The task setting (a key of the task's ``metadata``) naming the rules to compute.
RULES_SETTING = "calib_rules"
#: An option the ``letter`` rule accepts: one letter or digit, optionally in parentheses.
_LETTER_OPTION = re.compile(r"\(?[A-Za-z0-9]\)?")


@dataclass(frozen=True)
class OptionScores:
    """What the backend returned for one document's options: the summed log-likelihoods, the
    options' lengths in characters and, from ``token_stats`` requests, each option's smallest
    token log-probability (None otherwise)."""

    loglikelihoods: Sequence[float]
    lengths: Sequence[float] = ()
    min_token_logprobs: Sequence[float] | None = None


def _softmax(scores: Sequence[float]) -> list[float]:
    x = np.asarray(scores, dtype=np.float64)
    e = np.exp(x - x.max())
    return (e / e.sum()).tolist()


def _summed(scores: OptionScores) -> Sequence[float]:
    return scores.loglikelihoods


def _per_character(scores: OptionScores) -> Sequence[float]:
    if len(scores.lengths) != len(scores.loglikelihoods):
        raise ValueError("the norm rule needs every option's length")
    lls = np.asarray(scores.loglikelihoods, dtype=np.float64)
    return lls / np.asarray(scores.lengths, dtype=np.float64)


def _smallest_token(scores: OptionScores) -> Sequence[float]:
    if scores.min_token_logprobs is None:
        raise ValueError("the min rule needs per-token scores (token_stats requests)")
    return scores.min_token_logprobs


@dataclass(frozen=True)
class Rule:
    """A confidence rule: its name, the record field of its option probabilities, the suffix of
    its metric keys, each option's score (a log-probability) from the backend's answer, whether
    the probabilities are the scores' softmax over the options (``normalised``, summing to 1)
    or each score's own probability ``exp(score)``, and whether it needs per-token scores
    (``token_stats`` requests)."""

    name: str
    field: str
    suffix: str
    scores: Callable[[OptionScores], Sequence[float]]
    normalised: bool
    needs_token_stats: bool
    description: str

    def key(self, metric: str) -> str:
        """The results key of ``metric`` under this rule (``ece`` -> ``ece_norm``)."""
        return metric + self.suffix

    def probabilities(self, scores: OptionScores) -> list[float]:
        """One document's option probabilities under this rule."""
        option_scores = self.scores(scores)
        if self.normalised:
            return _softmax(option_scores)
        return np.exp(np.asarray(option_scores, dtype=np.float64)).tolist()


SUM = Rule(
    "sum", "probs", "", _summed, True, False, "softmax of the summed log-likelihoods (acc's rule)"
)
RULES: tuple[Rule, ...] = (
    SUM,
    Rule(
        "norm",
        "probs_norm",
        "_norm",
        _per_character,
        True,
        False,
        "softmax of the log-likelihoods per character (acc_norm's rule)",
    ),
    Rule(
        "min",
        "probs_min",
        "_min",
        _smallest_token,
        True,
        True,
        "softmax of each option's smallest token log-probability (continuation-min)",
    ),
    Rule(
        "letter",
        "probs_letter",
        "_letter",
        _summed,
        False,
        False,
        "raw probability of the answer letter over the whole vocabulary (HELM's rule)",
    ),
)
DEFAULT_RULES: tuple[str, ...] = ("sum", "norm")
_BY_NAME = {rule.name: rule for rule in RULES}


def rules_setting(metadata: Mapping[str, Any] | None, task: str) -> tuple[Rule, ...]:
    """The rules a task computes, from its ``metadata``'s ``calib_rules`` (``DEFAULT_RULES``
    when absent), ``sum`` first and always; an unknown name is an error naming it and the task."""
    names = setting_names(metadata, RULES_SETTING, DEFAULT_RULES, task)
    unknown = [n for n in names if n not in _BY_NAME]
    if unknown:
        raise ValueError(
            f"{task}: unknown confidence rule(s) {unknown} in {RULES_SETTING}; the rules are "
            f"{[rule.name for rule in RULES]}"
        )
    return tuple(rule for rule in RULES if rule is SUM or rule.name in names)


def letter_option_problem(choices: Sequence[str]) -> str | None:
    """None when every option is an answer letter (``A``, ``(b)``, ``3``), else what is not."""
    others = [c for c in choices if not _LETTER_OPTION.fullmatch(c.strip())]
    if others:
        return f"the letter rule needs answer-letter options, got {others[:3]!r}"
    return None


def rule_named(name: str) -> Rule:
    """The rule called ``name``."""
    return _BY_NAME[name]
