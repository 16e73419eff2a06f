"""The second prompts of the ``ptrue`` and ``verbalized`` methods, and the reading of a verbalized
reply. A task overrides a prompt in its YAML ``metadata`` (``calib_ptrue_prompt``,
``calib_verbalized_prompt``); the README shows the defaults.

* ``ptrue`` (Kadavath et al., 2022): ``PTRUE_PROMPT`` filled with the document's question
  (the task's ``doc_to_text``) and the model's answer (the generated text, stripped), then the
  backend's ``loglikelihood`` of ``PTRUE_OPTIONS`` after it; ``P(True)`` renormalised over the
  two. Under a chat template the filled prompt is one user turn and the options follow the
  assistant header without their leading space.
* ``verbalized`` (Tian et al., 2023, two-stage): after the answer, ``VERBALIZED_PROMPT`` asks for
  a confidence; the reply is generated greedily up to a new line or "%", at most
  ``VERBALIZED_MAX_TOKENS`` tokens. Under a chat template (and on chat APIs) the answer is the
  assistant turn of the same conversation and the prompt is the next user turn; without one the
  prompt follows the answer as plain text.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping
from typing import Any

#: The question as the model saw it (the task's prompt, whose own scaffolding, "Question: ...
#: Answer:", it keeps), the answer after it, then the judgement asked for.
PTRUE_PROMPT = "{question} {answer}\nIs the answer above true or false?\nThe answer above is:"
#: The two options whose log-likelihoods ``ptrue`` compares, first the one it reports.
PTRUE_OPTIONS = (" True", " False")
VERBALIZED_PROMPT = (
    "How confident are you that your answer is correct? "
    "Reply with a number from 0 to 100.\nConfidence:"
)
#: The reply's budget: enough for "85", "0.85", "8/10" and "I am 85" (a reply also ends at a new
#: line or at "%", ``VERBALIZED_STOP``). A reply that used it all may be cut inside its number
#: (" I'm 1" of "I'm 100%" on a digit-by-digit tokenizer): its number at its end is then no
#: confidence (``parse_verbalized``'s ``cut``).
VERBALIZED_MAX_TOKENS = 6
VERBALIZED_STOP = ("\n", "%")
#: Between the answer and the verbalized prompt, without a chat template.
VERBALIZED_SEPARATOR = "\n\n"
_FIELDS = {"ptrue": {"question", "answer"}, "verbalized": set()}
_NUMERAL = r"(?:\d+(?:\.\d+)?|\.\d+)"
#: A stated number: its sign, the numeral, then ``%`` (or ``percent``) or the denominator of a
#: fraction (``8/10``, ``8 out of 10``). A numeral right after a letter, a digit or a point
#: (``GPT4``, ``v1.5``) is none.
_NUMBER = re.compile(
    rf"(?<![\w.])([-\u2212]?)({_NUMERAL})(?:\s*(%|percent\b)|\s*(?:/|\bout\s+of\b)\s*({_NUMERAL}))?",
    re.IGNORECASE,
)


def check_prompt(prompt: Any, method: str, task: str) -> str:
    """``prompt`` when it is a usable ``method`` prompt (a non-blank string whose ``{fields}``
    are exactly the method's: ``{question}`` and ``{answer}`` for ptrue, none for verbalized),
    else ``ValueError`` naming task and setting."""
    setting = f"calib_{method}_prompt"
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"{task}: {setting} must be a non-empty string, got {prompt!r}")
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(prompt) if name is not None}
    except ValueError as error:
        raise ValueError(f"{task}: {setting} is no format string ({error})") from None
    if fields != _FIELDS[method]:
        wanted = sorted(_FIELDS[method]) or "no fields (write literal braces as {{ }})"
        raise ValueError(f"{task}: {setting} has the fields {sorted(fields)}; it needs {wanted}")
    return prompt


def ptrue_probability(true_logprob: float, false_logprob: float) -> float:
    """``P(True) / (P(True) + P(False))`` from the two log-likelihoods, computed stably."""
    return 1.0 / (1.0 + math.exp(false_logprob - true_logprob))


def parse_verbalized(reply: str, cut: bool = False) -> float | None:
    """The confidence stated in ``reply``, in [0, 1], or None when it states none.

    The first number of the reply is read: with a ``%`` sign (or ``percent``), or an integer, or
    a decimal above 1, on the 0-100 scale (``"85"``, ``"85%"``, ``"72.5"`` -> 0.85, 0.85, 0.725);
    a decimal up to 1 on the 0-1 scale (``"0.85"``, ``"1.0"``); a fraction as its value
    (``"8/10"``, ``"4 out of 5"`` -> 0.8). A number beyond its scale (``"150"``, ``"12/10"``), a
    negative one (``"-5"``), or no number, is None. So is a number at the very end of a reply
    that was ``cut`` at its token budget: it may be the first digits of a larger one.
    """
    match = _NUMBER.search(reply)
    if match is None or (cut and match.end() >= len(reply.rstrip())):
        return None
    sign, numeral, percent, denominator = match.groups()
    number = float(numeral)
    if denominator is not None:
        value = number / float(denominator) if float(denominator) > 0 else math.nan
    elif percent or "." not in numeral or number > 1.0:
        value = number / 100.0
    else:
        value = number
    if sign and number != 0:
        return None
    return value if 0.0 <= value <= 1.0 else None  # also None for NaN


def ptrue_request(
    prompt: str, question: str, answer: str, chat: bool, lm: Any
) -> list[tuple[str, str]]:
    """The two ``loglikelihood`` arguments (context, option) of one answer's ``ptrue``."""
    filled = prompt.format(question=question, answer=answer.strip())
    if chat:
        context = lm.apply_chat_template([{"role": "user", "content": filled}])
        if not isinstance(context, str):  # a chat API's messages (JsonChatStr): no prompt scores
            raise TypeError(
                f"ptrue: {type(lm).__name__}'s chat template gives {type(context).__name__}, not "
                "the prompt text whose log-likelihoods ptrue needs; this backend cannot score "
                "P(True) under a chat template"
            )
        return [(context, option.lstrip()) for option in PTRUE_OPTIONS]
    return [(filled, option) for option in PTRUE_OPTIONS]


def verbalized_context(
    prompt: str, context: str, answer: str, history: list[Mapping[str, str]] | None, lm: Any
) -> str:
    """The context of one answer's verbalized question: the conversation ``history`` with the
    answer as its assistant turn (after the assistant prefix the history ends with, if any) and
    ``prompt`` as the next user turn (chat), or the original ``context``, the answer and
    ``prompt`` as plain text."""
    if history is None:
        return f"{context}{answer}{VERBALIZED_SEPARATOR}{prompt}"
    turns = [dict(message) for message in history]
    if turns and turns[-1]["role"] == "assistant":  # the task's gen_prefix
        turns[-1]["content"] += answer
    else:
        turns.append({"role": "assistant", "content": answer})
    return lm.apply_chat_template([*turns, {"role": "user", "content": prompt}])
