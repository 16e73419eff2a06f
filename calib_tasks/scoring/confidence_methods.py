"""The confidence methods of a generated answer: how sure a model is of the text it generated.

A generative task (``calib_tasks.generation``) scores one generated answer per document, right or
wrong by one of the task's own metrics, and attaches a confidence to it under every method of
its ``calib_confidence`` setting. Every method scores the same answer, so accuracy never depends
on the method; each is reported under keys of its own (``ece_seq``, ``auroc_ptrue``, ...), as
the confidence rules of multiple-choice tasks are.

With ``p_1 .. p_n`` the probabilities of the generated tokens (the kept text, cut at its stop
sequence, under the model's own distribution):

* ``seq``: ``exp(mean_i log p_i)``, the length-normalised sequence probability;
* ``seq_joint``: ``exp(sum_i log p_i)``, the probability of the whole text;
* ``seq_min``: ``min_i p_i``, the least probable token;
* ``answer``: ``exp(sum log p_i)`` over the tokens of the extracted answer alone (the filter's
  output at its last occurrence in the text); none when the answer is no span of the text;
* ``ptrue``: ``P(True) / (P(True) + P(False))`` of a second prompt that shows the question and
  the model's own answer (Kadavath et al., 2022);
* ``verbalized``: the number the model states when asked how confident it is (Tian et al.,
  2023); none when its reply holds no number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from calib_tasks.scoring.metadata import setting_names

CONFIDENCE_SETTING = "calib_confidence"
#: The other settings of a generative task (read by ``calib_tasks.generation``): which of its
#: metrics makes an answer right, and the prompts of ``ptrue`` and ``verbalized``.
CORRECT_SETTING = "calib_correct"
PTRUE_PROMPT_SETTING = "calib_ptrue_prompt"
VERBALIZED_PROMPT_SETTING = "calib_verbalized_prompt"
GENERATION_SETTINGS = (
    CONFIDENCE_SETTING,
    CORRECT_SETTING,
    PTRUE_PROMPT_SETTING,
    VERBALIZED_PROMPT_SETTING,
)

#: What a method needs from the backend: per-token log-probabilities of the generated text,
#: ``loglikelihood`` of a second prompt, or a second generation.
TOKEN_LOGPROBS = "token_logprobs"
LOGLIKELIHOOD = "loglikelihood"
GENERATION = "generation"


@dataclass(frozen=True)
class Method:
    """One confidence method: its name, the suffix of its keys, what it needs from the backend
    and what it computes."""

    name: str
    needs: str
    description: str

    def key(self, metric: str) -> str:
        """The results key of ``metric`` under this method (``ece`` -> ``ece_seq``)."""
        return f"{metric}_{self.name}"


SEQ = Method("seq", TOKEN_LOGPROBS, "exp(mean token log-probability) of the generated text")
SEQ_JOINT = Method("seq_joint", TOKEN_LOGPROBS, "exp(sum of token log-probabilities)")
SEQ_MIN = Method("seq_min", TOKEN_LOGPROBS, "probability of the least probable generated token")
ANSWER = Method(
    "answer", TOKEN_LOGPROBS, "probability of the extracted answer's tokens in the generated text"
)
PTRUE = Method("ptrue", LOGLIKELIHOOD, "P(True) of a second prompt judging the answer")
VERBALIZED = Method("verbalized", GENERATION, "the confidence the model states when asked")
METHODS: tuple[Method, ...] = (SEQ, SEQ_JOINT, SEQ_MIN, ANSWER, PTRUE, VERBALIZED)
DEFAULT_METHODS: tuple[str, ...] = ("seq",)
_BY_NAME = {method.name: method for method in METHODS}


def methods_setting(metadata: Mapping[str, Any] | None, task: str) -> tuple[Method, ...]:
    """The methods of a task's ``calib_confidence`` (``DEFAULT_METHODS`` when absent), in the
    order written; an unknown or repeated name is an error naming it and the task."""
    names = setting_names(metadata, CONFIDENCE_SETTING, DEFAULT_METHODS, task)
    unknown = [n for n in names if n not in _BY_NAME]
    if unknown or not names:
        raise ValueError(
            f"{task}: unknown confidence method(s) {unknown} in {CONFIDENCE_SETTING}; the "
            f"methods are {[m.name for m in METHODS]}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"{task}: {CONFIDENCE_SETTING} names a method twice: {names}")
    return tuple(_BY_NAME[n] for n in names)


def method_named(name: str) -> Method:
    """The method called ``name``."""
    return _BY_NAME[name]
