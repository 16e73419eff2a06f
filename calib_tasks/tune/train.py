"""The training of calib-tune on Hugging Face ``trl``: SFT (``SFTTrainer``) and DPO
(``DPOTrainer``), full fine-tuning or LoRA (peft), from the base model or, for DPO, chained after
an SFT run (``full.dpo``, ``lora.dpo``: the paper's SFT -> RLHF order).

Every method uses the same data order (the trainer's sampler, seeded with ``seed``), epochs and
schedule (AdamW, warmup over ``warmup_ratio`` of the steps, then linear or cosine decay, gradient
norm clipped at 1). Models train in float32 whatever their checkpoint's dtype. SFT examples are
encoded by ``data.encode`` (loss on the response and end-of-sequence tokens only) and handed to
trl pre-tokenized; DPO pairs are tokenized by trl (prompt rendered by the template, EOS after
each response). A checkpoint is saved after every epoch into ``epoch1``, ``epoch2``...: the
model and tokenizer for full fine-tuning, the adapter alone for LoRA. The trainer's own state
(optimizer, scheduler, RNG) is saved too, so a killed run resumes at its last finished epoch;
a finished run with the same config and data is reused as it is. glibc's heap is pinned for the
training (``heap.pin_glibc_heap``): the process keeps the memory it frees between steps.

Under ``accelerate launch`` the same call trains data-parallel: ``batch_size`` stays the
examples per optimizer step, split over the processes.
"""

from __future__ import annotations

import functools
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
from calib_tasks.tune.base_model import BaseModel
from calib_tasks.tune.data import (
    DataError,
    Example,
    Preference,
    PromptTemplate,
    check_chat_template,
    encode,
)
from calib_tasks.tune.heap import pin_glibc_heap

Method = Literal["full", "lora", "dpo", "dpo_lora", "full.dpo", "lora.dpo"]
Schedule = Literal["linear", "cosine"]
METHODS: tuple[Method, ...] = ("full", "lora", "dpo", "dpo_lora", "full.dpo", "lora.dpo")
SCHEDULES: tuple[Schedule, ...] = ("linear", "cosine")
#: The SFT run a chained DPO method starts from.
CHAINED: dict[Method, Method] = {"full.dpo": "full", "lora.dpo": "lora"}
#: The peak learning rate of each method unless given (calib-tune's --lr-METHOD); a chained
#: method's DPO stage uses the rate of DPO with the same parameters (``learning_rate_key``).
LEARNING_RATES: dict[Method, float] = {"full": 2e-5, "lora": 2e-4, "dpo": 1e-6, "dpo_lora": 1e-5}
TRAIN_RECORD = "calib_tune_training.json"
TRAIN_LOG = "train_log.jsonl"
TRAINER_DIR = "trainer"  # the trainer's checkpoints of an unfinished run
_RESUME_RECORD = "calib_tune_run.json"


def is_lora(method: Method) -> bool:
    """Whether ``method`` trains LoRA adapters (else all weights)."""
    return method in ("lora", "dpo_lora", "lora.dpo")


def is_dpo(method: Method) -> bool:
    """Whether ``method`` trains on preference pairs with DPO (else SFT on examples)."""
    return method in ("dpo", "dpo_lora", "full.dpo", "lora.dpo")


def learning_rate_key(method: Method) -> Method:
    """The method whose --lr option sets ``method``'s peak learning rate."""
    return {"full.dpo": "dpo", "lora.dpo": "dpo_lora"}.get(method, method)  # type: ignore[return-value]


def _module_names(text: str) -> tuple[str, ...] | None:
    return tuple(name.strip() for name in text.split(",") if name.strip()) or None


def _ratio(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:  # transformers reads a warmup of 1 or more as a number of steps
        raise ValueError(text)
    return value


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on besides the data and the base model. Every field
    but ``method`` and ``learning_rate`` (set per method) is also calib-tune's option of that
    name (``calib_tasks.command_line.conventions.option``), the same for every method."""

    method: Method
    learning_rate: float
    epochs: int = option(3, "epochs over the data", positive_int)
    batch_size: int = option(8, "examples per optimizer step (over all processes)", positive_int)
    schedule: Schedule = option("linear", "decay after the linear warmup", choices=SCHEDULES)
    warmup_ratio: float = option(0.1, "share of the steps that warm the LR up, in [0, 1)", _ratio)
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
    beta: float = option(0.1, "DPO's beta (strength of the pull towards the reference)", float)
    device: str = option("cpu", "cpu, or cuda (accelerate's devices)", choices=("cpu", "cuda"))

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


def check_lora_targets(model: Any, targets: Sequence[str], where: str) -> None:
    """``DataError`` naming ``where`` and the first of ``targets`` that no module of ``model``
    is called (peft matches a target against the last part of a module's name)."""
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    for target in targets:
        if target not in names:
            examples = ", ".join(sorted(n for n in names if n and not n.isdigit())[:12])
            raise DataError(
                f"{where}: no module named {target!r} for --lora-target-modules "
                f"(modules include {examples})"
            )


def preflight(base: BaseModel, template: PromptTemplate, configs: Sequence[TrainConfig]) -> None:
    """Check, before any method trains, what ``train`` would only find when it reaches that
    method: that the tokenizer has the chat template ``template`` needs and that the model has
    every LoRA target module of ``configs`` (its skeleton, built without weights).
    ``DataError`` names the model and the module."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base.model, **base.load_kwargs())
    check_chat_template(template, tokenizer, base.model)
    targets = {t for c in configs if is_lora(c.method) for t in c.lora_target_modules or ()}
    if targets:
        import torch

        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(
                AutoConfig.from_pretrained(base.model, **base.load_kwargs())
            )
        check_lora_targets(skeleton, sorted(targets), base.model)


def load_model(base: BaseModel, config: TrainConfig, start: Path | None = None) -> Any:
    """The model to train, in float32 (a half-precision checkpoint is upcast: AdamW's small
    updates vanish in float16): the base model, or the SFT checkpoint ``start`` of a chained
    method (a full model, or an adapter that training continues). LoRA methods from the base
    get fresh adapters (peft's default target modules unless given). Seeds torch first, so the
    adapters' initial weights follow ``config.seed``."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(config.seed)
    if start is not None and not is_lora(config.method):
        return AutoModelForCausalLM.from_pretrained(start, dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(
        base.model, dtype=torch.float32, **base.load_kwargs()
    )
    if not is_lora(config.method):
        return model
    from peft import LoraConfig, PeftModel, get_peft_model

    if start is not None:
        return PeftModel.from_pretrained(model, start, is_trainable=True)
    if config.lora_target_modules:
        check_lora_targets(model, config.lora_target_modules, base.model)
    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules) if config.lora_target_modules else None,
    )
    return get_peft_model(model, lora)


def _save(model: Any, tokenizer: Any, method: Method, folder: Path) -> None:
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    if is_lora(method):  # not DPO's frozen "ref" copy of the adapter
        model.save_pretrained(partial, selected_adapters=["default"])
    else:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)


def _callback(run_dir: Path, tokenizer: Any, method: Method, out: TextIO) -> Any:
    from transformers import TrainerCallback

    class EpochCheckpoints(TrainerCallback):
        """Writes the train log (one line per optimizer step) and the epoch checkpoints."""

        started = time.monotonic()

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001, ANN003
            if state.is_world_process_zero and logs and "loss" in logs:
                event = {
                    "epoch": math.ceil(round(state.epoch, 6)),
                    "step": state.global_step,
                    "loss": logs["loss"],
                    "learning_rate": logs.get("learning_rate"),
                }
                with (run_dir / TRAIN_LOG).open("a", encoding="utf-8") as log:
                    log.write(json.dumps(event) + "\n")

        def on_epoch_end(self, args, state, control, model=None, **kwargs):  # noqa: ANN001, ANN003
            if state.is_world_process_zero:
                epoch = math.ceil(round(state.epoch, 6))
                folder = checkpoint_dir(run_dir, epoch)
                _save(model, tokenizer, method, folder)
                print(
                    f"{method} epoch {epoch}: step {state.global_step}/{state.max_steps}, "
                    f"{time.monotonic() - self.started:.0f} s -> {folder}",
                    file=out,
                    flush=True,
                )
                self.started = time.monotonic()

    return EpochCheckpoints()


def _trainer_args(config: TrainConfig, output_dir: Path, n_examples: int) -> dict[str, Any]:
    from accelerate import PartialState

    processes = PartialState().num_processes
    if config.batch_size % processes:
        raise DataError(
            f"--batch-size {config.batch_size} is not a multiple of the {processes} processes"
        )
    steps = config.total_steps(n_examples)
    return dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.batch_size // processes,
        num_train_epochs=config.epochs,
        max_steps=steps if config.max_steps is not None else -1,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.schedule,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a share of the steps
        weight_decay=config.weight_decay,
        max_grad_norm=1.0,
        optim="adamw_torch",
        seed=config.seed,
        data_seed=config.seed,
        # trl's defaults are bf16 mixed precision and gradient checkpointing
        # (trl/trainer/base_config.py); calib-tune trains in float32, without recomputation
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=config.device == "cpu",
        logging_steps=1,
        save_strategy="epoch",
        save_total_limit=1,
        report_to="none",
        disable_tqdm=True,
        max_length=config.max_length,
    )


def _fingerprint(base: BaseModel, config: TrainConfig, rows: Any, start: Path | None) -> dict:
    data = json.dumps(rows).encode("utf-8")
    record = {
        "config": asdict(config),
        "base": asdict(base),
        # a chained run depends on the SFT run it starts from: that run's own record
        "start": [str(start), json.loads((start.parent / TRAIN_RECORD).read_text())]
        if start
        else None,
        "data_sha256": hashlib.sha256(data).hexdigest(),
    }
    return json.loads(json.dumps(record))  # as read back (tuples become lists)


def _resume_from(run_dir: Path, fingerprint: dict, out: TextIO, main: bool) -> str | None:
    """The trainer checkpoint of an unfinished run with the same fingerprint (its train log cut
    at that step), or None after clearing whatever an earlier run left. Only the ``main``
    process changes files; the others, called after it, find what it left."""
    from transformers.trainer_utils import get_last_checkpoint

    trainer_dir = run_dir / TRAINER_DIR
    if not main:
        return get_last_checkpoint(str(trainer_dir))
    record = trainer_dir / _RESUME_RECORD
    same = record.exists() and json.loads(record.read_text(encoding="utf-8")) == fingerprint
    last = get_last_checkpoint(str(trainer_dir)) if same else None
    if last is None:
        shutil.rmtree(run_dir, ignore_errors=True)
        trainer_dir.mkdir(parents=True)
        record.write_text(json.dumps(fingerprint) + "\n", encoding="utf-8")
        return None
    step = json.loads((Path(last) / "trainer_state.json").read_text())["global_step"]
    log = run_dir / TRAIN_LOG
    kept = [x for x in log.read_text().splitlines() if json.loads(x)["step"] <= step]
    log.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    print(f"resuming from {last} (step {step})", file=out)
    return last


def train(
    base: BaseModel,
    data: Sequence[Example] | Sequence[Preference],
    template: PromptTemplate,
    config: TrainConfig,
    run_dir: Path,
    out: TextIO | None = None,
    start: Path | None = None,
) -> list[Path]:
    """Train ``config.method`` on ``data`` (examples for SFT, preference pairs for DPO; from
    the checkpoint ``start`` for a chained method) and save a checkpoint after every epoch into
    ``run_dir`` (``epoch1``, ``epoch2``...; a run cut short by ``max_steps`` saves the partial
    epoch it stopped in). Reuses the checkpoints of a finished run with the same config, data
    and start (recorded in ``calib_tune_training.json``), resumes an unfinished one. Checks the
    template against the tokenizer and the LoRA targets against the model before training
    (``DataError``). Progress goes to ``out`` (default: standard output). Returns the
    checkpoint folders in order."""
    out = out or sys.stdout
    from transformers import AutoTokenizer, PrinterCallback

    tokenizer = AutoTokenizer.from_pretrained(base.model, **base.load_kwargs())
    check_chat_template(template, tokenizer, base.model)
    if is_dpo(config.method):
        rows: list[dict[str, Any]] = [
            {"prompt": template.render(p, tokenizer), "chosen": p.chosen, "rejected": p.rejected}
            for p in data  # type: ignore[union-attr]
        ]
    else:
        encoded = [encode(e, tokenizer, template, config.max_length) for e in data]  # type: ignore[arg-type]
        rows = [e.row() for e in encoded]
        truncated = sum(e.truncated for e in encoded)
        if truncated:
            print(f"{config.method}: {truncated} example(s) cut at {config.max_length}", file=out)
    n_epochs = math.ceil(config.total_steps(len(rows)) / config.steps_per_epoch(len(rows)))
    checkpoints = [checkpoint_dir(run_dir, epoch) for epoch in range(1, n_epochs + 1)]
    fingerprint = _fingerprint(base, config, rows, start)
    record = run_dir / TRAIN_RECORD
    if record.exists() and all(c.is_dir() for c in checkpoints):
        if json.loads(record.read_text(encoding="utf-8")) == fingerprint:
            print(f"{config.method}: reusing the checkpoints in {run_dir}", file=out)
            return checkpoints
    from accelerate import PartialState

    model = load_model(base, config, start)
    state = PartialState()
    with state.main_process_first():
        resume = _resume_from(run_dir, fingerprint, out, state.is_main_process)
    trainer = _trainer(config, model, tokenizer, rows, run_dir, base, start)
    trainer.add_callback(_callback(run_dir, tokenizer, config.method, out))
    trainer.remove_callback(PrinterCallback)  # the log dicts: train_log.jsonl has them
    pin_glibc_heap()
    trainer.train(resume_from_checkpoint=resume)
    if trainer.is_world_process_zero():
        shutil.rmtree(run_dir / TRAINER_DIR)
        record.write_text(json.dumps(fingerprint) + "\n", encoding="utf-8")
    trainer.accelerator.wait_for_everyone()
    return checkpoints


def _trainer(
    config: TrainConfig,
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    run_dir: Path,
    base: BaseModel,
    start: Path | None,
) -> Any:
    from datasets import Dataset

    dataset = Dataset.from_list(rows)
    arguments = _trainer_args(config, run_dir / TRAINER_DIR, len(rows))
    if not is_dpo(config.method):
        from transformers import Trainer
        from trl import SFTConfig, SFTTrainer

        class LeanSFTTrainer(SFTTrainer):
            """trl's SFTTrainer without two per-step costs that buy calib-tune nothing.
            The loss: the model's own cross-entropy over the labelled tokens, not trl's fused
            LM head (trl/trainer/utils.py, add_fused_lm_head), which off Triton devices scores
            every position in Python-looped tiles and adds entropy and top-1 metrics to every
            step: three times slower per step than the model's loss on a small model on CPU.
            The FLOP count the trainer logs (6 x tokens x non-embedding parameters, as
            ``Trainer.floating_point_ops``): the parameters counted once, not by walking every
            module at every step (benchmarks/bench_tune.py)."""

            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
                return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

            @functools.cached_property
            def _non_embedding_parameters(self) -> int:
                return self.model.num_parameters(exclude_embeddings=True)

            def floating_point_ops(self, inputs: dict[str, Any]) -> int:
                return 6 * inputs["input_ids"].numel() * self._non_embedding_parameters

        return LeanSFTTrainer(
            model=model,
            args=SFTConfig(**arguments),
            train_dataset=dataset,
            processing_class=tokenizer,
        )
    from trl import DPOConfig, DPOTrainer

    # LoRA: trl's reference is a frozen copy of the adapter being trained (a fresh adapter is
    # the base model; a chained one the SFT model), trl/trainer/dpo_trainer.py; full: a copy
    # of the starting weights, loaded here in float32 as the model is.
    reference = None if is_lora(config.method) else load_model(base, config, start).eval()
    return DPOTrainer(
        model=model,
        ref_model=reference,
        args=DPOConfig(**arguments, beta=config.beta),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
