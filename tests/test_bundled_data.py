"""The bundled mini data sets (task_configs/data) parse and have their documented schema and sizes.

They are built by scripts/extract_mmlu_mini.py, scripts/extract_britannica.py and
scripts/build_countryinfo_facts.py; these tests only read the committed files.
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent.parent / "task_configs" / "data"
MMLU = DATA / "mmlu_mini.jsonl"
CLM = DATA / "clm_mini.jsonl"
FACTS = DATA / "facts_mini"


def read_jsonl(path: Path) -> list[dict]:
    """One JSON object per line; the file is UTF-8 and ends with a newline."""
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and "\r" not in text, path
    rows = [json.loads(line) for line in text.splitlines()]
    assert rows and all(isinstance(row, dict) for row in rows), path
    return rows


def mmlu_subjects() -> set[str]:
    """The 57 MMLU subject names, from the installed harness's per-subject task files."""
    spec = importlib.util.find_spec("lm_eval")
    assert spec is not None and spec.submodule_search_locations
    folder = Path(list(spec.submodule_search_locations)[0]) / "tasks" / "mmlu" / "default"
    return {p.stem.removeprefix("mmlu_") for p in folder.glob("mmlu_*.yaml")}


def test_data_folder_is_small() -> None:
    size = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    assert size < 1_000_000


def test_mmlu_mini_schema() -> None:
    docs = read_jsonl(MMLU)
    for doc in docs:
        assert list(doc) == ["question", "subject", "choices", "answer"]
        assert isinstance(doc["question"], str) and doc["question"].strip()
        assert doc["question"] == doc["question"].strip()
        choices = doc["choices"]
        assert isinstance(choices, list) and len(choices) == 4
        assert all(isinstance(c, str) and c.strip() for c in choices)
        assert type(doc["answer"]) is int and 0 <= doc["answer"] <= 3


def test_mmlu_mini_subjects_and_counts() -> None:
    docs = read_jsonl(MMLU)
    assert 250 <= len(docs) <= 285  # 282 dev questions in the source prompts, a few dropped
    subjects = [doc["subject"] for doc in docs]
    assert set(subjects) == mmlu_subjects()
    # Grouped by subject, subjects in sorted order (few-shot examples are the first k of each).
    runs = [s for i, s in enumerate(subjects) if i == 0 or s != subjects[i - 1]]
    assert runs == sorted(set(subjects))
    assert min(Counter(subjects).values()) >= 3
    assert len({(d["subject"], d["question"]) for d in docs}) == len(docs)
    assert len(set(Counter(d["answer"] for d in docs))) == 4


def test_clm_mini_documents() -> None:
    docs = read_jsonl(CLM)
    assert 20 <= len(docs) <= 40
    for doc in docs:
        assert list(doc) == ["page"]
        page = doc["page"]
        assert isinstance(page, str) and page.strip() and page == page.strip()
        assert 200 <= len(page.split()) <= 2000
        assert "\n\n\n" not in page
        for noise in ("###", "[[", "[^", "*", "\\", "||", "tif.txt"):
            assert noise not in page, noise
    assert len({doc["page"] for doc in docs}) == len(docs)


def relations() -> list[dict]:
    return read_jsonl(FACTS / "relations.jsonl")


def test_facts_relations() -> None:
    rows = relations()
    assert 5 <= len(rows) <= 8
    assert len({r["relation"] for r in rows}) == len(rows)
    for row in rows:
        assert list(row) == ["relation", "template", "label", "description", "type"]
        assert row["relation"].startswith("P") and row["relation"][1:].isdigit()
        template = row["template"]
        assert template.count("[X]") == 1 and template.count("[Y]") == 1
        assert template.split("[Y]")[0].replace("[X]", "").strip()  # a prompt before [Y]
        assert template.endswith(" .")
        assert row["label"] and row["description"]
        assert row["type"] in {"1-1", "N-1", "N-M"}
    files = {p.stem for p in (FACTS / "TREx").glob("*.jsonl")}
    assert files == {r["relation"] for r in rows}
    assert {p.name for p in FACTS.iterdir()} == {"relations.jsonl", "TREx"}


@pytest.mark.parametrize("relation", [r["relation"] for r in relations()])
def test_facts_per_relation(relation: str) -> None:
    kind = {r["relation"]: r["type"] for r in relations()}[relation]
    facts = read_jsonl(FACTS / "TREx" / f"{relation}.jsonl")
    assert len(facts) >= 100
    for fact in facts:
        assert list(fact) == ["sub_label", "obj_label", "uuid", "predicate_id"]
        assert fact["predicate_id"] == relation
        for field in ("sub_label", "obj_label"):
            label = fact[field]
            assert isinstance(label, str) and label.strip() and label == label.strip()
            assert not any(c in label for c in ",()/[]")
        assert len(fact["obj_label"].split()) <= 5
    assert len({(f["sub_label"], f["obj_label"]) for f in facts}) == len(facts)
    if kind in {"1-1", "N-1"}:  # one object per subject
        assert len({f["sub_label"] for f in facts}) == len(facts)


def test_facts_totals() -> None:
    facts = [
        fact
        for row in relations()
        for fact in read_jsonl(FACTS / "TREx" / f"{row['relation']}.jsonl")
    ]
    assert 900 <= len(facts) <= 1200
    assert len({f["uuid"] for f in facts}) == len(facts)
