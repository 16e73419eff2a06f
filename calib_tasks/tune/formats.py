"""The data formats calib-tune reads, from a local file or, when the source is not a file, a hub
data set (its ``train`` split; needs the hub):

- instructions: Alpaca (``instruction``, ``input``, ``output``; see ``data.read_examples``) or
  OpenAssistant oasst1 messages (``message_id``, ``parent_id``, ``role``, ``text``, ``rank``: the
  hub's flat rows, or the nested trees of the oasst export, a ``prompt`` with ``replies``). From
  oasst1 every initial prompt (a prompter message without parent) becomes one example answered
  by its top-ranked assistant reply (rank 0; an unranked only child counts); later turns are not
  used.
- preference pairs: ``chosen`` and ``rejected`` with ``prompt`` (or ``instruction`` and
  ``input``) as strings; HH-RLHF's records (no prompt, both responses are the whole dialogue:
  the prompt is their common part up to the last ``"\\n\\nAssistant:"``); UltraFeedback-binarized
  records (``chosen``/``rejected`` as message lists: the last assistant message is the response).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from calib_tasks.tune.data import DataError, Example, Preference, example_from, read_records

HH_ASSISTANT = "\n\nAssistant:"
_PAIR_KEYS = ("prompt", "instruction", "input", "chosen", "rejected")


def _records(source: str) -> list[tuple[str, Any]]:
    path = Path(source)
    if path.exists():
        return read_records(path)
    import datasets

    try:
        rows = datasets.load_dataset(source, split="train")
    except Exception as error:  # noqa: BLE001 - the hub's and datasets' errors are many
        raise DataError(f"{source}: neither a file nor a loadable hub data set ({error})") from None
    return [(f"{source}[{index}]", dict(row)) for index, row in enumerate(rows)]


def _is_oasst(raw: Any) -> bool:
    return isinstance(raw, dict) and ("message_id" in raw or "replies" in raw.get("prompt", {}))


def _flatten(tree: Mapping[str, Any], parent: str | None) -> Iterable[dict[str, Any]]:
    yield {**tree, "parent_id": parent}
    for reply in tree.get("replies") or []:
        yield from _flatten(reply, tree.get("message_id"))


def _oasst_examples(records: list[tuple[str, Any]]) -> list[Example]:
    messages: list[tuple[str, dict[str, Any]]] = []
    for where, raw in records:
        tree = raw.get("prompt") if isinstance(raw, dict) and "prompt" in raw else raw
        for message in _flatten(tree, raw.get("parent_id")) if "replies" in tree else [tree]:
            for key in ("message_id", "role", "text"):
                if not isinstance(message.get(key), str) or not message[key].strip():
                    raise DataError(f"{where}: oasst1 message needs a non-empty '{key}'")
            messages.append((where, message))
    replies: dict[str, list[dict[str, Any]]] = {}
    for _, message in messages:
        if message["role"] == "assistant" and message.get("parent_id"):
            replies.setdefault(message["parent_id"], []).append(message)
    examples = []
    for _, prompt in messages:
        if prompt["role"] != "prompter" or prompt.get("parent_id"):
            continue
        answers = replies.get(prompt["message_id"], [])
        ranked = [a for a in answers if a.get("rank") is not None]
        best = min(ranked, key=lambda a: a["rank"]) if ranked else None
        if best is None and len(answers) == 1:
            best = answers[0]
        if best is not None:
            source = {"message_id": prompt["message_id"], "lang": prompt.get("lang")}
            examples.append(Example(prompt["text"], "", best["text"], source))
    return examples


def load_instructions(source: str) -> list[Example]:
    """The instruction examples of ``source`` (a file or a hub data set): Alpaca or oasst1, told
    apart by the first record. ``DataError`` names the file and line of a bad record."""
    records = _records(source)
    if not records:
        raise DataError(f"{source}: no examples")
    if _is_oasst(records[0][1]):
        examples = _oasst_examples(records)
    else:
        examples = [example_from(raw, where) for where, raw in records]
    if not examples:
        raise DataError(f"{source}: no initial prompt with a top-ranked assistant reply")
    return examples


def _last_assistant(value: Any) -> Any:
    if isinstance(value, list):
        turns = [m for m in value if isinstance(m, dict) and m.get("role") == "assistant"]
        return turns[-1].get("content") if turns else None
    return value


def preference_from(raw: Any, where: str) -> Preference:
    """The preference record ``raw`` as a ``Preference`` (formats: module docstring);
    ``DataError`` names ``where`` when ``chosen`` or ``rejected`` is missing or empty, or both
    are the same."""
    if not isinstance(raw, dict):
        raise DataError(f"{where}: expected an object with prompt, chosen and rejected")
    chosen, rejected = _last_assistant(raw.get("chosen")), _last_assistant(raw.get("rejected"))
    for key, value in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where}: '{key}' must be a non-empty response")
    prompt = raw.get("prompt", raw.get("instruction"))
    if prompt is None:  # HH-RLHF: the dialogue up to the last assistant turn is the prompt
        cut = chosen.rfind(HH_ASSISTANT) + len(HH_ASSISTANT)
        if cut < len(HH_ASSISTANT) or rejected[:cut] != chosen[:cut]:
            raise DataError(f"{where}: no 'prompt', and chosen/rejected share no HH-RLHF dialogue")
        prompt, chosen, rejected = chosen[:cut], chosen[cut:], rejected[cut:]
        if not chosen.strip() or not rejected.strip():
            raise DataError(f"{where}: an empty final assistant response")
    if not isinstance(prompt, str) or not prompt.strip():
        raise DataError(f"{where}: 'prompt' must be a non-empty string")
    if chosen == rejected:
        raise DataError(f"{where}: 'chosen' and 'rejected' are the same response")
    source = {k: v for k, v in raw.items() if k not in _PAIR_KEYS}
    return Preference(prompt, str(raw.get("input", "")), chosen, rejected, source)


def load_preferences(source: str) -> list[Preference]:
    """The preference pairs of ``source`` (a file or a hub data set); ``DataError`` names the
    file and line of the first bad record."""
    pairs = [preference_from(raw, where) for where, raw in _records(source)]
    if not pairs:
        raise DataError(f"{source}: no preference pairs")
    return pairs
