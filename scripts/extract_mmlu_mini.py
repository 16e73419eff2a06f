"""Extract real MMLU dev questions from lm-eval's CoT prompts into data/mmlu_mini.jsonl.

Source: ``lm_eval/tasks/mmlu/flan_cot_fewshot/_cot_prompts.json`` of the installed lm-eval 0.4.13
(MIT). It holds, per subject, a chain-of-thought prompt built from the MMLU dev questions
(Hendrycks et al., 2021, "Measuring Massive Multitask Language Understanding", MIT licence):
blocks of ``Q: <question>\\n(A) .. (B) .. (C) .. (D) ..\\nA: <rationale> The answer is (X).``
(the options on one line or one per line).

Output: one ``cais/mmlu`` record per line, ``{"question", "subject", "choices", "answer"}``,
subjects in sorted order, the prompt's order within a subject. Items that do not parse cleanly
(not exactly four options (A)..(D), no single gold letter among them, empty text, or LaTeX whose
backslash command was eaten by a JSON escape) are dropped, and so is a repeat of an earlier question
of the same subject (it would be its own few-shot example); the script says which and why.

Usage: ``python scripts/extract_mmlu_mini.py`` (from the repository root, in the project venv).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
from pathlib import Path

LM_EVAL_VERSION = "0.4.13"
SOURCE = "tasks/mmlu/flan_cot_fewshot/_cot_prompts.json"
OUT = Path(__file__).resolve().parent.parent / "task_configs" / "data" / "mmlu_mini.jsonl"
HEADER = "The following are multiple choice questions (with answers) about {}."
OPTIONS = re.compile(r"(?:^|\s+)\(([A-Z])\) ")  # "(A) " at the start or after whitespace
ANSWER = re.compile(r"The answer is \(([A-Z])\)")
# A control character followed by the rest of a LaTeX command: "\frac" read as "\f" + "rac" etc.
ESCAPE_DAMAGE = re.compile(r"[\x0c\r\n\t](?:rac|actorial|ightarrow|ight|imes|ext)\b")


def source_path() -> Path:
    """The CoT prompt file of the installed lm_eval (checked to be version 0.4.13)."""
    version = importlib.metadata.version("lm_eval")
    if version != LM_EVAL_VERSION:
        raise SystemExit(f"need lm_eval {LM_EVAL_VERSION} for a reproducible file, found {version}")
    spec = importlib.util.find_spec("lm_eval")
    assert spec is not None and spec.submodule_search_locations
    return Path(list(spec.submodule_search_locations)[0]) / SOURCE


def parse_block(block: str, subject: str) -> dict | str:
    """One ``Q: ... A: ...`` block as a cais/mmlu record, or the reason it was dropped."""
    question_part, sep, rationale = block.partition("\nA: ")
    if not sep:
        return "no 'A:' rationale"
    question, sep, options = question_part.partition("\n(A) ")
    question, options = question.strip(), "(A) " + options
    letters = OPTIONS.findall(options) if sep else []
    if letters != ["A", "B", "C", "D"]:
        return f"options are ({')('.join(letters)}), not exactly (A)..(D)"
    choices = [c.strip() for c in OPTIONS.split(options)[2::2]]
    gold = ANSWER.findall(rationale)
    if len(gold) != 1 or gold[0] not in "ABCD":
        return f"gold letter {gold} is not exactly one of A..D"
    if not question or not all(choices):
        return "empty question or option"
    if ESCAPE_DAMAGE.search(question) or any(ESCAPE_DAMAGE.search(c) for c in choices):
        return "garbled LaTeX (escape damage) in the question text"
    answer = "ABCD".index(gold[0])
    return {"question": question, "subject": subject, "choices": choices, "answer": answer}


def main() -> None:
    """Parse every subject's prompt and write the kept questions."""
    prompts: dict[str, str] = json.loads(source_path().read_text(encoding="utf-8"))
    records: list[dict] = []
    dropped: list[str] = []
    for subject in sorted(prompts):
        header, _, body = prompts[subject].strip("\n").partition("\n\n")
        if header != HEADER.format(subject.replace("_", " ")):
            raise SystemExit(f"{subject}: unexpected header {header!r}")
        blocks = [b for b in ("\n\n" + body).split("\n\nQ: ") if b.strip()]
        for number, block in enumerate(blocks, start=1):
            parsed = parse_block(block, subject)
            if not isinstance(parsed, str) and parsed in records:
                parsed = "repeats an earlier question of the subject"
            if isinstance(parsed, str):
                dropped.append(f"{subject} #{number}: {parsed}: {block.splitlines()[0][:70]!r}")
            else:
                records.append(parsed)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8", newline="\n") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"kept {len(records)}, dropped {len(dropped)} -> {OUT}")
    for line in dropped:
        print(f"  dropped {line}")


if __name__ == "__main__":
    main()
