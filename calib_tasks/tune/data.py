"""Instruction data for calib-tune: Alpaca-style examples, the prompt template, and the token
encoding that puts the loss on the response tokens only.

An example file is JSON Lines, one object per line with ``instruction`` and ``output`` (non-empty
strings) and optionally ``input`` (a string); other keys are kept as the example's ``source``
(the bundled set records the fact each pair was written from).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

IGNORE_INDEX = -100  # label of a position without loss (PyTorch's cross-entropy default)


@dataclass(frozen=True)
class Example:
    """One instruction/response pair; ``source`` holds the line's other keys."""

    instruction: str
    input: str
    output: str
    source: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PromptTemplate:
    """How an example becomes a prompt: ``with_input`` uses ``{instruction}`` and ``{input}``,
    ``without_input`` (for an empty input) uses ``{instruction}``. The response follows the
    prompt directly."""

    with_input: str
    without_input: str

    def prompt(self, example: Example) -> str:
        """The prompt of ``example`` (everything before its response)."""
        if example.input.strip():
            return self.with_input.format(instruction=example.instruction, input=example.input)
        return self.without_input.format(instruction=example.instruction)


ALPACA = PromptTemplate(
    with_input=(
        "Below is an instruction that describes a task, paired with an input that provides "
        "further context. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
    ),
    without_input=(
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
    ),
)


class DataError(ValueError):
    """An unusable example file or template file (the message names the file and line)."""


def load_template(path: Path) -> PromptTemplate:
    """A template from a YAML/JSON file with the keys ``with_input`` and ``without_input``."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise DataError(f"{path}: cannot read the template ({error})") from None
    if not isinstance(raw, dict) or set(raw) != {"with_input", "without_input"}:
        raise DataError(f"{path}: a template needs exactly the keys with_input, without_input")
    template = PromptTemplate(str(raw["with_input"]), str(raw["without_input"]))
    probe = Example("i", "x", "o")
    try:
        template.prompt(probe)
        template.prompt(Example("i", "", "o"))
    except (KeyError, IndexError, ValueError) as error:
        raise DataError(
            f"{path}: only {{instruction}} and {{input}} may be used in a template ({error})"
        ) from None
    return template


def _example(raw: Any, where: str) -> Example:
    if not isinstance(raw, dict):
        raise DataError(f"{where}: expected an object with instruction and output")
    for key in ("instruction", "output"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise DataError(f"{where}: '{key}' must be a non-empty string")
    if not isinstance(raw.get("input", ""), str):
        raise DataError(f"{where}: 'input' must be a string")
    source = {k: v for k, v in raw.items() if k not in ("instruction", "input", "output")}
    return Example(raw["instruction"], raw.get("input", ""), raw["output"], source)


def read_examples(path: Path) -> list[Example]:
    """Every example of the JSON Lines file at ``path``; ``DataError`` names the first bad line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror})") from None
    examples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        examples.append(_example(raw, f"{path}:{number}"))
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples


@dataclass(frozen=True)
class Encoded:
    """Token ids of prompt + response + end-of-sequence, and labels: ``IGNORE_INDEX`` on the
    prompt, the token ids on the response and the end-of-sequence token."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool


def encode(example: Example, tokenizer: Any, template: PromptTemplate, max_length: int) -> Encoded:
    """Encode ``example`` for causal-LM training with the loss on the response only.

    Prompt and response are tokenized separately (the tokenizer's special tokens, e.g. BOS,
    before the prompt; EOS after the response), so the boundary is exact. An example longer
    than ``max_length`` tokens (``truncated``) loses the start of its prompt, and the end of
    its response too when the response alone does not fit beside one prompt token.
    """
    prompt_ids = list(tokenizer(template.prompt(example), add_special_tokens=True)["input_ids"])
    response_ids = list(tokenizer(example.output, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        response_ids.append(tokenizer.eos_token_id)
    truncated = len(prompt_ids) + len(response_ids) > max_length
    if truncated:
        response_ids = response_ids[: max(max_length - 1, 1)]
        prompt_ids = prompt_ids[len(prompt_ids) - max(max_length - len(response_ids), 1) :]
    labels = [IGNORE_INDEX] * len(prompt_ids) + response_ids
    return Encoded(prompt_ids + response_ids, labels, truncated)


def collate(batch: Sequence[Encoded], pad_id: int) -> dict[str, Any]:
    """Right-padded tensors ``input_ids``, ``attention_mask`` and ``labels`` (padding is masked
    and carries no loss)."""
    import torch

    width = max(len(e.input_ids) for e in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, encoded in enumerate(batch):
        n = len(encoded.input_ids)
        input_ids[row, :n] = torch.tensor(encoded.input_ids)
        labels[row, :n] = torch.tensor(encoded.labels)
        attention[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
