"""The training loop of calib-tune: full fine-tuning or LoRA, same data, epochs and schedule.

Plain PyTorch: AdamW, a learning rate warmed up linearly over the first ``warmup_ratio`` of the
steps and then decayed to zero linearly (``linear``) or along a half cosine (``cosine``),
gradient norm clipped at 1, mean cross-entropy over the response tokens of each batch. The
example order of every epoch is a permutation drawn from a generator seeded with ``seed``, and
torch's global generator (LoRA's initial weights, dropout) is seeded with it before the model is
built, so the same seed gives the same weights (on the same device and library versions).
A checkpoint is saved after every epoch: the whole model (``save_pretrained``, with the
tokenizer) for full fine-tuning, the adapter alone for LoRA.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

from calib_tasks.command_line.conventions import option, positive_int
from calib_tasks.tune.base import BaseModel
from calib_tasks.tune.data import Encoded, Example, PromptTemplate, collate, encode

Method = Literal["full", "lora"]
Schedule = Literal["linear", "cosine"]
METHODS: tuple[Method, ...] = ("full", "lora")
SCHEDULES: tuple[Schedule, ...] = ("linear", "cosine")
#: The peak learning rate of each method unless given (calib-tune's --lr-full, --lr-lora).
LEARNING_RATES: dict[Method, float] = {"full": 2e-5, "lora": 2e-4}
TRAIN_RECORD = "calib_tune_training.json"
TRAIN_LOG = "train_log.jsonl"


def _module_names(text: str) -> tuple[str, ...] | None:
    return tuple(name.strip() for name in text.split(",") if name.strip()) or None


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on besides the data and the base model. Every field
    but ``method`` and ``learning_rate`` (set per method) is also calib-tune's option of that
    name (``calib_tasks.command_line.conventions.option``), the same for every method."""

    method: Method
    learning_rate: float
    epochs: int = option(3, "epochs over the data", positive_int)
    batch_size: int = option(8, "examples per optimizer step", positive_int)
    schedule: Schedule = option("linear", "decay after the linear warmup", choices=SCHEDULES)
    warmup_ratio: float = option(0.1, "share of the steps that warm the learning rate up", float)
    weight_decay: float = option(0.0, "AdamW's weight decay", float)
    max_length: int = option(256, "tokens per example", positive_int)
    seed: int = option(0, "seed of the example order, LoRA's initial weights and dropout", int)
    max_steps: int | None = option(
        None, "stop each method after this many optimizer steps (quick runs, tests)", positive_int
    )
    lora_r: int = option(8, "rank of the LoRA adapters", positive_int)
    lora_alpha: int = option(16, "alpha (scale) of the LoRA adapters", positive_int)
    lora_dropout: float = option(0.05, "dropout of the LoRA adapters", float)
    lora_target_modules: tuple[str, ...] | None = option(
        None,
        "comma-separated module names (default: peft's choice for the architecture)",
        _module_names,
    )
    device: str = option("cpu", "training device")

    def steps_per_epoch(self, n_examples: int) -> int:
        """Optimizer steps of one epoch over ``n_examples`` (the last batch may be short)."""
        return math.ceil(n_examples / self.batch_size)

    def total_steps(self, n_examples: int) -> int:
        """Optimizer steps of the run: all epochs, cut at ``max_steps`` when given."""
        total = self.epochs * self.steps_per_epoch(n_examples)
        return min(total, self.max_steps) if self.max_steps is not None else total


def checkpoint_dir(run_dir: Path, epoch: int) -> Path:
    """Where the checkpoint after ``epoch`` (1-based) is saved."""
    return run_dir / f"epoch{epoch}"


def learning_rate_factor(step: int, total: int, warmup: int, schedule: Schedule) -> float:
    """The multiplier of the peak learning rate at optimizer step ``step`` (0-based) of
    ``total``: linear warmup over ``warmup`` steps, then linear or cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return max(0.0, 1.0 - progress)


def load_model(base: BaseModel, config: TrainConfig) -> Any:
    """The base model in float32 ready for training (the dtype a hub model is stored in, often
    float16, would make AdamW's small updates vanish): whole for ``full``, wrapped with fresh
    LoRA adapters (peft's default target modules for the architecture unless given) for
    ``lora``. Seeds torch first, so the adapters' initial weights and dropout follow
    ``config.seed``."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(config.seed)
    model = AutoModelForCausalLM.from_pretrained(
        base.model, dtype=torch.float32, **base.load_kwargs()
    )
    if config.method == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            task_type="CAUSAL_LM",
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.lora_target_modules) if config.lora_target_modules else None,
        )
        model = get_peft_model(model, lora)
    return model.to(config.device)


def encode_all(
    examples: Sequence[Example], tokenizer: Any, template: PromptTemplate, max_length: int
) -> list[Encoded]:
    """Every example encoded (see ``data.encode``)."""
    return [encode(example, tokenizer, template, max_length) for example in examples]


def _save_checkpoint(model: Any, tokenizer: Any, method: Method, folder: Path) -> None:
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    if method == "full":
        tokenizer.save_pretrained(partial)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)


def train(
    base: BaseModel,
    examples: Sequence[Example],
    template: PromptTemplate,
    config: TrainConfig,
    run_dir: Path,
    out: TextIO | None = None,
) -> list[Path]:
    """Train on ``examples`` and save a checkpoint after every epoch into ``run_dir``
    (``epoch1``, ``epoch2``...; a run cut short by ``max_steps`` saves the partial epoch it
    stopped in). Reuses the checkpoints of an earlier run with the same config and data
    (recorded in ``calib_tune_training.json``). Progress goes to ``out`` (default: standard
    output). Returns the checkpoint folders in order."""
    out = out or sys.stdout
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base.model, **base.load_kwargs())
    encoded = encode_all(examples, tokenizer, template, config.max_length)
    n_epochs = math.ceil(config.total_steps(len(encoded)) / config.steps_per_epoch(len(encoded)))
    checkpoints = [checkpoint_dir(run_dir, epoch) for epoch in range(1, n_epochs + 1)]
    tokens = json.dumps([[e.input_ids, e.labels] for e in encoded]).encode("utf-8")
    fingerprint = {
        "config": asdict(config),
        "base": asdict(base),
        "template": asdict(template),
        "examples_sha256": hashlib.sha256(tokens).hexdigest(),
    }
    fingerprint = json.loads(json.dumps(fingerprint))  # as read back (tuples become lists)
    record = run_dir / TRAIN_RECORD
    if record.exists() and all(c.is_dir() for c in checkpoints):
        if json.loads(record.read_text(encoding="utf-8")) == fingerprint:
            print(f"{config.method}: reusing the checkpoints in {run_dir}", file=out)
            return checkpoints
    record.unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    truncated = sum(e.truncated for e in encoded)
    if truncated:
        print(
            f"{config.method}: {truncated} example(s) cut at {config.max_length} tokens", file=out
        )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model = load_model(base, config)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=config.learning_rate, weight_decay=config.weight_decay
    )
    total = config.total_steps(len(encoded))
    warmup = round(config.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, total, warmup, config.schedule)
    )
    order = torch.Generator().manual_seed(config.seed)
    step = 0
    with (run_dir / TRAIN_LOG).open("w", encoding="utf-8", buffering=1) as log:
        for epoch, folder in enumerate(checkpoints, start=1):
            start, losses = time.monotonic(), []
            permutation = torch.randperm(len(encoded), generator=order).tolist()
            for first in range(0, len(permutation), config.batch_size):
                if step >= total:
                    break
                batch = collate(
                    [encoded[i] for i in permutation[first : first + config.batch_size]], pad_id
                )
                loss = model(**{k: v.to(config.device) for k, v in batch.items()}).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
                step += 1
                log.write(json.dumps({"epoch": epoch, "step": step, "loss": losses[-1]}) + "\n")
            _save_checkpoint(model, tokenizer, config.method, folder)
            print(
                f"{config.method} epoch {epoch}/{len(checkpoints)}: {len(losses)} steps, "
                f"mean response-token loss {sum(losses) / max(len(losses), 1):.4f}, "
                f"{time.monotonic() - start:.0f} s -> {folder}",
                file=out,
                flush=True,
            )
    record.write_text(json.dumps(fingerprint) + "\n", encoding="utf-8")
    return checkpoints
