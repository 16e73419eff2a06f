"""Instruction data for calib-tune: Alpaca-style examples, preference pairs, the prompt template,
and the token encoding that puts the loss on the response tokens only.

An example file is Alpaca's layout, as JSON Lines or one JSON array: objects with ``instruction``
and ``output`` (non-empty strings) and optionally ``input`` (a string); other keys are kept as the
example's ``source`` (the bundled set records the fact each pair was written from). Other formats
(OpenAssistant message trees, hub data sets, preference pairs) are read by
``calib_tasks.tune.formats`` into the same types.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
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
    #: The formatted text is the user turn of the tokenizer's chat template (``--template chat``).
    chat: bool = False

    def prompt(self, example: Example) -> str:
        """The prompt of ``example`` (everything before its response) before any chat template."""
        if example.input.strip():
            return self.with_input.format(instruction=example.instruction, input=example.input)
        return self.without_input.format(instruction=example.instruction)

    def render(self, example: Example, tokenizer: Any) -> str:
        """The prompt text the model reads: ``prompt``, wrapped by the tokenizer's chat template
        as one user turn followed by the assistant header when ``chat``."""
        text = self.prompt(example)
        if not self.chat:
            return text
        messages = [{"role": "user", "content": text}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


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
#: The text as it is (e.g. HH-RLHF dialogues, which carry their own "Human:"/"Assistant:" turns).
RAW = PromptTemplate(with_input="{instruction}\n\n{input}", without_input="{instruction}")
#: One user turn of the tokenizer's own chat template.
CHAT = PromptTemplate(RAW.with_input, RAW.without_input, chat=True)
#: The templates ``--template`` names instead of a file.
TEMPLATES = {"alpaca": ALPACA, "raw": RAW, "chat": CHAT}


@dataclass(frozen=True)
class Preference:
    """One preference pair: the prompt (``instruction``/``input``, rendered by the template as
    for an ``Example``), the preferred response ``chosen`` and the dispreferred ``rejected``;
    ``source`` holds the record's other keys."""

    instruction: str
    input: str
    chosen: str
    rejected: str
    source: Mapping[str, Any] = field(default_factory=dict)


class DataError(ValueError):
    """An unusable example file or template file (the message names the file and line)."""


def check_chat_template(template: PromptTemplate, tokenizer: Any, model: str) -> None:
    """``DataError`` naming ``model`` when ``template`` is a chat template and the tokenizer
    has none."""
    if template.chat and not getattr(tokenizer, "chat_template", None):
        raise DataError(
            f"{model}: the tokenizer has no chat template (--template chat needs one; use "
            "alpaca, raw or a template file)"
        )


def load_template(path: Path) -> PromptTemplate:
    """A template from a YAML/JSON file with the keys ``with_input`` and ``without_input``."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
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


def example_from(raw: Any, where: str) -> Example:
    """The Alpaca record ``raw`` as an ``Example``; ``DataError`` names ``where`` (file and line)
    when a field is missing, empty or not a string."""
    if not isinstance(raw, dict):
        raise DataError(f"{where}: expected an object with instruction and output")
    for key in ("instruction", "output"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise DataError(f"{where}: '{key}' must be a non-empty string")
    if not isinstance(raw.get("input", ""), str):
        raise DataError(f"{where}: 'input' must be a string")
    source = {k: v for k, v in raw.items() if k not in ("instruction", "input", "output")}
    return Example(raw["instruction"], raw.get("input", ""), raw["output"], source)


def read_records(path: Path) -> list[tuple[str, Any]]:
    """(where, record) for every record of ``path``: JSON Lines (``where`` is ``path:line``), or
    one JSON array (a file starting with ``[``, as Alpaca's ``alpaca_data.json``; ``where`` is
    ``path[index]``). ``DataError`` names the file and the line that is not JSON."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path}: not UTF-8 text (at byte offset {error.start}); expected JSON Lines "
            "or a JSON array"
        ) from None
    if text.lstrip().startswith("["):
        try:
            array = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
        return [(f"{path}[{index}]", raw) for index, raw in enumerate(array)]
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((f"{path}:{number}", json.loads(line)))
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}: not valid JSON ({error.msg})") from None
    return records


def read_examples(path: Path) -> list[Example]:
    """Every Alpaca example of the file at ``path`` (``read_records``); ``DataError`` names the
    first bad line."""
    examples = [example_from(raw, where) for where, raw in read_records(path)]
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

    def row(self) -> dict[str, list[int]]:
        """The example as trl's SFT takes it pre-tokenized: ``input_ids`` and ``labels``."""
        return {"input_ids": self.input_ids, "labels": self.labels}


def encode(example: Example, tokenizer: Any, template: PromptTemplate, max_length: int) -> Encoded:
    """Encode ``example`` for causal-LM training with the loss on the response only.

    Prompt and response are tokenized separately (the tokenizer's special tokens, e.g. BOS,
    before the prompt; EOS after the response), so the boundary is exact. An example longer
    than ``max_length`` tokens (``truncated``) loses the start of its prompt, and the end of
    its response too when the response alone does not fit beside one prompt token.
    """
    prompt = template.render(example, tokenizer)  # a chat template writes its own BOS, if any
    prompt_ids = list(tokenizer(prompt, add_special_tokens=not template.chat)["input_ids"])
    response_ids = list(tokenizer(example.output, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        response_ids.append(tokenizer.eos_token_id)
    truncated = len(prompt_ids) + len(response_ids) > max_length
    if truncated:
        response_ids = response_ids[: max(max_length - 1, 1)]
        prompt_ids = prompt_ids[len(prompt_ids) - max(max_length - len(response_ids), 1) :]
    labels = [IGNORE_INDEX] * len(prompt_ids) + response_ids
    return Encoded(prompt_ids + response_ids, labels, truncated)
