"""Generative calib tasks in tests: a small local ``generate_until`` task and its wrapper, and
brute-force references of the confidence methods (``calib_tasks.generation``) computed with
torch and transformers directly, never through the package.

The references follow the contracts of ``calib_tasks.scoring.confidence_methods``: the kept
tokens of a generation are the shortest prefix of the greedy tokens whose decoded text covers
the harness's text (cut at its first stop sequence); token ``k`` ends where
``decode(tokens[: k + 1])`` ends (never decreasing); ``answer`` sums the tokens overlapping the
last occurrence of the filtered answer; ``ptrue`` scores " True" and " False" after the filled
P(True) prompt as the harness's ``loglikelihood`` splits a context and its continuation.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from support.harness import local_data

#: The stock task's two filters: the whole text, and its first number.
FILTERS = [
    {"name": "whole", "filter": [{"function": "take_first"}]},
    {
        "name": "number",
        "filter": [
            {"function": "regex", "regex_pattern": r"(\d+)"},
            {"function": "take_first"},
        ],
    },
]
PROMPT = "Q: {{question}}\nA:"


def question_text(doc: dict[str, Any]) -> str:
    """The task's ``doc_to_text`` of ``doc``, rendered without the harness."""
    return f"Q: {doc['question']}\nA:"


def write_generation_task(
    folder: Path, name: str, docs: list[dict[str, Any]], data: str | None = None, **config: Any
) -> None:
    """Write ``name``, a stock harness ``generate_until`` task on ``docs`` (``question``,
    ``answer``; written to ``folder/<data or name>.jsonl``: a new name when the documents
    change, so that no cached data set is read) with ``FILTERS`` and ``exact_match``, into
    ``folder``; ``config`` overrides its keys."""
    task = {
        "task": name,
        **local_data(folder, data or name, docs),
        "output_type": "generate_until",
        "doc_to_text": PROMPT,
        "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": ["\n"], "max_gen_toks": 8, "do_sample": False},
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
        "filter_list": FILTERS,
        "metadata": {"version": 1},
        **config,
    }
    (folder / f"{name}.yaml").write_text(json.dumps(task))


def write_generation_wrapper(folder: Path, name: str, wraps: str, **keys: Any) -> str:
    """Write ``name``, a ``CalibGenerationTask`` wrapping ``wraps`` (``keys`` beside ``wraps``,
    e.g. ``metadata``), into ``folder``; returns ``name``."""
    task = {"task": name, "wraps": wraps, **keys}
    lines = ["class: !function calib_tasks.generation.CalibGenerationTask"]
    lines += [f"{key}: {json.dumps(value)}" for key, value in task.items()]
    (folder / f"{name}.yaml").write_text("\n".join(lines) + "\n")
    return name


# ------------------------------------------------------------------------ brute force


@dataclass(frozen=True)
class GreedyAnswer:
    """One greedy generation, cut as the harness cuts it: its text, the decoded kept tokens
    (longer than the text when a stop sequence cut a token), the prompt's ids, the kept
    generated ids, each kept token's log-probability and where it ends in the text."""

    text: str
    kept_text: str
    prompt_ids: list[int]
    kept_ids: list[int]
    logprobs: list[float]
    ends: list[int]

    @property
    def seq(self) -> float:
        return math.exp(math.fsum(self.logprobs) / len(self.logprobs))

    @property
    def seq_joint(self) -> float:
        return math.exp(math.fsum(self.logprobs))

    @property
    def seq_min(self) -> float:
        return math.exp(min(self.logprobs))

    def answer(self, answer: str) -> float | None:
        """exp(sum of log-probabilities) of the kept tokens overlapping the last occurrence of
        ``answer`` in the text; None when it is empty or no span of it."""
        start = self.text.rfind(answer) if answer else -1
        if start < 0:
            return None
        stop = start + len(answer)
        total, begin = [], 0
        for logprob, end in zip(self.logprobs, self.ends, strict=True):
            if begin < stop and end > start:
                total.append(logprob)
            begin = end
        return math.exp(math.fsum(total))


def _cut(text: str, stops: list[str]) -> str:
    for stop in stops:
        if stop:
            text = text.split(stop)[0]
    return text


def greedy_answer(
    model: Any, tokenizer: Any, context: str, max_new_tokens: int, stops: list[str]
) -> GreedyAnswer:
    """Greedy generation of ``context`` alone (no batch, no padding), its text cut at the first
    of ``stops`` (special tokens such as the end of text decode to nothing), and one forward pass
    over prompt and kept tokens."""
    import torch

    prompt = tokenizer(context, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.eos_token_id,
        )
    generated = out[0, prompt.shape[1] :].tolist()

    def decode(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=True)

    text = _cut(decode(generated), stops)
    ends: list[int] = []
    for k in range(1, len(generated) + 1):
        ends.append(max(len(decode(generated[:k])), ends[-1] if ends else 0))
        if ends[-1] >= len(text):
            break
    kept = generated[: len(ends)]
    assert decode(kept).startswith(text)
    ids = torch.tensor([prompt[0].tolist() + kept])
    with torch.no_grad():
        logits = model(ids).logits[0].float()
    logsoftmax = torch.log_softmax(logits, dim=-1)
    n = prompt.shape[1]
    logprobs = [float(logsoftmax[n - 1 + i, token]) for i, token in enumerate(kept)]
    ends = [min(e, len(text)) for e in ends]
    return GreedyAnswer(text, decode(kept), prompt[0].tolist(), kept, logprobs, ends)


def continuation_tokens(
    model: Any, tokenizer: Any, context: str, continuation: str
) -> tuple[list[int], list[float]]:
    """The tokens of ``continuation`` after ``context``, split as the harness's
    ``loglikelihood`` splits them (the whole text's tokens after those of the context alone), and
    each one's log-probability, from one forward pass."""
    import torch

    whole = tokenizer(context + continuation).input_ids
    prefix = len(tokenizer(context).input_ids)
    with torch.no_grad():
        logits = model(torch.tensor([whole])).logits[0].float()
    logsoftmax = torch.log_softmax(logits, dim=-1)
    logprobs = [float(logsoftmax[i - 1, whole[i]]) for i in range(prefix, len(whole))]
    return whole[prefix:], logprobs


def continuation_logprob(model: Any, tokenizer: Any, context: str, continuation: str) -> float:
    """log P(continuation | context), as the harness's ``loglikelihood`` computes it."""
    return math.fsum(continuation_tokens(model, tokenizer, context, continuation)[1])


def ptrue(model: Any, tokenizer: Any, prompt: str) -> float:
    """P(" True") / (P(" True") + P(" False")) after ``prompt``."""
    true = continuation_logprob(model, tokenizer, prompt, " True")
    false = continuation_logprob(model, tokenizer, prompt, " False")
    return math.exp(true) / (math.exp(true) + math.exp(false))


def record_confidences(record: dict[str, Any]) -> dict[str, float | None]:
    """A logged generation record's confidence per method (its parallel ``methods`` and
    ``confidences`` lists as a mapping)."""
    return dict(zip(record["methods"], record["confidences"], strict=True))


def reference_model(model_dir: Path) -> SimpleNamespace:
    """The model of ``model_dir`` and its tokenizer loaded by transformers directly (``network``,
    ``tokenizer``), the references' side of every comparison with a backend."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    network = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    return SimpleNamespace(network=network, tokenizer=tokenizer)
