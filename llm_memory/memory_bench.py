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

    python -m llm_memory.memory_bench --model PATH --task passkey --distances 256,1024,4096 \\
        --samples 20 --train_steps 200

What made the passkey checkpoint learn (``bench/README.md`` has the whole command): a curriculum
inside the window first, batches of 16 equally long probes at distances drawn per batch, chrono-
initialized LSTM gates, and a few thousand steps; the loss sits at chance for the first ~1,000.
"""

import json
import os
import random
import re
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    HfArgumentParser,
    TrainingArguments,
    default_data_collator,
)

from . import probes
from .memory import RecurrentTrainer, chrono_init_, shrink_window, window_size, windowed_forward
from .model_card import ModelCardInfo, build_model_card
from .probes import TASKS, Probe
from .train import last_complete_checkpoint

VARIANTS = ("attention", "lstm", "lstm+kv")
RESULTS_DIR = Path(os.environ.get("MEMORY_RESULTS_DIR", "bench/memory_results"))
# A fine-tuned memory model keeps its own reports here, inside its folder; the Memory tab reads them.
MODEL_RESULTS_DIR = "memory_results"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


class BenchError(ValueError):
    """Bad benchmark input; the message says what to fix."""


def variant_settings(variant: str, window: int, carry_kv: int | None = None) -> dict:
    """``windowed_forward`` keywords of a variant; ``carry_kv`` overrides lstm+kv's ``window // 2``."""
    if variant == "attention":
        return {"carry_state": False, "carry_kv": 0}
    if variant == "lstm":
        return {"carry_state": True, "carry_kv": 0}
    if variant == "lstm+kv":
        return {"carry_state": True, "carry_kv": window // 2 if carry_kv is None else carry_kv}
    raise BenchError(f"Unknown variant {variant!r}; choose from {', '.join(VARIANTS)}.")


def reach_start(position: int, window: int, carry_kv: int) -> int:
    """First token that attention at ``position`` can see when windows hold ``window - carry_kv`` new
    tokens each and also the ``carry_kv`` tokens before them."""
    window_start = position // (window - carry_kv) * (window - carry_kv)
    return max(0, window_start - carry_kv)


@dataclass
class ProbeRun:
    predicted_ids: list[int]  # argmax at each answer position, teacher forced
    correct: bool
    token_accuracy: float
    fact_in_reach: bool  # whole fact visible to attention from the last prompt token
    window_start: int  # first new token of the window holding the last prompt token
    attentions: tuple | None  # that window's attentions, when asked for: per layer (1, nh, T, S)


@torch.no_grad()
def run_probe(
    model,
    probe: Probe,
    window: int | None = None,
    carry_kv: int = 0,
    carry_state: bool = True,
    output_attentions: bool = False,
) -> ProbeRun:
    """Reads prompt and answer window by window and checks the argmax at every answer position."""
    window = window or window_size(model)
    ids = torch.tensor([probe.input_ids + probe.answer_ids], device=model.device)
    first = len(probe.input_ids) - 1  # the logits here predict the first answer token
    last = first + len(probe.answer_ids)
    step = window - carry_kv
    skip = 0
    if carry_kv == 0 and not (carry_state and model.config.use_lstm):
        # Nothing crosses a window boundary, so earlier windows cannot change these logits: skip them.
        skip = first // step * step
    predicted, attentions = [], None
    for out in windowed_forward(
        model,
        ids[:, skip:],
        window=window,
        carry_kv=carry_kv,
        carry_state=carry_state,
        output_attentions=output_attentions,
    ):
        start, end = out.start + skip, out.end + skip
        low, high = max(start, first), min(end, last)
        if low < high:
            predicted += out.logits[0, low - start : high - start].argmax(-1).tolist()
        if output_attentions and start <= first < end:
            attentions = out.attentions
    hits = [p == a for p, a in zip(predicted, probe.answer_ids, strict=True)]
    return ProbeRun(
        predicted_ids=predicted,
        correct=all(hits),
        token_accuracy=sum(hits) / len(hits),
        fact_in_reach=probe.fact_token_span[0] >= reach_start(first, window, carry_kv),
        window_start=first // step * step,
        attentions=attentions,
    )


def evaluate(model, eval_probes: list[Probe], window: int, carry_kv: int, carry_state: bool) -> dict:
    runs = [run_probe(model, probe, window, carry_kv, carry_state) for probe in eval_probes]
    n = len(runs)
    return {
        "accuracy": sum(run.correct for run in runs) / n,
        "token_accuracy": sum(run.token_accuracy for run in runs) / n,
        "fact_in_reach": sum(run.fact_in_reach for run in runs) / n,
        "samples": n,
    }


def window_guess(eval_probes: list[Probe], tokenizer, window: int) -> float:
    """Expected exact match of a reader that sees only the question's window (attention alone) and picks
    uniformly among the answers of the right form written there: the places named in it for qa1 and
    qa2, the numbers for passkey and kv; with none there, it guesses at chance. Beyond the window this
    is what attention alone can reach by guessing from context, the baseline the curves are read against."""
    if not eval_probes:
        raise ValueError("window_guess needs at least one probe.")
    total = 0.0
    for probe in eval_probes:
        first = len(probe.input_ids) - 1
        seen = tokenizer.decode(probe.input_ids[reach_start(first, window, 0) : probe.question_start])
        answer = probe.answer.strip()
        if probe.task in ("qa1", "qa2"):
            candidates = {place for place in probes.QA1_LOCATIONS if re.search(rf"\b{place}\b", seen)}
        else:
            candidates = set(re.findall(rf"\b\d{{{len(answer)}}}\b", seen))
        if candidates:
            total += (answer in candidates) / len(candidates)
        else:
            total += probes.chance_level(probe.task)["exact"]
    return total / len(eval_probes)


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


def training_probes(
    task: str | Sequence[str],
    ranges: list[tuple[int, int]],
    steps: int,
    batch_size: int,
    tokenizer,
    window: int,
    seed: int,
    align: bool = True,
) -> Dataset:
    """``steps`` batches of ``batch_size`` probes over train-split reviews, in order. Batches take the
    tasks in turn (one task or several); each draws one of ``ranges``, then one distance in it (at least
    the question's length); its probes are made equally long by more distractor text in front, so a
    batch needs no padding."""
    tasks = [task] if isinstance(task, str) else list(task)
    rng = random.Random(seed)
    distractors = probes.as_distractors(None, tokenizer, "train")
    shortest = {name: probes.min_distance(name, tokenizer) for name in tasks}
    rows = []
    for step in range(steps):
        name = tasks[step % len(tasks)]
        low, high = rng.choice(ranges)
        distance = max(shortest[name], rng.randint(low, high))
        batch = [
            probes.make_probe(name, distance, tokenizer, rng, distractors, align_to=window if align else None)
            for _ in range(batch_size)
        ]
        length = max(len(probe.input_ids) + len(probe.answer_ids) for probe in batch)
        rows += [
            probes.lengthen(
                probe, length - len(probe.input_ids) - len(probe.answer_ids), tokenizer, distractors, rng
            )
            for probe in batch
        ]
    return probes.probe_dataset(rows)


def fine_tune(
    model,
    tokenizer,
    task: str | Sequence[str],
    ranges: list[tuple[int, int]],
    steps: int,
    window: int,
    settings: dict,
    *,
    seed: int = 0,
    learning_rate: float = 1e-3,
    batch_size: int = 1,
    bptt_windows: int | None = None,
    align: bool = True,
    output_dir: str | os.PathLike | None = None,
    save_steps: int = 200,
) -> list[dict]:
    """``steps`` updates of ``batch_size`` probes each (see ``training_probes``), read window by window as
    the variant is evaluated: AdamW, warm-up, then a cosine decay to 5% of ``learning_rate``. Returns the
    Trainer's log history.

    With ``output_dir`` the Trainer keeps a checkpoint there every ``save_steps`` steps (the last two),
    and a stopped run started again with the same arguments resumes from its newest complete one."""
    train = training_probes(task, ranges, steps, batch_size, tokenizer, window, seed + 1, align)
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=str(output_dir or scratch),
            max_steps=steps,
            per_device_train_batch_size=batch_size,
            train_sampling_strategy="sequential",  # the batches are built in order, equal lengths in each
            learning_rate=learning_rate,
            warmup_steps=min(50, steps // 10),
            lr_scheduler_type="cosine_with_min_lr",
            lr_scheduler_kwargs={"min_lr_rate": 0.05},
            logging_steps=max(1, min(100, steps // 10)),
            save_strategy="steps" if output_dir else "no",
            save_steps=save_steps,
            save_total_limit=2,
            report_to="none",
            disable_tqdm=True,
            seed=seed,
            dataloader_pin_memory=False,
            use_cpu=DEVICE == "cpu",
        )
        trainer = RecurrentTrainer(
            model=model,
            args=args,
            train_dataset=train.remove_columns("distance"),
            data_collator=default_data_collator,
            window=window,
            bptt_windows=bptt_windows,
            **settings,
        )
        resume_from = last_complete_checkpoint(str(output_dir)) if output_dir else None
        if resume_from:
            print(f"Resuming from {resume_from}", flush=True)
        trainer.train(resume_from_checkpoint=resume_from)
    model.eval()
    return trainer.state.log_history


# ---------------------------------------------------------------------------------------------------
# Reporting: table, JSON, PNG and interactive HTML.
# ---------------------------------------------------------------------------------------------------


def markdown_table(report: dict) -> str:
    distances = report["distances"]
    cells = {(row["variant"], row["distance"]): row for row in report["results"]}
    lines = [
        f"Task `{report['task']}`, window {report['window']} tokens, {report['samples']} probes per distance; "
        "exact-match accuracy (per-token accuracy).",
        "",
        "| variant | " + " | ".join(f"{d}{'*' if d >= report['window'] else ''}" for d in distances) + " |",
        "|---|" + "---|" * len(distances),
    ]
    for variant in report["variants"]:
        values = [cells[(variant, d)] for d in distances]
        lines.append(
            f"| {variant} | "
            + " | ".join(f"{v['accuracy']:.2f} ({v['token_accuracy']:.2f})" for v in values)
            + " |"
        )
    chance = report["chance"]
    per_token = f" ({chance['per_token']:.2f})" if chance["per_token"] is not None else ""
    lines.append(f"| chance | {chance['exact']:.2g}{per_token} |" + " |" * (len(distances) - 1))
    guess = report.get("window_guess")
    if guess:
        lines.append(
            "| guess from the window | " + " | ".join(f"{guess[str(d)]:.2f}" for d in distances) + " |"
        )
    lines += ["", f"\\* beyond the window. Chance: {chance['note']}."]
    if guess:
        lines[-1] += (
            " Guess from the window: picking among the answers of the right form that the question's "
            "window names (attention alone, guessing from context)."
        )
    return "\n".join(lines)


def accuracy_figure(report: dict):
    """Plotly figure of exact-match accuracy against distance, one line per variant."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for variant in report["variants"]:
        rows = sorted((r for r in report["results"] if r["variant"] == variant), key=lambda r: r["distance"])
        figure.add_trace(
            go.Scatter(
                x=[r["distance"] for r in rows],
                y=[r["accuracy"] for r in rows],
                customdata=[[r["token_accuracy"], r["fact_in_reach"]] for r in rows],
                mode="lines+markers",
                name=variant,
                hovertemplate="distance %{x}<br>accuracy %{y:.2f}<br>per-token %{customdata[0]:.2f}"
                "<br>fact in attention's reach %{customdata[1]:.0%}<extra>" + variant + "</extra>",
            )
        )
    figure.add_hline(y=report["chance"]["exact"], line_dash="dot", annotation_text="chance")
    guess = report.get("window_guess")
    if guess:
        figure.add_trace(
            go.Scatter(
                x=report["distances"],
                y=[guess[str(d)] for d in report["distances"]],
                mode="lines",
                line={"dash": "dot", "color": "gray"},
                name="guess from the window",
                hovertemplate="distance %{x}<br>guess %{y:.2f}<extra>guess from the window</extra>",
            )
        )
    # A trace, not add_vline: on a log axis plotly places shapes by log10(x), which would push it off the chart.
    figure.add_trace(
        go.Scatter(
            x=[report["window"], report["window"]],
            y=[0, 1],
            mode="lines",
            line={"dash": "dash", "color": "black", "width": 1},
            name="attention window",
            hoverinfo="skip",
        )
    )
    figure.update_layout(
        title=f"{report['task']}: recall against distance to the fact",
        xaxis={
            "title": "distance from fact to end of question (tokens)",
            "type": "log",
            "tickvals": report["distances"],
        },
        yaxis={"title": "exact-match accuracy", "range": [-0.02, 1.02]},
        template="plotly_white",
    )
    return figure


def save_png(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for variant in report["variants"]:
        rows = sorted((r for r in report["results"] if r["variant"] == variant), key=lambda r: r["distance"])
        ax.plot([r["distance"] for r in rows], [r["accuracy"] for r in rows], marker="o", label=variant)
    ax.axhline(report["chance"]["exact"], color="gray", linestyle=":", label="chance")
    guess = report.get("window_guess")
    if guess:
        distances = report["distances"]
        ax.plot(
            distances,
            [guess[str(d)] for d in distances],
            color="gray",
            linestyle="-.",
            label="guess from the window",
        )
    ax.axvline(report["window"], color="black", linestyle="--", linewidth=0.8, label="attention window")
    ax.set_xscale("log")
    ax.set_xticks(report["distances"], [str(d) for d in report["distances"]])
    ax.minorticks_off()
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("distance from fact to end of question (tokens)")
    ax.set_ylabel("exact-match accuracy")
    ax.set_title(f"{report['task']}: recall against distance to the fact")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_report(path: str | os.PathLike) -> dict | None:
    """A benchmark JSON, or None when there is none at ``path``."""
    path = Path(path)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------------------------------


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
        default=None, metadata={"help": "Output JSON of a single task; default RESULTS_DIR/TASK.json."}
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
            "training_loss": training,
            "seconds": seconds,
        }
        for task in tasks
    }
    if args.save_dir:
        save_memory_model(
            kept, tokenizer, args.save_dir, reports, command or "python -m llm_memory.memory_bench"
        )
    return reports


def save_memory_model(model, tokenizer, folder: str, reports: dict[str, dict], command: str) -> None:
    """Saves the fine-tuned model with the benchmark's window as its own, its tokenizer, a model card
    with the command and the results, and each task's report as ``memory_results/TASK.json``."""
    first = next(iter(reports.values()))
    shrink_window(model, first["window"])
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
            f"{tasks} probes (`llm_memory.probes`): facts placed at set distances inside "
            "training-split reviews of the built-in movie review corpus, read window by window with "
            "the memory carried; the loss is on the answer only"
        ),
        config=model.config.to_dict(),
        num_parameters=model.num_parameters(),
        init_from=first["model"],
        evaluation=(
            "Exact-match recall against distance, on probes over test-split reviews "
            "(`python -m llm_memory.memory_bench`):\n\n"
            + "\n\n".join(markdown_table(report) for report in reports.values())
        ),
    )
    (Path(folder) / "README.md").write_text(build_model_card(info), encoding="utf-8")
    results = Path(folder) / MODEL_RESULTS_DIR
    results.mkdir(exist_ok=True)
    for task, report in reports.items():
        (results / f"{task}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def write_outputs(report: dict, json_path: Path, plot_dir: Path) -> dict[str, Path]:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    plot_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": json_path,
        "png": plot_dir / f"{json_path.stem}.png",
        "html": plot_dir / f"{json_path.stem}.html",
    }
    paths["json"].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    save_png(report, paths["png"])
    # plotly.js inline: the page works offline and from a file.
    accuracy_figure(report).write_html(paths["html"], include_plotlyjs=True, full_html=True)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser(BenchArguments)
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    try:
        reports = run_benchmark(
            args, "python -m llm_memory.memory_bench " + shlex.join(sys.argv[1:] if argv is None else argv)
        )
    except BenchError as error:
        print(f"memory_bench: error: {error}", file=sys.stderr)
        return 2
    results_dir = Path(args.results_dir) if args.results_dir else RESULTS_DIR
    written = []
    for task, report in reports.items():
        json_path = Path(args.json) if args.json else results_dir / f"{task}.json"
        paths = write_outputs(report, json_path, Path(args.plot_dir) if args.plot_dir else json_path.parent)
        print(markdown_table(report) + "\n")
        written += paths.values()
    print("Wrote " + ", ".join(str(path) for path in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
