"""Memory benchmark: probe accuracy against the distance to the fact, inside and beyond the window.

Follows the BABILong evaluation (Kuratov et al., 2024): accuracy of recalling a fact hidden in
distractor text, read as a curve against how far back the fact is. Three ways to read past the
attention window are compared, each fine-tuned on probes the way it is evaluated (windowed training
with back-propagation through the carried state, as in the Recurrent Memory Transformer), or, with
``--share_fine_tune``, one model fine-tuned with the LSTM state and read the three ways:

- ``attention``: window by window, nothing carried; a fact outside the question's window is lost.
- ``lstm``: the LSTM (h, c) state carried from window to window (segment recurrence).
- ``lstm+kv``: the state plus the last ``window // 2`` keys and values (Transformer-XL's cache).

An answer counts when every answer token is the argmax at its position, teacher forced: the same
test as greedy decoding when the answer is right, and cheaper. Usage::

    python -m llm_memory.memory --model PATH --task passkey --distances 256,1024,4096 \\
        --samples 20 --train_steps 200

What made the passkey checkpoint learn (docs/benchmarks.md has the whole command): a curriculum
inside the window first, batches of 16 equally long probes at distances drawn per batch, chrono-
initialized LSTM gates, and a few thousand steps; the loss sits at chance for the first ~1,000.
"""

import os
import random
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, HfArgumentParser

from llm_memory.hub.model_card import ModelCardInfo, build_model_card
from llm_memory.memory import probes
from llm_memory.memory.evaluate import VARIANTS, BenchError, evaluate, variant_settings, window_guess
from llm_memory.memory.finetune import DEVICE, fine_tune
from llm_memory.memory.probes import TASKS
from llm_memory.memory.recurrence import chrono_init_, shrink_window
from llm_memory.memory.report import (
    MODEL_RESULTS_DIR,
    fine_tuning_stages,
    markdown_table,
    model_reports,
    save_report,
    write_outputs,
)

# Where the reports go without --json or --results_dir (MEMORY_RESULTS_DIR moves it).
DEFAULT_RESULTS_DIR = "bench/memory_results"


@dataclass
class BenchArguments:
    model: str = field(metadata={"help": "Folder of a saved causal LM and its tokenizer."})
    task: str = field(
        default="passkey",
        metadata={
            "help": f"One of {', '.join(TASKS)}, or several comma-separated: one model is then fine-tuned on "
            "all of them (batches take the tasks in turn) and each is evaluated."
        },
    )
    distances: str = field(
        default="256,1024,4096",
        metadata={"help": "Comma-separated distances in tokens from the fact to the end of the question."},
    )
    samples: int = field(default=20, metadata={"help": "Evaluation probes per distance."})
    seed: int = field(default=0, metadata={"help": "Seed of the probes and of training."})
    json: str | None = field(
        default=None,
        metadata={
            "help": "Output JSON of a single task; default bench/memory_results/TASK.json (MEMORY_RESULTS_DIR)."
        },
    )
    results_dir: str | None = field(
        default=None,
        metadata={"help": "Folder of each task's TASK.json (and plots); default bench/memory_results."},
    )
    checkpoint_dir: str | None = field(
        default=None,
        metadata={
            "help": "Keep Trainer checkpoints of the fine-tuning here (outside the work tree); the same "
            "command run again resumes from the newest complete one."
        },
    )
    save_steps: int = field(default=200, metadata={"help": "Steps between checkpoints in --checkpoint_dir."})
    train_steps: int = field(
        default=100, metadata={"help": "Fine-tuning steps (one probe each) per variant; 0 evaluates as is."}
    )
    variants: str = field(
        default=",".join(VARIANTS), metadata={"help": "Comma-separated subset of variants."}
    )
    plot_dir: str | None = field(
        default=None, metadata={"help": "Folder of the PNG and HTML plots; default the JSON's folder."}
    )
    window: int | None = field(
        default=None, metadata={"help": "Window in tokens; default max_position_embeddings."}
    )
    carry_kv: int | None = field(
        default=None, metadata={"help": "Keys/values carried by lstm+kv; default window // 2."}
    )
    bptt_windows: int | None = field(
        default=None,
        metadata={"help": "Windows per truncated-BPTT segment in training; default: all of them."},
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "Fine-tuning learning rate."})
    train_distances: str | None = field(
        default=None,
        metadata={
            "help": "Distances of the training probes: comma-separated distances or ranges such as "
            "10-300; each batch draws one item, then a distance in it. Default: the evaluated ones."
        },
    )
    batch_size: int = field(default=8, metadata={"help": "Probes per fine-tuning step."})
    curriculum_steps: int = field(
        default=0,
        metadata={"help": "Fine-tuning steps on --curriculum_distances before the --train_steps ones."},
    )
    curriculum_distances: str | None = field(
        default=None,
        metadata={"help": "Distances (or ranges) of the curriculum steps; default: inside the window."},
    )
    chrono_init: int | None = field(
        default=None,
        metadata={
            "help": "Before fine-tuning, chrono-initialize the LSTM gate biases for memories of up to this "
            "many tokens (Tallec & Ollivier, 2018); by default the checkpoint's biases are kept."
        },
    )
    share_fine_tune: bool = field(
        default=False,
        metadata={
            "help": "Fine-tune one model, reading as --save_variant, and evaluate every variant on it "
            "(default: each variant is fine-tuned the way it is evaluated)."
        },
    )
    save_dir: str | None = field(
        default=None,
        metadata={"help": "Save the fine-tuned --save_variant model and its tokenizer to this folder."},
    )
    save_variant: str = field(
        default="lstm",
        metadata={"help": "Which fine-tuned variant --save_dir keeps (and --share_fine_tune trains)."},
    )
    align: bool = field(
        default=True,
        metadata={
            "help": "Make each probe fill whole windows, so the question ends a window and a fact is in "
            "attention's reach exactly when within the last window (--no_align: a random lead instead)."
        },
    )


def parse_list(text: str, name: str, kind=str) -> list:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise BenchError(f"--{name} is empty; give a comma-separated list.")
    try:
        return [kind(item) for item in items]
    except ValueError:
        raise BenchError(f"--{name} must be comma-separated integers, got {text!r}.") from None


def parse_ranges(text: str, name: str) -> list[tuple[int, int]]:
    """``"10-300,10-60,40"`` -> ``[(10, 300), (10, 60), (40, 40)]``: distance ranges, in tokens."""
    ranges = []
    for item in parse_list(text, name):
        low, _, high = item[1:].partition("-")  # item[0] may be a minus sign
        try:
            low, high = int(item[0] + low), int(high or item[0] + low)
        except ValueError:
            raise BenchError(
                f"--{name} must be comma-separated distances or ranges such as 10-300, got {text!r}."
            ) from None
        if not 0 < low <= high:
            raise BenchError(f"--{name} must all be positive, low before high, got {item!r}.")
        ranges.append((low, high))
    return ranges


def check_arguments(args: BenchArguments) -> tuple[list[str], list[int], list[str]]:
    tasks = parse_list(args.task, "task")
    for task in tasks:
        if task not in TASKS:
            raise BenchError(f"Unknown task {task!r}; choose one of {', '.join(TASKS)}.")
    if len(set(tasks)) != len(tasks):
        raise BenchError(f"--task names a task twice: {args.task!r}.")
    if args.json and len(tasks) > 1:
        raise BenchError("--json names one file; with several tasks use --results_dir.")
    if args.save_steps < 1:
        raise BenchError(f"--save_steps must be at least 1, got {args.save_steps}.")
    distances = parse_list(args.distances, "distances", int)
    if any(d <= 0 for d in distances):
        raise BenchError(f"--distances must all be positive (tokens), got {args.distances!r}.")
    variants = parse_list(args.variants, "variants")
    for variant in variants:
        if variant not in VARIANTS:
            raise BenchError(f"Unknown variant {variant!r}; choose from {', '.join(VARIANTS)}.")
    if args.save_variant not in VARIANTS:
        raise BenchError(f"Unknown --save_variant {args.save_variant!r}; choose from {', '.join(VARIANTS)}.")
    if args.save_dir and not args.share_fine_tune and args.save_variant not in variants:
        raise BenchError(f"--save_variant {args.save_variant!r} is not among --variants {args.variants!r}.")
    if args.samples < 1:
        raise BenchError(f"--samples must be at least 1, got {args.samples}.")
    if args.train_steps < 0 or args.curriculum_steps < 0:
        raise BenchError("--train_steps and --curriculum_steps must be 0 or more.")
    if args.batch_size < 1:
        raise BenchError(f"--batch_size must be at least 1, got {args.batch_size}.")
    if not Path(args.model).is_dir():
        raise BenchError(f"Model folder {args.model!r} not found; pass a folder written by save_pretrained.")
    if not (Path(args.model) / "config.json").is_file():
        raise BenchError(f"{args.model!r} has no config.json; pass a folder written by save_pretrained.")
    return tasks, sorted(set(distances)), variants


def run_benchmark(args: BenchArguments, command: str | None = None) -> dict[str, dict]:
    """Fine-tunes, evaluates every variant of every task at every distance and returns one report per
    task; with ``--save_dir`` also saves the fine-tuned model, its card stating ``command`` and the
    reports (``memory_results/TASK.json`` in the folder: the Memory tab shows those)."""
    tasks, distances, variants = check_arguments(args)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    config = AutoConfig.from_pretrained(args.model)
    window = args.window or config.max_position_embeddings
    if not 0 < window <= config.max_position_embeddings:
        raise BenchError(
            f"--window must be in [1, {config.max_position_embeddings}] for this model, got {window}."
        )
    if args.carry_kv is not None and not 0 <= args.carry_kv < window:
        raise BenchError(f"--carry_kv must be in [0, window={window}), got {args.carry_kv}.")
    train_ranges = parse_ranges(args.train_distances or args.distances, "train_distances")
    curriculum_ranges = parse_ranges(
        args.curriculum_distances or f"1-{max(1, window // 2)}", "curriculum_distances"
    )
    if args.chrono_init is not None and not config.use_lstm:
        raise BenchError("--chrono_init needs a model with an LSTM (use_lstm=true).")
    if args.chrono_init is not None and args.chrono_init < 3:
        raise BenchError(f"--chrono_init must be at least 3 tokens, got {args.chrono_init}.")
    if not config.use_lstm and any(v != "attention" for v in variants):
        print("note: this model has no LSTM, so the lstm variants carry nothing but keys/values.")
    # Probes first: a distance too short for a question fails before any model is loaded.
    distractors = probes.as_distractors(None, tokenizer, "test")
    align_to = window if args.align else None
    eval_probes = {}
    for task in tasks:
        rng = random.Random(args.seed)  # each task's probes as a run of that task alone draws them
        try:
            eval_probes[task] = {
                distance: [
                    probes.make_probe(task, distance, tokenizer, rng, distractors, align_to=align_to)
                    for _ in range(args.samples)
                ]
                for distance in distances
            }
        except ValueError as error:
            raise BenchError(str(error)) from None

    def tuned(variant: str):
        """The checkpoint, fine-tuned (curriculum, then the main steps) to read as ``variant`` does."""
        settings = variant_settings(variant, window, args.carry_kv)
        model = AutoModelForCausalLM.from_pretrained(args.model).to(DEVICE)
        history = []
        if args.train_steps and args.chrono_init is not None:
            chrono_init_(model, args.chrono_init, seed=args.seed)
        for stage, ranges, steps in (
            ("curriculum", curriculum_ranges, args.curriculum_steps if args.train_steps else 0),
            ("main", train_ranges, args.train_steps),
        ):
            if steps:
                log = fine_tune(
                    model,
                    tokenizer,
                    tasks,
                    ranges,
                    steps,
                    window,
                    settings,
                    seed=args.seed,
                    learning_rate=args.learning_rate,
                    batch_size=args.batch_size,
                    bptt_windows=args.bptt_windows,
                    align=args.align,
                    output_dir=Path(args.checkpoint_dir) / f"{variant}-{stage}"
                    if args.checkpoint_dir
                    else None,
                    save_steps=args.save_steps,
                )
                history += [{**row, "stage": stage} for row in log if "loss" in row]
        return model.eval(), history

    started, results, training = time.time(), {task: [] for task in tasks}, {}
    model = shared = kept = None
    for variant in variants:
        settings = variant_settings(variant, window, args.carry_kv)
        if args.share_fine_tune:
            if shared is None:
                shared, training[args.save_variant] = tuned(args.save_variant)
            model = shared
        elif model is None or args.train_steps:
            # Each variant is fine-tuned from the same weights, the way it is then evaluated.
            model, training[variant] = tuned(variant)
        for task in tasks:
            for distance in distances:
                row = evaluate(
                    model, eval_probes[task][distance], window, settings["carry_kv"], settings["carry_state"]
                )
                results[task].append({"variant": variant, "distance": distance, **settings, **row})
                print(
                    f"{task:>7} {variant:>9} distance {distance:>6}: accuracy {row['accuracy']:.2f}",
                    flush=True,
                )
        if variant == args.save_variant or args.share_fine_tune:
            kept = model
    seconds = round(time.time() - started, 1)
    # A folder that was itself fine-tuned here carries its stages; this run adds one when it trains.
    stages = fine_tuning_stages(model_reports(args.model))
    if args.train_steps or args.curriculum_steps:
        stages.append(
            {
                "model": str(args.model),
                "tasks": tasks,
                "curriculum_steps": args.curriculum_steps,
                "train_steps": args.train_steps,
                "command": command,
            }
        )
    reports = {
        task: {
            "task": task,
            "model": str(args.model),
            "trained_tasks": tasks if args.train_steps else [],
            "window": window,
            "distances": distances,
            "variants": variants,
            "samples": args.samples,
            "seed": args.seed,
            "train_steps": args.train_steps,
            "train_distances": args.train_distances or args.distances,
            "batch_size": args.batch_size,
            "curriculum_steps": args.curriculum_steps,
            "curriculum_distances": args.curriculum_distances,
            "chrono_init": args.chrono_init,
            "share_fine_tune": args.share_fine_tune,
            "learning_rate": args.learning_rate,
            "bptt_windows": args.bptt_windows,
            "aligned": args.align,
            "chance": probes.chance_level(task),
            "window_guess": {
                str(distance): window_guess(eval_probes[task][distance], tokenizer, window)
                for distance in distances
            },
            "results": results[task],
            "stages": stages,
            "command": command,
            "training_loss": training,
            "seconds": seconds,
        }
        for task in tasks
    }
    if args.save_dir:
        save_memory_model(kept, tokenizer, args.save_dir, reports, command or "python -m llm_memory.memory")
    return reports


def save_memory_model(model, tokenizer, folder: str, reports: dict[str, dict], command: str) -> None:
    """Saves the fine-tuned model with the benchmark's window as its own, its tokenizer, a model card
    with the command and the results, and each task's report as ``memory_results/TASK.json``."""
    first = next(iter(reports.values()))
    shrink_window(model, first["window"], tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    tasks = ", ".join(reports)
    info = ModelCardInfo(
        model_name=Path(folder).name,
        task="lm",
        metrics={},
        command=command,
        dataset_name=f"{tasks} memory probes in movie reviews",
        dataset_type="memory-probes-" + "-".join(reports),
        dataset_description=(
            f"{tasks} probes (`llm_memory.memory.probes`): facts placed at set distances inside "
            "training-split reviews of the built-in movie review corpus, read window by window with "
            "the memory carried; the loss is on the answer only"
        ),
        config=model.config.to_dict(),
        num_parameters=model.num_parameters(),
        init_from=first["stages"][0]["model"] if first["stages"] else first["model"],
        earlier_commands=[stage["command"] or "(command not recorded)" for stage in first["stages"][:-1]],
        evaluation=(
            "Exact-match recall against distance, on probes over test-split reviews "
            "(`python -m llm_memory.memory`):\n\n"
            + "\n\n".join(markdown_table(report) for report in reports.values())
        ),
    )
    (Path(folder) / "README.md").write_text(build_model_card(info), encoding="utf-8")
    results = Path(folder) / MODEL_RESULTS_DIR
    results.mkdir(exist_ok=True)
    for task, report in reports.items():
        save_report(report, results / f"{task}.json")


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser(BenchArguments, prog="python -m llm_memory.memory")
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    try:
        reports = run_benchmark(
            args, "python -m llm_memory.memory " + shlex.join(sys.argv[1:] if argv is None else argv)
        )
    except BenchError as error:
        print(f"memory_bench: error: {error}", file=sys.stderr)
        return 2
    results_dir = Path(args.results_dir or os.environ.get("MEMORY_RESULTS_DIR", DEFAULT_RESULTS_DIR))
    written = []
    for task, report in reports.items():
        json_path = Path(args.json) if args.json else results_dir / f"{task}.json"
        paths = write_outputs(report, json_path, Path(args.plot_dir) if args.plot_dir else json_path.parent)
        print(markdown_table(report) + "\n")
        written += paths.values()
    print("Wrote " + ", ".join(str(path) for path in written))
    return 0
