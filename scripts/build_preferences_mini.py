"""The bundled synthetic preference set ``task_configs/data/preferences_mini.jsonl``, written
from the bundled synthetic instruction set (``instructions_mini.jsonl``, the tuning half of the
country facts; the held-out countries stay out of it too) and the bundled facts
(``facts_mini``).

Each instruction example becomes one pair: ``chosen`` is its answer (the true object), and
``rejected`` the same sentence with the object replaced by a plausible wrong one: another
object of the same relation that is not a true object of that subject (a capital for a
capital, a language for a language), picked by a hash of the fact so the file is deterministic.
Synthetic by design; no human preference went into it.

Usage: ``python scripts/build_preferences_mini.py`` rewrites the file (no network).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from calib_tasks import task_dir

INSTRUCTIONS = task_dir() / "data" / "instructions_mini.jsonl"
FACTS = task_dir() / "data" / "facts_mini" / "TREx"
OUT = task_dir() / "data" / "preferences_mini.jsonl"


def _wrong_object(fact: dict[str, Any], objects: list[str], true: set[str]) -> str:
    candidates = [o for o in objects if o not in true]
    key = f"{fact['relation']}|{fact['sub_label']}|{fact['obj_label']}".encode()
    return candidates[int(hashlib.sha256(key).hexdigest(), 16) % len(candidates)]


def build_pairs(instructions: Path = INSTRUCTIONS, facts: Path = FACTS) -> list[dict[str, Any]]:
    """One preference record per line of ``instructions`` (see the module docstring), with the
    line's fact and the wrong object (``rejected_label``) kept as its source."""
    objects: dict[str, set[str]] = {}
    true: dict[tuple[str, str], set[str]] = {}
    for path in sorted(facts.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            fact = json.loads(line)
            objects.setdefault(fact["predicate_id"], set()).add(fact["obj_label"])
            true.setdefault((fact["predicate_id"], fact["sub_label"]), set()).add(fact["obj_label"])
    pairs = []
    for line in instructions.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        relation, subject, obj = row["relation"], row["sub_label"], row["obj_label"]
        wrong = _wrong_object(row, sorted(objects[relation]), true[(relation, subject)])
        head, found, tail = row["output"].rpartition(obj)  # the object ends every answer
        if not found:
            raise ValueError(f"{instructions}: the answer {row['output']!r} does not name {obj!r}")
        pairs.append(
            {
                "instruction": row["instruction"],
                "input": row["input"],
                "chosen": row["output"],
                "rejected": head + wrong + tail,
                "relation": relation,
                "sub_label": subject,
                "obj_label": obj,
                "rejected_label": wrong,
            }
        )
    return pairs


def main() -> None:
    """Rewrite ``preferences_mini.jsonl``."""
    lines = [json.dumps(pair, ensure_ascii=False) + "\n" for pair in build_pairs()]
    OUT.write_text("".join(lines), encoding="utf-8")
    print(f"{OUT}: {len(lines)} pairs")


if __name__ == "__main__":
    main()
