"""``calib-tune``: align a causal LM with trl, by SFT and by DPO, full fine-tuning or LoRA, and
DPO chained after SFT, on the same data order, epochs and learning-rate schedule; then evaluate
the calib tasks on the base model (epoch 0) and on every epoch's checkpoint, and compare the
methods epoch by epoch (a chained method's DPO epochs continue its SFT run's line).

Output folder::

    base/                   the base model as a plain transformers folder (GGUF input only)
    full/epoch1 ...         a method's checkpoints (full: save_pretrained; LoRA: the adapter),
                            train_log.jsonl; one folder per method (full, lora, dpo, dpo_lora,
                            full.dpo, lora.dpo)
    eval/                   a calib-study output folder: one point per checkpoint, report/
    comparison.md           ECE/accuracy per task and epoch, the methods side by side
    ece_vs_epoch.png/.svg   the same as a figure
    slurm/                  --executor with kind slurm: submitit's sbatch scripts and job logs

Under ``accelerate launch`` every process trains its share of each batch (data-parallel); the
main process alone evaluates and writes the comparison. With ``--executor FILE`` naming
``kind: slurm``, each method trains and evaluates its checkpoints as a SLURM job, a chained
method once its SFT job has completed (``calib_tasks.tune.jobs``); this process then writes the
report and the comparison. It submits from one process: under ``accelerate launch`` with several
processes, kind ``slurm`` is refused (exit status 2) rather than submitted once per process.

Exit status (``calib_tasks.command_line.conventions``): 0 when every checkpoint was evaluated,
1 when some evaluation (or SLURM job) failed or the report could not be written, 2 when the
input (data, template, model, executor file) is unusable, 130 when interrupted on SLURM (its
jobs are then cancelled).

The training options are made from ``TrainConfig``'s fields (``add_options``), so each default
is written once, there.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Collection, Sequence
from pathlib import Path

from calib_tasks import task_dir
from calib_tasks.command_line.conventions import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    add_options,
    option_values,
    positive_float,
)
from calib_tasks.study.layout import StudyLayout
from calib_tasks.study.report import StudyReport, write_study_report
from calib_tasks.study.runner import run_points
from calib_tasks.study.slurm_jobs import SubmissionError, import_submitit
from calib_tasks.study.spec import (
    INSTALLED_PREFIX,
    EvalSettings,
    PointEntry,
    PointSpec,
    StudyError,
    parse_limit,
    resolve_installed,
)
from calib_tasks.tune.base_model import BaseModel, materialize_gguf
from calib_tasks.tune.compare import (
    METHOD_LABELS,
    TABLE,
    Curves,
    Fact,
    comparison_markdown,
    curves,
    seen_facts,
    write_figure,
)
from calib_tasks.tune.data import TEMPLATES, PromptTemplate, load_template
from calib_tasks.tune.formats import load_instructions, load_preferences
from calib_tasks.tune.jobs import MethodRun, load_executor, run_methods_slurm
from calib_tasks.tune.points import checkpoint_points
from calib_tasks.tune.train import (
    CHAINED,
    LEARNING_RATES,
    METHODS,
    TRAIN_LOG,
    TrainConfig,
    is_dpo,
    learning_rate_key,
    preflight,
    train,
)

DEFAULT_DATA = str(task_dir() / "data" / "instructions_mini.jsonl")
DEFAULT_PREFERENCES = str(task_dir() / "data" / "preferences_mini.jsonl")
DEFAULT_TASKS = "calib_mmlu_mini,calib_facts_mini,calib_clm_mini"


def _methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise argparse.ArgumentTypeError(f"methods are {', '.join(METHODS)}; got {text!r}")
    with_stages = [stage for m in methods for stage in (CHAINED.get(m), m) if stage]  # type: ignore[call-overload]
    return list(dict.fromkeys(with_stages))  # a chained method trains (and shows) its SFT run


def _limit(text: str) -> float | dict[str, int]:
    if "=" not in text:
        return positive_float(text)
    limits = {}
    for piece in text.split(","):
        task, _, n = piece.partition("=")
        if not task.strip() or not n.strip().isdigit() or int(n) < 1:
            raise argparse.ArgumentTypeError(f"expected TASK=N[,TASK=N], got {text!r}")
        limits[task.strip()] = int(n)
    return limits


def parser() -> argparse.ArgumentParser:
    """The argument parser of calib-tune."""
    p = argparse.ArgumentParser(
        prog="calib-tune",
        description=(
            "Align a causal LM with trl (SFT, DPO, SFT then DPO; full fine-tuning or LoRA; same "
            "data order, epochs and schedule), evaluate the calib tasks after every epoch, "
            "compare the methods."
        ),
    )
    model = p.add_argument_group("model and data")
    model.add_argument(
        "--model",
        required=True,
        help="hub name or folder of the base model (installed:DIST/PATH for a file or folder "
        "inside an installed Python distribution)",
    )
    model.add_argument("--gguf-file", help="GGUF file name inside --model (e.g. the demo model)")
    model.add_argument("--revision", help="revision of a hub model")
    model.add_argument(
        "--data",
        default=DEFAULT_DATA,
        help="SFT data, a file or hub data set: Alpaca (instruction, input, output; JSON Lines "
        "or a JSON array) or oasst1 messages (default: the bundled synthetic set "
        "instructions_mini.jsonl)",
    )
    model.add_argument(
        "--preferences",
        default=DEFAULT_PREFERENCES,
        help="DPO data, a file or hub data set: prompt (or instruction, input), chosen, "
        "rejected; HH-RLHF and UltraFeedback-binarized records too (default: the bundled "
        "synthetic set preferences_mini.jsonl)",
    )
    model.add_argument(
        "--template",
        default="alpaca",
        help="prompt template: alpaca, raw (the prompt as it is), chat (the tokenizer's chat "
        "template), or a YAML/JSON file with keys with_input and without_input "
        "(default alpaca)",
    )
    model.add_argument("--out", type=Path, required=True, help="output folder")
    training = p.add_argument_group("training (the same for every method)")
    training.add_argument(
        "--methods",
        type=_methods,
        default=["full", "lora"],
        help=f"comma-separated, of {','.join(METHODS)} (x.dpo: DPO after the SFT run x; "
        "default full,lora)",
    )
    for method, rate in LEARNING_RATES.items():
        training.add_argument(
            f"--lr-{method.replace('_', '-')}",
            type=positive_float,
            default=rate,
            help=f"peak learning rate of {METHOD_LABELS[method]} (default {rate:g})",
        )
    add_options(training, TrainConfig)
    evaluation = p.add_argument_group("evaluation (through the harness, one point per checkpoint)")
    evaluation.add_argument("--tasks", default=DEFAULT_TASKS, help=f"default {DEFAULT_TASKS}")
    evaluation.add_argument("--num-fewshot", type=int)
    evaluation.add_argument(
        "--limit",
        type=_limit,
        help="first N documents of every task (or a fraction < 1), or TASK=N[,TASK=N] for the "
        "first N documents of the tasks named (others whole)",
    )
    evaluation.add_argument("--eval-batch-size", default="8")
    evaluation.add_argument("--eval-device", help="default: the training device")
    evaluation.add_argument("--no-eval", action="store_true", help="train only")
    p.add_argument(
        "--executor",
        type=Path,
        metavar="FILE.yaml",
        help="a YAML file with a study file's executor block, e.g. executor: {kind: slurm, "
        "parallel: 4, slurm: {partition: gpu, gpus_per_node: 1, timeout_min: 600}}: each "
        "method trains and evaluates its checkpoints as one SLURM job (a chained method once "
        "its SFT job has completed), the base model's evaluation as another (default: every "
        "method in this process, one after another)",
    )
    return p


def _train_config(args: argparse.Namespace, method: str) -> TrainConfig:
    return TrainConfig(
        method=method,  # type: ignore[arg-type]
        learning_rate=getattr(args, f"lr_{learning_rate_key(method)}"),
        **option_values(args, TrainConfig),
    )


def _template(name: str) -> PromptTemplate:
    return TEMPLATES[name] if name in TEMPLATES else load_template(Path(name))


def _base_model(args: argparse.Namespace) -> BaseModel:
    model = args.model
    if model.startswith(INSTALLED_PREFIX):
        model = str(resolve_installed(model))
    if args.gguf_file:
        from accelerate import PartialState

        with PartialState().main_process_first():  # one process converts, the others reuse
            base = materialize_gguf(model, args.gguf_file, args.out / "base")
        print(f"base model: {args.gguf_file} as a plain transformers folder, {base.model}")
        return base
    return BaseModel(model, args.revision)


def _epoch_losses(run_dir: Path) -> list[float]:
    losses: dict[int, list[float]] = {}
    for line in (run_dir / TRAIN_LOG).read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        losses.setdefault(event["epoch"], []).append(event["loss"])
    return [sum(v) / len(v) for _, v in sorted(losses.items())]


def _setup_lines(
    args: argparse.Namespace,
    n_examples: int,
    n_pairs: int | None,
    base: BaseModel,
    trained: Sequence[str],
) -> list[str]:
    """The setup of the tuning in words, for comparison.md; ``trained``: the methods whose
    training finished (all of them, but for methods whose SLURM job failed)."""
    warmup = f"linear warmup over {args.warmup_ratio:.0%} of the steps, then {args.schedule} decay"
    rates = ", ".join(
        f"{getattr(args, f'lr_{m}'):g} ({METHOD_LABELS[m]})"
        for m in LEARNING_RATES
        if any(learning_rate_key(method) == m for method in args.methods)
    )
    bundled = args.preferences == DEFAULT_PREFERENCES
    preferences = (
        "Preference pairs: "
        f"{'the bundled synthetic preferences_mini.jsonl' if bundled else args.preferences}"
        f" ({n_pairs} pairs), the same template; DPO with beta {args.beta}, reference = the "
        "starting model (the base, or the SFT checkpoint it continues)."
    )
    lines = [
        f"Base model: {args.model}"
        + (f" ({args.gguf_file}, dequantized)" if args.gguf_file else "")
        + (f" at {args.revision}" if args.revision else "")
        + f"; loaded from {base.model}.",
        "SFT data: "
        f"{'the bundled instructions_mini.jsonl' if args.data == DEFAULT_DATA else args.data}"
        f" ({n_examples} examples), template: {args.template}"
        + "; loss on the response tokens (and end-of-sequence) only.",
        *([preferences] if n_pairs is not None else []),
        f"Training (trl, float32): {args.epochs} epoch(s) per stage, batch size {args.batch_size}, "
        f"max length {args.max_length}, AdamW, weight decay {args.weight_decay}, {warmup}, "
        f"gradient norm clipped at 1, peak LR {rates}; LoRA r={args.lora_r}, "
        f"alpha={args.lora_alpha}, dropout={args.lora_dropout}, targets "
        f"{','.join(args.lora_target_modules or ['peft default'])}; seed {args.seed}"
        + (f", at most {args.max_steps} steps per method" if args.max_steps else "")
        + ".",
        f"Evaluation: {args.tasks}"
        + (f", limit {args.limit}" if args.limit else "")
        + (f", {args.num_fewshot}-shot" if args.num_fewshot is not None else "")
        + ".",
    ]
    for method in trained:
        losses = ", ".join(f"{loss:.3f}" for loss in _epoch_losses(args.out / method))
        lines.append(f"Mean training loss per epoch, {method}: {losses}.")
    return lines


def _comparison(
    points: Sequence[tuple[str, int, PointSpec]],
    methods: Sequence[str],
    written: StudyReport | None,
    seen: Collection[Fact],
) -> Curves | None:
    """The curves of the ``points`` (``checkpoint_points``) with results in the study's report,
    the base model's (epoch 0) under every method; None when no point has any."""
    if written is None:
        return None
    entries: dict[str, dict[int, dict]] = {method: {} for method in methods}
    for method, epoch, spec in points:
        if spec.name in written.results:
            continued = [m for m in methods if CHAINED.get(m) == method]  # type: ignore[call-overload]
            for target in methods if method == "base" else [method, *continued]:
                entries[target][epoch] = written.results[spec.name].entries
    compared = curves(entries, seen, written.report.options)
    return compared if compared.rows else None


def _missing_trainer() -> str | None:
    """The message for a missing ``tune`` extra (trl, which brings accelerate), else None."""
    try:
        import trl  # noqa: F401 - only whether it imports
    except ImportError as error:
        return (
            f"calib-tune trains with trl, which is not installed ({error}): install the package's "
            '"tune" extra, e.g. pip install -e ".[tune]" in a checkout'
        )
    return None


def _process_count() -> int:
    """How many processes run calib-tune (``accelerate launch``'s, 1 run alone)."""
    from accelerate import PartialState

    return PartialState().num_processes


def main(argv: Sequence[str] | None = None) -> int:
    """Run calib-tune with ``argv`` (default: the process's arguments); returns the exit
    status (see the module docstring)."""
    args = parser().parse_args(argv)
    missing = _missing_trainer()
    if missing:
        print(missing, file=sys.stderr)
        return EXIT_BAD_INPUT
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    try:
        limit = parse_limit(args.limit, tasks)
    except StudyError as error:
        print(f"calib-tune: --limit: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.revision and args.gguf_file:
        print("calib-tune: --revision does not apply to a --gguf-file model", file=sys.stderr)
        return EXIT_BAD_INPUT
    executor = None
    if args.executor is not None:
        try:
            executor = load_executor(args.executor)
            if executor.kind == "slurm":
                import_submitit()
        except StudyError as error:
            print(f"calib-tune: --executor {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
    on_slurm = executor is not None and executor.kind == "slurm"
    processes = _process_count() if on_slurm else 1
    if processes > 1:
        print(
            f"calib-tune: --executor {args.executor}: kind 'slurm' submits the jobs from one "
            f"process, not {processes} (run calib-tune without accelerate launch)",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    settings = EvalSettings(
        tasks=tasks,
        num_fewshot=args.num_fewshot,
        limit=limit,
        batch_size=args.eval_batch_size,
        device=args.eval_device or args.device,
    )
    try:
        examples = load_instructions(args.data)
        dpo = any(is_dpo(m) for m in args.methods)
        pairs = load_preferences(args.preferences) if dpo else None
        template = _template(args.template)
        base = _base_model(args)
        configs = {method: _train_config(args, method) for method in args.methods}
        preflight(base, template, list(configs.values()))
        runs = {
            method: MethodRun(
                config, (pairs or []) if is_dpo(method) else examples, args.out / method
            )
            for method, config in configs.items()
        }
        checkpoints: dict[str, list[Path]] = {}
        if not on_slurm:  # here, in order: an SFT run comes before the DPO run after it
            for method, run in runs.items():
                sft = CHAINED.get(method)  # type: ignore[call-overload]
                start = checkpoints[sft][-1] if sft else None
                checkpoints[method] = train(
                    base, run.data, template, run.config, run.run_dir, None, start
                )
    except (ValueError, OSError) as error:  # DataError is a ValueError; OSError: model loading
        print(f"calib-tune: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    layout = StudyLayout(args.out / "eval")
    failed_jobs: list[str] = []
    if on_slurm:
        try:
            ended = run_methods_slurm(
                executor, base, template, runs, None if args.no_eval else settings, args.out
            )
        except SubmissionError as error:
            print(f"calib-tune: {error}", file=sys.stderr)
            return EXIT_SOME_FAILED
        except KeyboardInterrupt:
            print("\ncalib-tune: interrupted; run it again to resume", file=sys.stderr)
            return EXIT_INTERRUPTED
        checkpoints, outcomes, failed_jobs = ended.checkpoints, ended.outcomes, ended.failed
        if args.no_eval:
            return EXIT_SOME_FAILED if failed_jobs else EXIT_OK
        points = checkpoint_points(base, checkpoints)
    else:
        from accelerate import PartialState

        if args.no_eval or not PartialState().is_main_process:
            return EXIT_OK
        points = checkpoint_points(base, checkpoints)
        entries = [PointEntry(spec.name, spec) for _, _, spec in points]
        outcomes = run_points(entries, settings, layout)
    try:
        written = write_study_report(outcomes, layout)
    except OSError as error:
        print(
            f"calib-tune: cannot write the report into {layout.report_dir}: {error}",
            file=sys.stderr,
        )
        return EXIT_SOME_FAILED
    trained = [method for method in args.methods if method in checkpoints]
    compared = _comparison(points, trained, written, seen_facts(examples))
    if compared is None:
        print(
            f"calib-tune: no checkpoint has results to compare; see {layout.root / 'logs'}",
            file=sys.stderr,
        )
        return EXIT_SOME_FAILED
    figure = write_figure(compared, args.out)
    setup = _setup_lines(args, len(examples), len(pairs) if pairs else None, base, trained)
    (args.out / TABLE).write_text(comparison_markdown(compared, figure, setup), encoding="utf-8")
    print(f"comparison: {args.out / TABLE} and {args.out / figure}.png")
    finished = all(o.finished for o in outcomes) and not failed_jobs
    return EXIT_OK if finished else EXIT_SOME_FAILED
