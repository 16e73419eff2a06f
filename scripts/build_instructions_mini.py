"""Build task_configs/data/instructions_mini.jsonl: a small synthetic instruction set (Alpaca
layout: instruction, input, output) from the bundled country facts (task_configs/data/facts_mini,
LAMA T-REx layout), for calib-tune.

Each fact of a *tuning* country becomes one instruction/answer pair written from a fixed
phrasing of its relation ("What is the capital of France?" -> "The capital of France is
Paris."); the phrasing (2-3 per relation, some with the question in ``input``) is picked by a
hash of the subject, so the file is deterministic. Synthetic and low in diversity by design:
five relations, a dozen phrasings, one answer pattern per relation.

Hold-out: countries are split by a hash of their name; only the tuning half's facts are used,
in every relation (for "capital of" the country is the object: "Paris is the capital of
France" is a fact about France). The other half's facts are never seen in tuning, so the
evaluation on calib_facts_mini can be read on held-out facts alone. Each line keeps its source
fact (``relation``, ``sub_label``, ``obj_label``) so that tools can tell seen facts apart.

Usage: ``python scripts/build_instructions_mini.py`` (no network).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FACTS = ROOT / "task_configs" / "data" / "facts_mini"
OUT = ROOT / "task_configs" / "data" / "instructions_mini.jsonl"
TUNING_SHARE = 0.5
# relation -> phrasings (instruction, input, output); {X} subject, {Y} object
PHRASINGS: dict[str, list[tuple[str, str, str]]] = {
    "P36": [
        ("What is the capital of {X}?", "", "The capital of {X} is {Y}."),
        ("Name the capital city of {X}.", "", "The capital of {X} is {Y}."),
        (
            "Answer the question in one sentence.",
            "What is the capital of {X}?",
            "The capital of {X} is {Y}.",
        ),
    ],
    "P1376": [
        ("Which country is {X} the capital of?", "", "{X} is the capital of {Y}."),
        (
            "Answer the question in one sentence.",
            "{X} is a capital city. Of which country?",
            "{X} is the capital of {Y}.",
        ),
    ],
    "P30": [
        ("In which region of the world is {X} located?", "", "{X} is located in {Y}."),
        (
            "Answer the question in one sentence.",
            "Where in the world is {X}?",
            "{X} is located in {Y}.",
        ),
    ],
    "P37": [
        ("What is the official language of {X}?", "", "The official language of {X} is {Y}."),
        ("Which language is official in {X}?", "", "The official language of {X} is {Y}."),
        (
            "Answer the question in one sentence.",
            "What language is official in {X}?",
            "The official language of {X} is {Y}.",
        ),
    ],
    "P47": [
        ("Name a country that shares a border with {X}.", "", "{X} shares border with {Y}."),
        (
            "Answer the question in one sentence.",
            "Which country is a neighbour of {X}?",
            "{X} shares border with {Y}.",
        ),
    ],
}


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def is_tuning_country(country: str) -> bool:
    """Whether the country's facts go into the tuning set (a fixed hash split)."""
    return _hash(country) % 1000 < TUNING_SHARE * 1000


def country_of(relation: str, fact: dict[str, str]) -> str:
    """The country a fact is about: the object of "capital of", else the subject."""
    return fact["obj_label"] if relation == "P1376" else fact["sub_label"]


def instruction_pairs() -> list[dict[str, str]]:
    """The tuning pairs, in the order of relations.jsonl and of each relation's file."""
    relations = [
        json.loads(line)["relation"]
        for line in (FACTS / "relations.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    pairs = []
    for relation in relations:
        phrasings = PHRASINGS[relation]
        path = FACTS / "TREx" / f"{relation}.jsonl"
        for line in path.read_text(encoding="utf-8").splitlines():
            fact = json.loads(line)
            if not is_tuning_country(country_of(relation, fact)):
                continue
            subject, obj = fact["sub_label"], fact["obj_label"]
            instruction, input_, output = phrasings[_hash(relation + subject) % len(phrasings)]
            pairs.append(
                {
                    "instruction": instruction.format(X=subject, Y=obj),
                    "input": input_.format(X=subject, Y=obj),
                    "output": output.format(X=subject, Y=obj),
                    "relation": relation,
                    "sub_label": subject,
                    "obj_label": obj,
                }
            )
    return pairs


def main() -> None:
    """Write the instruction set and say how many pairs and countries it holds."""
    pairs = instruction_pairs()
    OUT.write_text(
        "".join(json.dumps(pair, ensure_ascii=False) + "\n" for pair in pairs), encoding="utf-8"
    )
    countries = {country_of(p["relation"], p) for p in pairs}
    print(f"{OUT}: {len(pairs)} pairs about {len(countries)} tuning countries")


if __name__ == "__main__":
    main()
