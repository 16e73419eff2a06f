"""calib-tune on a tiny GPT-2: the response-only label mask (through trl's collator), the
learning-rate schedule, reproducible training, and full fine-tuning vs LoRA end to end through
the harness. DPO, resumption and the data formats: test_tune_trl.py, test_tune_data.py."""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support.tiny_model import build_tiny_model

import calib_metrics as cm
from calib_tasks import task_dir
from calib_tasks.command_line.conventions import option_values
from calib_tasks.render.text import binning_text
from calib_tasks.report.entries import ReportOptions
from calib_tasks.tune.base_model import BaseModel
from calib_tasks.tune.cli import main as calib_tune
from calib_tasks.tune.cli import parser
from calib_tasks.tune.compare import Curves, comparison_markdown, held_out_numbers, seen_facts
from calib_tasks.tune.data import (
    ALPACA,
    IGNORE_INDEX,
    DataError,
    Example,
    encode,
    load_template,
    read_examples,
)
from calib_tasks.tune.train import LEARNING_RATES, TrainConfig, train

BUNDLED = task_dir() / "data" / "instructions_mini.jsonl"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 whose window holds a whole Alpaca prompt and response."""
    return build_tiny_model(tmp_path_factory.mktemp("tune_model") / "tiny", n_positions=256)


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def test_loss_is_on_the_response_tokens_only(tokenizer):
    example = Example("What is the capital of France?", "", "The capital of France is Paris.")
    encoded = encode(example, tokenizer, ALPACA, max_length=256)
    prompt_ids = tokenizer(ALPACA.prompt(example))["input_ids"]
    n_prompt = len(prompt_ids)
    assert encoded.input_ids[:n_prompt] == prompt_ids
    assert encoded.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    response = encoded.labels[n_prompt:]
    assert IGNORE_INDEX not in response
    assert response == encoded.input_ids[n_prompt:]
    assert response[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(response[:-1]) == example.output
    assert ALPACA.prompt(example).endswith("### Response:\n")
    assert "### Input:\nx" in ALPACA.prompt(Example("i", "x", "o"))

    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    short = encode(Example("i", "", "ok"), tokenizer, ALPACA, max_length=256)
    collate = DataCollatorForLanguageModeling(pad_token_id=0)  # what SFTTrainer batches with
    batch = collate([{"input_ids": e.input_ids, "labels": e.labels} for e in (encoded, short)])
    width = len(encoded.input_ids)
    assert batch["labels"].shape == (2, width)
    pad = slice(len(short.input_ids), width)
    assert (batch["labels"][1, pad] == IGNORE_INDEX).all()
    assert (batch["attention_mask"][1, pad] == 0).all()
    assert batch["labels"][0].tolist() == encoded.labels


def test_long_examples_lose_the_start_of_the_prompt(tokenizer):
    example = Example("word " * 100, "", "The capital of France is Paris.")
    full = encode(example, tokenizer, ALPACA, max_length=10_000)
    cut = encode(example, tokenizer, ALPACA, max_length=40)
    assert cut.truncated and not full.truncated
    assert len(cut.input_ids) == 40
    assert cut.input_ids == full.input_ids[-40:] and cut.labels == full.labels[-40:]


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_learning_rate_schedules(schedule: str, model_dir: Path, tmp_path: Path):
    examples = read_examples(BUNDLED)[:10]
    config = TrainConfig(
        method="lora", epochs=1, batch_size=1, learning_rate=1e-3, warmup_ratio=0.2,
        schedule=schedule, lora_target_modules=("c_attn",),
    )  # fmt: skip
    train(BaseModel(str(model_dir)), examples, ALPACA, config, tmp_path, io.StringIO())
    log = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    rates = [e["learning_rate"] / 1e-3 for e in log]  # the rate each step was taken with
    assert rates[:3] == pytest.approx([0.0, 0.5, 1.0])  # warmup over 2 of the 10 steps
    progress = [(s - 2) / 8 for s in range(2, 10)]
    decay = [1 - x if schedule == "linear" else 0.5 * (1 + math.cos(math.pi * x)) for x in progress]
    assert rates[2:] == pytest.approx(decay)


def test_bad_data_and_templates_are_named(tmp_path: Path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "", "output": "b"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: 'instruction' must be a non-empty string"):
        read_examples(bad)
    template = tmp_path / "t.yaml"
    template.write_text("with_input: '{instruction} {nope}'\nwithout_input: '{instruction}'\n")
    with pytest.raises(DataError, match="only {instruction} and {input}"):
        load_template(template)
    template.write_text(
        'with_input: "Q: {instruction} {input}\\nA:"\nwithout_input: "Q: {instruction}\\nA:"\n'
    )
    assert load_template(template).prompt(Example("hi", "", "x")) == "Q: hi\nA:"
    examples = read_examples(BUNDLED)
    assert len(examples) > 300 and examples[0].source["relation"] == "P36"


def test_without_trl_calib_tune_names_the_tune_extra(monkeypatch, capsys, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "trl", None)  # what `import trl` meets when it is absent
    assert calib_tune(["--model", "any", "--out", str(tmp_path / "out")]) == 2
    assert '"tune" extra' in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    (path,) = folder.glob("*.safetensors")
    return load_file(path)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_same_seed_same_weights(method: str, model_dir: Path, tmp_path: Path):
    examples = read_examples(BUNDLED)[:6]
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        config = TrainConfig(
            method=method, epochs=1, batch_size=2, learning_rate=1e-3, seed=seed,
            lora_target_modules=("c_attn",),
        )  # fmt: skip
        (checkpoint,) = train(
            BaseModel(str(model_dir)), examples, ALPACA, config, tmp_path / name, io.StringIO()
        )
        runs[name] = _weights(checkpoint)
    assert runs["a"].keys() == runs["b"].keys()
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not all(torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


def test_a_half_precision_model_is_trained_in_float32_and_a_rerun_reuses_it(
    model_dir: Path, tmp_path: Path
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    half = tmp_path / "half"
    AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float16).save_pretrained(half)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(half)
    examples = read_examples(BUNDLED)[:4]
    config = TrainConfig(
        method="full", epochs=1, batch_size=2, learning_rate=1e-3,
        lora_target_modules=("c_attn",),  # a tuple, stored as a JSON list in the run record
    )  # fmt: skip
    first = io.StringIO()
    (checkpoint,) = train(BaseModel(str(half)), examples, ALPACA, config, tmp_path / "run", first)
    assert {t.dtype for t in _weights(checkpoint).values()} == {torch.float32}
    saved_at = next(checkpoint.glob("*.safetensors")).stat().st_mtime_ns
    again = io.StringIO()
    train(BaseModel(str(half)), examples, ALPACA, config, tmp_path / "run", again)
    assert "reusing the checkpoints" in again.getvalue()
    assert next(checkpoint.glob("*.safetensors")).stat().st_mtime_ns == saved_at


def test_full_vs_lora_end_to_end(model_dir: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # tuning facts about the first capitals of "capital of" (P1376), the first facts evaluated
    rows = [json.loads(line) for line in BUNDLED.read_text().splitlines()]
    data = tmp_path / "data.jsonl"
    capitals = [r for r in rows if r["relation"] == "P1376"][:12]
    data.write_text("".join(json.dumps(r) + "\n" for r in capitals))
    out = tmp_path / "run"
    argv = [
        "--model", str(model_dir), "--data", str(data), "--out", str(out), "--epochs", "2",
        "--batch-size", "8", "--max-steps", "3", "--lora-target-modules", "c_attn",
        "--tasks", "calib_facts_mini,calib_mmlu_mini", "--num-fewshot", "0",
        "--limit", "calib_facts_mini=24,calib_mmlu_mini=4",
    ]  # fmt: skip
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = calib_tune(argv)
    assert code == 0, printed.getvalue()

    for method in ("full", "lora"):  # 12 examples, batch 8: 2 steps per epoch, 3 in all
        log = [json.loads(x) for x in (out / method / "train_log.jsonl").read_text().splitlines()]
        assert [e["step"] for e in log] == [1, 2, 3]
        for epoch in (1, 2):
            assert (out / method / f"epoch{epoch}").is_dir()
    assert (out / "full" / "epoch2" / "config.json").exists()
    assert (out / "full" / "epoch2" / "tokenizer.json").exists()
    assert (out / "lora" / "epoch2" / "adapter_config.json").exists()

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        before = base(ids).logits
        tuned = PeftModel.from_pretrained(base, out / "lora" / "epoch2")(ids).logits
    assert not torch.equal(before, tuned)

    points = sorted(p.name for p in (out / "eval" / "points").iterdir())
    assert points == ["base", "full-epoch1", "full-epoch2", "lora-epoch1", "lora-epoch2"]
    lora_record = json.loads((out / "eval" / "points" / "lora-epoch1" / "point.json").read_text())
    assert lora_record["evaluation"]["model_args"] == {
        "pretrained": str(model_dir),
        "peft": str(out / "lora" / "epoch1"),
        "dtype": "float32",
    }
    table = (out / "comparison.md").read_text()
    assert "## calib_facts_mini, held-out facts" in table
    assert "| epoch | full fine-tuning ECE [95% CI] |" in table and "| LoRA ECE [95% CI] |" in table
    for epoch in (0, 1, 2):
        assert f"\n| {epoch} | " in table
    assert (out / "ece_vs_epoch.png").stat().st_size > 10_000
    assert (out / "eval" / "report" / "summary.md").exists()


def test_held_out_numbers_leave_out_the_tuning_facts(tmp_path: Path):
    from calib_tasks.report.entries import Entry
    from calib_tasks.scoring.records import Pool, parse_record

    examples = [Example("q", "", "a", {"relation": "P36", "sub_label": "France"})]
    records = [
        {"confidence": 0.9, "correct": 1, "relation": "P36", "sub_label": "France"},
        {"confidence": 0.6, "correct": 0, "relation": "P36", "sub_label": "Spain"},
        {"confidence": 0.2, "correct": 0, "relation": "P36", "sub_label": "Italy"},
    ]
    pool = Pool([parse_record(r) for r in records])
    entry = Entry(0, None, "x", "calib_facts_mini", None, pool, "samples")  # type: ignore[arg-type]
    held = held_out_numbers(entry, seen_facts(examples), ReportOptions())
    assert held is not None and held.n == 2 and held.acc == 0.0
    assert held.mean_confidence == pytest.approx(0.4)
    assert held_out_numbers(entry, set(), ReportOptions()) is None


def test_bad_limits_and_nothing_to_compare_are_reported(model_dir: Path, tmp_path: Path, capsys):
    common = ["--model", str(model_dir), "--out", str(tmp_path / "run")]
    assert calib_tune([*common, "--tasks", "calib_facts_mini", "--limit", "1.5"]) == 2
    assert "--limit: field 'limit' must be a number of documents" in capsys.readouterr().err
    assert calib_tune([*common, "--tasks", "calib_mini", "--limit", "calib_mini=3"]) == 2
    assert "calib_mini is a group" in capsys.readouterr().err
    data = tmp_path / "data.jsonl"
    data.write_text(BUNDLED.read_text().splitlines()[0] + "\n")
    argv = [*common, "--data", str(data), "--methods", "lora", "--epochs", "1"]
    argv += ["--lora-target-modules", "c_attn", "--tasks", "calib_no_such_task"]
    assert calib_tune(argv) == 1
    captured = capsys.readouterr()
    assert "calib-tune: no checkpoint has results to compare" in captured.err
    assert "[2/2] lora-epoch1 (peft " in captured.out and "FAILED" in captured.out


def test_the_training_options_are_the_train_config_fields_and_their_defaults(capsys):
    required = ["--model", "m", "--out", "o"]
    args = parser().parse_args(required)
    for method, rate in LEARNING_RATES.items():
        config = TrainConfig(
            method, getattr(args, f"lr_{method}"), **option_values(args, TrainConfig)
        )
        assert config == TrainConfig(method, rate)
    given = parser().parse_args([*required, "--epochs", "2", "--lora-target-modules", "q, v"])
    assert option_values(given, TrainConfig) | {"epochs": 3, "lora_target_modules": None} == (
        option_values(args, TrainConfig)
    )
    assert (given.epochs, given.lora_target_modules) == (2, ("q", "v"))
    with pytest.raises(SystemExit):
        parser().parse_args([*required, "--epochs", "0"])
    assert "--epochs: must be a positive integer, got 0" in capsys.readouterr().err


def test_comparison_md_names_the_report_defaults_it_was_computed_with():
    text = comparison_markdown(Curves({}, ReportOptions()), "ece_vs_epoch", [])
    binning = binning_text(cm.DEFAULT_N_BINS, cm.DEFAULT_STRATEGY)
    assert f"ECE with {binning} and its {cm.DEFAULT_LEVEL:.0%} bootstrap interval" in text
    assert f"({cm.DEFAULT_N_RESAMPLES:,} resamples, seed {cm.DEFAULT_SEED})" in text
