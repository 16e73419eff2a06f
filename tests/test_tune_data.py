"""calib-tune's data formats, each read from a small sample written here in that format
(Alpaca JSON, oasst1 rows and trees, preference pairs, HH-RLHF, UltraFeedback-binarized), the
bundled synthetic preference set, and bad input named by file and line before training."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from calib_tasks import task_dir
from calib_tasks.tune.data import DataError, Example, Preference
from calib_tasks.tune.formats import load_instructions, load_preferences

DATA = task_dir() / "data"


def _jsonl(path: Path, rows: list) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_alpaca_as_one_json_array(tmp_path: Path):
    path = tmp_path / "alpaca_data.json"
    path.write_text(json.dumps([
        {"instruction": "Give three tips.", "input": "", "output": "Eat, sleep, move."},
        {"instruction": "Translate.", "input": "Bonjour", "output": "Hello"},
    ], indent=4))  # fmt: skip
    assert load_instructions(str(path)) == [
        Example("Give three tips.", "", "Eat, sleep, move."),
        Example("Translate.", "Bonjour", "Hello"),
    ]


def _message(mid: str, parent: str | None, role: str, text: str, rank: int | None = None):
    return {"message_id": mid, "parent_id": parent, "role": role, "text": text, "rank": rank,
            "lang": "en"}  # fmt: skip


def test_oasst1_rows_and_trees_keep_the_top_ranked_reply_per_initial_prompt(tmp_path: Path):
    rows = [
        _message("p1", None, "prompter", "What is a star?"),
        _message("a1", "p1", "assistant", "A ball of gas.", rank=1),
        _message("a2", "p1", "assistant", "A luminous sphere of plasma.", rank=0),
        _message("p2", "a2", "prompter", "And a planet?"),  # a later turn: not an example
        _message("a3", "p2", "assistant", "A body orbiting a star.", rank=0),
        _message("p3", None, "prompter", "Unanswered?"),
        _message("p4", None, "prompter", "Only one reply?"),
        _message("a4", "p4", "assistant", "Yes, unranked.", rank=None),
    ]
    expected = [
        Example("What is a star?", "", "A luminous sphere of plasma.", {"message_id": "p1"}),
        Example("Only one reply?", "", "Yes, unranked.", {"message_id": "p4"}),
    ]
    expected = [Example(e.instruction, "", e.output, {**e.source, "lang": "en"}) for e in expected]
    assert load_instructions(_jsonl(tmp_path / "oasst1.jsonl", rows)) == expected

    def tree(mid: str) -> dict:
        node = dict(next(r for r in rows if r["message_id"] == mid))
        node.pop("parent_id")
        node["replies"] = [tree(r["message_id"]) for r in rows if r["parent_id"] == mid]
        return node

    trees = [{"message_tree_id": p, "prompt": tree(p)} for p in ("p1", "p3", "p4")]
    assert load_instructions(_jsonl(tmp_path / "trees.jsonl", trees)) == expected


def test_preference_formats(tmp_path: Path):
    plain = {"prompt": "2+2?", "chosen": "4", "rejected": "5", "id": 7}
    hh = {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Sky colour?\n\nAssistant: Blue.",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Sky colour?\n\nAssistant: Green.",
    }
    ultra = {
        "prompt": "Name a prime.",
        "chosen": [{"role": "user", "content": "Name a prime."},
                   {"role": "assistant", "content": "7"}],
        "rejected": [{"role": "user", "content": "Name a prime."},
                     {"role": "assistant", "content": "8"}],
        "score_chosen": 9.0,
    }  # fmt: skip
    pairs = load_preferences(_jsonl(tmp_path / "pairs.jsonl", [plain, hh, ultra]))
    hh_prompt = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Sky colour?\n\nAssistant:"
    assert pairs[0] == Preference("2+2?", "", "4", "5", {"id": 7})
    assert pairs[1] == Preference(hh_prompt, "", " Blue.", " Green.")
    assert pairs[2] == Preference("Name a prime.", "", "7", "8", {"score_chosen": 9.0})


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "p", "chosen": "a"}, r"pairs.jsonl:2: 'rejected' must be a non-empty response"),
        ({"prompt": "p", "chosen": " ", "rejected": "b"}, r"pairs.jsonl:2: 'chosen' must be a non"),
        ({"prompt": "p", "chosen": "a", "rejected": "a"}, r"2: 'chosen' and 'rejected' are"),
        ({"chosen": "no dialogue", "rejected": "b"}, r"pairs.jsonl:2: no 'prompt'"),
    ],
)  # fmt: skip
def test_bad_preference_records_are_named_by_line(row: dict, message: str, tmp_path: Path):
    path = _jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}, row])
    with pytest.raises(DataError, match=message):
        load_preferences(path)


def test_an_empty_response_is_named_by_line(tmp_path: Path):
    rows = [{"instruction": "a", "output": "b"}, {"instruction": "a", "input": "", "output": ""}]
    with pytest.raises(DataError, match=r"data.jsonl:2: 'output' must be a non-empty string"):
        load_instructions(_jsonl(tmp_path / "data.jsonl", rows))
    oasst = [_message("p1", None, "prompter", "q"), _message("a1", "p1", "assistant", "")]
    with pytest.raises(DataError, match=r"oasst.jsonl:2: oasst1 message needs a non-empty 'text'"):
        load_instructions(_jsonl(tmp_path / "oasst.jsonl", oasst))


def test_a_binary_file_is_named_not_a_decode_traceback(tmp_path: Path):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(b'{"prompt": "p"}\n\x89PNG\r\n\x1a\n\xff\xfe')
    with pytest.raises(DataError, match=r"pairs.jsonl: not UTF-8 text \(at byte offset 16\)"):
        load_preferences(str(path))


def test_a_missing_file_that_is_no_hub_data_set_is_named(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="no/such_set: neither a file nor a loadable hub data set"):
        load_preferences("no/such_set")


def _preference_builder():
    """``scripts/build_preferences_mini.py``, the script that writes the bundled set."""
    path = Path(__file__).parents[1] / "scripts" / "build_preferences_mini.py"
    spec = importlib.util.spec_from_file_location("build_preferences_mini", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_bundled_preference_set_is_built_from_the_tuning_facts_only():
    builder = _preference_builder()
    bundled = [json.loads(line) for line in builder.OUT.read_text(encoding="utf-8").splitlines()]
    assert bundled == builder.build_pairs()  # the file is what the builder writes
    instructions = [
        json.loads(x) for x in (DATA / "instructions_mini.jsonl").read_text().splitlines()
    ]
    assert [(p["relation"], p["sub_label"], p["chosen"]) for p in bundled] == [
        (r["relation"], r["sub_label"], r["output"]) for r in instructions
    ]  # the same (tuning) facts: the held-out countries stay out of DPO too
    true_objects: dict[tuple[str, str], set[str]] = {}
    objects: dict[str, set[str]] = {}
    for path in (DATA / "facts_mini" / "TREx").glob("*.jsonl"):
        for line in path.read_text().splitlines():
            fact = json.loads(line)
            true_objects.setdefault((fact["predicate_id"], fact["sub_label"]), set()).add(
                fact["obj_label"]
            )
            objects.setdefault(fact["predicate_id"], set()).add(fact["obj_label"])
    for pair in bundled:
        wrong = pair["rejected_label"]
        assert wrong not in true_objects[(pair["relation"], pair["sub_label"])]
        assert wrong in objects[pair["relation"]]  # a plausible object of the same relation
        assert pair["rejected"] == pair["chosen"][: -len(pair["obj_label"]) - 1] + wrong + "."
    assert (
        load_preferences(str(builder.OUT))[0].source["rejected_label"]
        == bundled[0]["rejected_label"]
    )
