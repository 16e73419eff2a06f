"""calib-tune's trl stages on a tiny GPT-2: DPO full and LoRA, from the base and chained after
SFT, end to end through the harness; a killed run resumes without retraining finished epochs;
unusable templates and LoRA targets are refused before training."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support.tiny_model import build_tiny_model

from calib_tasks import task_dir
from calib_tasks.tune.base_model import BaseModel
from calib_tasks.tune.cli import main as calib_tune
from calib_tasks.tune.data import ALPACA, read_examples
from calib_tasks.tune.train import TRAINER_DIR, TrainConfig, train

BUNDLED = task_dir() / "data" / "instructions_mini.jsonl"
PREFERENCES = task_dir() / "data" / "preferences_mini.jsonl"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tune_trl_model") / "tiny", n_positions=256)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    (path,) = folder.glob("*.safetensors")
    return load_file(path)


def _first_lines(source: Path, out: Path, n: int) -> str:
    out.write_text("".join(source.read_text().splitlines(keepends=True)[:n]))
    return str(out)


def test_dpo_full_lora_and_chained_after_sft_end_to_end(
    model_dir: Path, tmp_path: Path, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = tmp_path / "run"
    argv = [
        "--model", str(model_dir), "--out", str(out), "--epochs", "1", "--batch-size", "4",
        "--data", _first_lines(BUNDLED, tmp_path / "d.jsonl", 8),
        "--preferences", _first_lines(PREFERENCES, tmp_path / "p.jsonl", 8),
        "--methods", "dpo,dpo_lora,full.dpo,lora.dpo", "--lora-target-modules", "c_attn",
        "--lr-dpo", "1e-3", "--lr-dpo-lora", "1e-2",
        "--tasks", "calib_facts_mini", "--num-fewshot", "0", "--limit", "12",
    ]  # fmt: skip
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert calib_tune(argv) == 0, printed.getvalue()
    points = sorted(p.name for p in (out / "eval" / "points").iterdir())
    assert points == [
        "base",
        "dpo-epoch1",
        "dpo_lora-epoch1",
        "full-epoch1",
        "full.dpo-epoch2",
        "lora-epoch1",
        "lora.dpo-epoch2",
    ]  # fmt: skip  (the chained methods' SFT runs are trained and shown too)
    for method in ("dpo", "dpo_lora", "full.dpo", "lora.dpo"):
        log = [json.loads(x) for x in (out / method / "train_log.jsonl").read_text().splitlines()]
        assert [e["step"] for e in log] == [1, 2] and log[0]["loss"] == pytest.approx(
            0.6931, abs=1e-3
        )
        assert not (out / method / TRAINER_DIR).exists()  # a finished run keeps only checkpoints
    # full DPO moved the weights away from where it started (the base, or the SFT checkpoint)
    base = _weights(model_dir)
    dpo, sft, chained = (_weights(out / m / "epoch1") for m in ("dpo", "full", "full.dpo"))
    assert any(not torch.equal(dpo[k], base[k]) for k in dpo)
    assert any(not torch.equal(chained[k], sft[k]) for k in chained)
    # the chained LoRA run continues the SFT adapter (same keys, trained further), no "ref" copy
    lora, lora_dpo = _weights(out / "lora" / "epoch1"), _weights(out / "lora.dpo" / "epoch1")
    assert lora.keys() == lora_dpo.keys() and not any("ref" in k for k in lora_dpo)
    assert any(not torch.equal(lora[k], lora_dpo[k]) for k in lora)
    record = json.loads((out / "eval" / "points" / "lora.dpo-epoch2" / "point.json").read_text())
    assert record["evaluation"]["model_args"]["peft"] == str(out / "lora.dpo" / "epoch1")

    table = (out / "comparison.md").read_text()
    for label in ("| DPO ECE", "| LoRA DPO ECE", "| full SFT -> DPO ECE", "| LoRA SFT -> DPO ECE"):
        assert label in table
    assert "DPO with beta 0.1" in table and "the bundled synthetic" not in table
    rows = [line for line in table.splitlines() if line.startswith("| 2 | ")]
    assert rows and all(cell.strip() == "" for cell in rows[0].split("|")[5:9])  # full: 1 epoch
    assert (out / "ece_vs_epoch.png").stat().st_size > 10_000


def test_a_killed_run_resumes_at_its_last_epoch(model_dir: Path, tmp_path: Path, monkeypatch):
    from trl import SFTTrainer

    examples = read_examples(BUNDLED)[:4]
    config = TrainConfig(method="full", epochs=3, batch_size=2, learning_rate=1e-3)
    base = BaseModel(str(model_dir))
    (*_, whole) = train(base, examples, ALPACA, config, tmp_path / "whole", io.StringIO())

    save = SFTTrainer._save_checkpoint

    def killed_after_epoch_2(self, model, trial):  # noqa: ANN001
        save(self, model, trial)
        if self.state.global_step == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(SFTTrainer, "_save_checkpoint", killed_after_epoch_2)
    run = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        train(base, examples, ALPACA, config, run, io.StringIO())
    monkeypatch.undo()
    assert (run / "epoch2").is_dir() and not (run / "epoch3").exists()
    saved = {e: next((run / f"epoch{e}").glob("*.safetensors")).stat().st_mtime_ns for e in (1, 2)}
    printed = io.StringIO()
    (*_, resumed) = train(base, examples, ALPACA, config, run, printed)
    assert "resuming from" in printed.getvalue() and "(step 4)" in printed.getvalue()
    assert "epoch 1:" not in printed.getvalue() and "epoch 3:" in printed.getvalue()
    for epoch, mtime in saved.items():  # finished epochs are not trained or written again
        assert next((run / f"epoch{epoch}").glob("*.safetensors")).stat().st_mtime_ns == mtime
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3, 4, 5, 6]
    a, b = _weights(whole), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)  # as if it had never been killed


def test_the_sft_trainer_counts_flops_as_transformers_does(model_dir: Path, tmp_path: Path):
    """The FLOP count the SFT trainer logs, its parameters counted once, is Trainer's own."""
    from transformers import AutoTokenizer, Trainer

    from calib_tasks.tune.data import encode
    from calib_tasks.tune.train import _trainer, load_model

    base, tokenizer = BaseModel(str(model_dir)), AutoTokenizer.from_pretrained(model_dir)
    rows = [encode(e, tokenizer, ALPACA, 64).row() for e in read_examples(BUNDLED)[:4]]
    for method in ("full", "lora"):
        config = TrainConfig(method=method, learning_rate=1e-4, batch_size=2, max_length=64)
        model = load_model(base, config)
        trainer = _trainer(config, model, tokenizer, rows, tmp_path / method, base, None)
        for batch in trainer.get_train_dataloader():
            assert trainer.floating_point_ops(batch) == Trainer.floating_point_ops(trainer, batch)
            assert trainer.floating_point_ops(batch) > 0


def test_a_missing_chat_template_and_lora_target_are_refused_before_training(
    model_dir: Path, tmp_path: Path, capsys
):
    out = tmp_path / "run"
    data = _first_lines(BUNDLED, tmp_path / "d.jsonl", 2)
    common = ["--model", str(model_dir), "--out", str(out), "--data", data, "--no-eval"]
    assert calib_tune([*common, "--methods", "full", "--template", "chat"]) == 2
    assert f"{model_dir}: the tokenizer has no chat template" in capsys.readouterr().err
    argv = [*common, "--methods", "full,lora", "--lora-target-modules", "q_proj"]
    assert calib_tune(argv) == 2  # refused before full fine-tuning trains, too
    err = capsys.readouterr().err
    assert f"{model_dir}: no module named 'q_proj' for --lora-target-modules" in err
    assert "c_attn" in err  # the modules the model has
    bad = tmp_path / "p.jsonl"
    bad.write_text(
        '{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "a"}\n'
    )
    assert calib_tune([*common, "--methods", "dpo", "--preferences", str(bad)]) == 2
    assert f"{bad}:2: 'rejected' must be a non-empty response" in capsys.readouterr().err
    assert not out.exists() or not any(out.rglob("epoch*"))  # nothing was trained


def test_accelerate_launch_trains_data_parallel_on_two_cpu_processes(
    model_dir: Path, tmp_path: Path
):
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "calib_tasks.tune", "--model", str(model_dir), "--out", str(out),
        "--data", _first_lines(BUNDLED, tmp_path / "d.jsonl", 8),
        "--preferences", _first_lines(PREFERENCES, tmp_path / "p.jsonl", 8),
        "--methods", "full,dpo_lora", "--lora-target-modules", "c_attn",
        "--epochs", "2", "--batch-size", "4", "--no-eval",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for method in ("full", "dpo_lora"):
        # 8 examples, 4 per optimizer step over both processes (2 each): 2 steps per epoch
        log = [json.loads(x) for x in (out / method / "train_log.jsonl").read_text().splitlines()]
        assert [(e["epoch"], e["step"]) for e in log] == [(1, 1), (1, 2), (2, 3), (2, 4)]
        assert (out / method / "epoch2").is_dir() and not (out / method / TRAINER_DIR).exists()
    assert done.stdout.count("full epoch 2: step 4/4") == 1  # the main process alone reports
