"""calib_facts end to end on the tiny model, and the LAMA layout loader."""

from __future__ import annotations

import functools
import http.server
import json
import threading
import zipfile

import lm_eval
import numpy as np
import pytest
from lm_eval.api.instance import Instance
from support.harness import write_task

import calib_metrics as cm
from calib_tasks import task_dir
from calib_tasks.tasks.lama import read_trex

RELATIONS = [
    {"relation": "P19", "template": "[X] was born in [Y] ."},
    {"relation": "P36", "template": "The capital of [X] is [Y] ."},
    {"relation": "P999", "template": "[X] has no facts [Y] ."},
]
FACTS = {
    "P19": [
        {"sub_label": "Dante", "obj_label": "Florence", "uuid": "a"},
        {"sub_label": "Alice", "obj_label": "London", "uuid": "b"},
    ],
    "P36": [{"sub_label": "France", "obj_label": "Paris", "uuid": "c"}],
}


def _write_layout(root):
    (root / "TREx").mkdir(parents=True)
    (root / "relations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RELATIONS))
    for relation, facts in FACTS.items():
        lines = "".join(json.dumps({**f, "predicate_id": relation}) + "\n" for f in facts)
        (root / "TREx" / f"{relation}.jsonl").write_text(lines)


def _zip_layout(folder, archive):
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*.jsonl")):
            zf.write(path, "data/" + path.relative_to(folder).as_posix())


def _expected():
    return [
        ("P19", "[X] was born in [Y] .", "Dante", "Florence"),
        ("P19", "[X] was born in [Y] .", "Alice", "London"),
        ("P36", "The capital of [X] is [Y] .", "France", "Paris"),
    ]


def _as_tuples(facts):
    return [(f["relation"], f["template"], f["sub_label"], f["obj_label"]) for f in facts]


def test_lama_layout_from_folder_zip_and_cached_url(tmp_path, monkeypatch):
    folder = tmp_path / "lama"
    _write_layout(folder)
    archive = tmp_path / "served" / "data.zip"
    archive.parent.mkdir()
    _zip_layout(folder, archive)
    assert _as_tuples(read_trex(folder)) == _expected()
    assert _as_tuples(read_trex(archive)) == _expected()

    monkeypatch.setenv("LM_EVAL_CALIBRATION_CACHE", str(tmp_path / "cache"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(archive.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/data.zip"
    try:
        assert _as_tuples(read_trex(url)) == _expected()
    finally:
        server.shutdown()
        server.server_close()
    assert (tmp_path / "cache" / "data.zip").exists()
    assert _as_tuples(read_trex(url)) == _expected()  # from the cache: the server is gone


def test_lama_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_trex(tmp_path / "nowhere")
    (tmp_path / "TREx").mkdir()
    (tmp_path / "TREx" / "P19.jsonl").write_text('{"sub_label": "a"}\n')
    with pytest.raises(ValueError, match="no relations.jsonl"):
        read_trex(tmp_path)
    (tmp_path / "relations.jsonl").write_text('{"relation": "P36", "template": "[X] [Y]"}\n')
    with pytest.raises(ValueError, match="relation P19 has no template"):
        read_trex(tmp_path)
    (tmp_path / "relations.jsonl").write_text(
        '{"relation": "P19", "template": "[X] [Y]"}\nnot json\n'
    )
    with pytest.raises(ValueError, match=r"relations.jsonl:2: not valid JSON"):
        read_trex(tmp_path)


def test_correctness_agrees_with_greedy_generation(tiny_long_lm, task_manager):
    out = lm_eval.simple_evaluate(
        model=tiny_long_lm,
        tasks=["calib_facts_mini"],
        task_manager=task_manager,
        limit=40,
        log_samples=True,
    )
    samples = out["samples"]["calib_facts_mini"]
    assert len(samples) == 40
    requests = [
        Instance(
            "generate_until",
            s["doc"],
            (s["arguments"][0][0], {"until": [], "max_gen_toks": 1, "do_sample": False}),
            0,
        )
        for s in samples
    ]
    generated = tiny_long_lm.generate_until(requests)
    tokenizer = tiny_long_lm.tokenizer
    for sample, text in zip(samples, generated, strict=True):
        context = sample["arguments"][0][0]
        whole = tokenizer.encode(context + " " + sample["doc"]["obj_label"])
        first_object_token = whole[len(tokenizer.encode(context))]
        greedy_is_object = text == tokenizer.decode([first_object_token])
        assert bool(sample["acc"]) == greedy_is_object
    records = [s["ece"] for s in samples]
    conf = np.array([r["confidence"] for r in records])
    correct = np.array([r["correct"] for r in records])
    metrics = out["results"]["calib_facts_mini"]
    assert metrics["ece,none"] == cm.ece(conf, correct)
    assert metrics["auroc,none"] == cm.auroc(conf, correct)
    assert {r["relation"] for r in records} <= {
        f["relation"] for f in read_trex(task_dir() / "data" / "facts_mini")
    }


def test_few_shot_uses_other_facts_of_the_same_relation(tiny_long_lm, task_manager):
    out = lm_eval.simple_evaluate(
        model=tiny_long_lm,
        tasks=["calib_facts_mini"],
        task_manager=task_manager,
        num_fewshot=2,
        limit=3,
        log_samples=True,
    )
    for sample in out["samples"]["calib_facts_mini"]:
        context = sample["arguments"][0][0]
        lines = context.split("\n")
        assert len(lines) == 3
        template_head = sample["doc"]["template"].split("[X]")[0]
        assert all(line.startswith(template_head) for line in lines)
        assert sample["doc"]["sub_label"] not in lines[0] + lines[1]


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ({"template": "[X] was born somewhere ."}, r"template must contain \[X\] and \[Y\]"),
        ({"obj_label": ""}, r"obj_label is missing or empty"),
        ({"template": "[Y] is where [X] was born ."}, r"template .* leaves no prompt before \[Y\]"),
    ],
)
def test_bad_facts_fail_naming_task_and_document(tmp_path, broken, message):
    facts = [
        {
            "relation": "P19",
            "template": "[X] was born in [Y] .",
            "sub_label": "A",
            "obj_label": "B",
            "uuid": str(i),
        }
        for i in range(3)
    ]
    facts[1] = {**facts[1], **broken}
    manager = write_task(tmp_path, "_calib_facts_template_yaml", "calib_facts_broken", facts)
    with pytest.raises(
        ValueError, match=rf"calib_facts_broken: document 1 of split 'test' is invalid: {message}"
    ):
        lm_eval.simple_evaluate(model="dummy", tasks=["calib_facts_broken"], task_manager=manager)
