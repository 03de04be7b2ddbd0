"""Train the memory transformer with the Transformers Trainer: language modelling, classification, summarization.

Follows Transformers' ``run_clm.py``: argument dataclasses whose help text is the command line, parsed by
``HfArgumentParser`` together with ``TrainingArguments`` (so every Trainer flag works), data prepared by
the pure transforms of ``llm_memory.data``, and the ``Trainer`` underneath. Added here: JSON presets, three
tasks, early stopping, a throughput/MFU log, progress with an ETA and a CSV of every log
(``llm_memory.training_log``, which also plots it), a stop on a non-finite loss, and an output folder that is a
complete Hub model repository, written only once training has succeeded.

Examples::

    python -m llm_memory.train --preset configs/tiny.json --output_dir runs/tiny
    python -m llm_memory.train --preset configs/small.json --output_dir runs/small-lm
    python -m llm_memory.train --preset configs/small.json --task classification \\
        --init_from runs/small-lm --output_dir runs/small-sentiment
    python -m llm_memory.train --preset configs/small.json --task summarization --output_dir runs/small-sum
    python -m llm_memory.train --train_file train.txt --validation_file valid.txt --output_dir runs/mine

A preset is a JSON object of defaults for any flag below, TrainingArguments' included; flags given on
the command line win. Keys starting with ``_`` are comments.

Interrupted runs continue from the last checkpoint in ``--output_dir`` with the same command plus
``--resume``.

Several GPUs or nodes: the same command under a launcher (DistributedDataParallel)::

    torchrun --nproc_per_node 8 -m llm_memory.train --preset configs/base.json --output_dir runs/base
    accelerate launch --multi_gpu --num_processes 8 -m llm_memory.train --preset configs/base.json ...
    # two nodes: run on each, HOST being the first node
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \
        -m llm_memory.train --preset configs/base.json --output_dir runs/base

``--per_device_train_batch_size`` is per process; the tokenizer is trained on the first process and sent
to the others. On CPUs the processes talk over gloo, on GPUs over NCCL, chosen by the Trainer. Fully
sharded data parallel (FSDP2; GPUs only, not covered by the tests) for models that do not fit one
device: add ``--fsdp --fsdp_config '{"reshard_after_forward": true}'`` (each ``MemoryTransformerBlock``
is wrapped, from the model's ``_no_split_modules``; ``"activation_checkpointing": true`` in the config
trades compute for memory). DeepSpeed goes through the Trainer's ``--deepspeed ds_config.json``.
"""

import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Literal, NamedTuple

import datasets
import numpy as np
import torch
import transformers
from datasets import DatasetDict
from safetensors import SafetensorError
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    GenerationConfig,
    HfArgumentParser,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
    set_seed,
)

from . import data
from .calibration import calibrate
from .configuration_memory_transformer import MemoryTransformerConfig
from .generation_settings import generation_config_defaults
from .memory import WindowedClassificationTrainer
from .model_card import ModelCardInfo, build_model_card, describe_dataset, launch_command
from .modeling_memory_transformer import (
    MemoryTransformerForCausalLM,
    MemoryTransformerForSequenceClassification,
)
from .tokenization import MIN_VOCAB_SIZE, train_tokenizer
from .training_log import LOG_FILE, ProgressCallback
from .weights import check_finite, describe_load_error

logger = logging.getLogger(__name__)

# The metric that picks the best checkpoint (load_best_model_at_end) and drives early stopping.
# Windows a classified text may span with --memory_windows: 16 x 256 tokens is past 99.9% of IMDB reviews.
MAX_MEMORY_WINDOWS = 16
BEST_MODEL_METRIC = {"lm": "loss", "classification": "f1", "summarization": "loss"}
DEFAULT_DATASET = {
    "lm": "movie_reviews",
    "classification": "movie_reviews",
    "summarization": "package_docstrings",
}
CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"

# Dense bf16 tensor-core peak per device from the vendors' datasheets (no sparsity); the longest matching
# name wins, so "H100 PCIe" is found before "H100" and "A100" before "A10".
PEAK_BF16_FLOPS = {
    "B200": 2250e12,
    "GH200": 989e12,
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "A10": 125e12,
    "L40S": 362e12,
    "L4": 121e12,
}

# The file that makes a folder look like a model: it is moved into the output folder last.
FINAL_MARKER = "config.json"


# ---------------------------------------------------------------------------------------------------
# Arguments.
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ModelArguments:
    """The model to train: a new one of the given size, or a checkpoint to fine-tune."""

    init_from: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "A model folder (a checkpoint or a finished run) to fine-tune instead of training from "
            "scratch; its tokenizer is used too and the size flags below are ignored. For classification "
            "from a language model, the LM head is dropped, the body kept and a new classifier head added."
        },
    )
    tokenizer_name: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "A tokenizer folder to use. Default: the --init_from folder's, else a byte-level BPE "
            "trained on the training split with --vocab_size."
        },
    )
    vocab_size: int = dataclasses.field(
        default=8192,
        metadata={"help": f"Size of the tokenizer trained when none is given (at least {MIN_VOCAB_SIZE})."},
    )
    hidden_size: int = dataclasses.field(default=256, metadata={"help": "Width of the model."})
    num_hidden_layers: int = dataclasses.field(default=4, metadata={"help": "Number of transformer blocks."})
    num_attention_heads: int = dataclasses.field(
        default=4, metadata={"help": "Attention heads per block; must divide --hidden_size."}
    )
    intermediate_size: int = dataclasses.field(default=1024, metadata={"help": "Width of the MLP."})
    max_position_embeddings: int = dataclasses.field(
        default=256, metadata={"help": "Attention window in tokens: the longest sequence the model reads."}
    )
    position_embedding_type: Literal["learned", "sinusoidal", "rope"] = dataclasses.field(
        default="learned", metadata={"help": "How positions are encoded."}
    )
    use_lstm: bool = dataclasses.field(
        default=True, metadata={"help": "Add the LSTM memory layer after the transformer blocks."}
    )
    lstm_num_layers: int = dataclasses.field(default=1, metadata={"help": "Layers of the LSTM memory."})
    hidden_dropout: float = dataclasses.field(
        default=0.0, metadata={"help": "Dropout on embeddings and residual branches."}
    )
    attention_dropout: float = dataclasses.field(
        default=0.0, metadata={"help": "Dropout on attention weights."}
    )
    attn_implementation: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Attention kernel: eager, sdpa, flash_attention_2 or flex_attention. Default: sdpa."
        },
    )


@dataclasses.dataclass
class DataTrainingArguments:
    """What to train on, as in run_clm.py, plus the task and its columns."""

    task: Literal["lm", "classification", "summarization"] = dataclasses.field(
        default="lm",
        metadata={
            "help": "lm: next-token prediction on text blocks. classification: a label per text. "
            "summarization: continue `document <|sep|>` with the summary (loss on the summary only)."
        },
    )
    dataset_name: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "A built-in corpus (movie_reviews, docstrings) or a dataset id for datasets.load_dataset. "
            "Default when no --train_file is given either: movie_reviews (docstrings for summarization)."
        },
    )
    dataset_config_name: str | None = dataclasses.field(
        default=None, metadata={"help": "The configuration name of the dataset (datasets.load_dataset)."}
    )
    train_file: str | None = dataclasses.field(
        default=None,
        metadata={"help": "A local training file: .txt (a text per line), .csv, .json(l), .parquet."},
    )
    validation_file: str | None = dataclasses.field(
        default=None, metadata={"help": "A local validation file, same format as --train_file."}
    )
    validation_split_percentage: int = dataclasses.field(
        default=5,
        metadata={"help": "Percent of train held out for validation when there is no validation split."},
    )
    keep_linebreaks: bool = dataclasses.field(
        default=True, metadata={"help": "Keep line breaks when reading .txt files."}
    )
    text_column_name: str = dataclasses.field(
        default="text", metadata={"help": "Column with the text (lm, classification)."}
    )
    label_column_name: str = dataclasses.field(
        default="label", metadata={"help": "Column with the class: names or integer ids (classification)."}
    )
    document_column_name: str = dataclasses.field(
        default="document", metadata={"help": "Column with the text to summarize (summarization)."}
    )
    summary_column_name: str = dataclasses.field(
        default="summary", metadata={"help": "Column with the reference summary (summarization)."}
    )
    block_size: int | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Tokens per training sequence: the block length (lm) or the length texts are cut to "
            "(classification, summarization). At most the model's max_position_embeddings, its default."
        },
    )
    truncation_side: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Which end of a text longer than --block_size is cut (classification): right keeps the "
            "start, left keeps the end. Saved with the tokenizer, so pipelines read texts the same way. "
            "Default: the tokenizer's own (right for a new one).",
            "choices": ["right", "left"],
        },
    )
    max_train_samples: int | None = dataclasses.field(
        default=None,
        metadata={"help": "Keep only the first N training rows (texts, before tokenizing), for quick runs."},
    )
    max_eval_samples: int | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Keep only the first N validation rows; also caps the summaries generated for ROUGE."
        },
    )
    generation_max_length: int = dataclasses.field(
        default=64, metadata={"help": "Longest summary generated for the ROUGE evaluation, in tokens."}
    )
    memory_windows: int = dataclasses.field(
        default=1,
        metadata={
            "help": "Classification with the LSTM memory: read each text (its last N x --block_size tokens) "
            "window by window, the LSTM state carried from window to window and trained through, so the "
            f"label can depend on what earlier windows held. 1 to {MAX_MEMORY_WINDOWS}; 1 (default) reads "
            "one window."
        },
    )


@dataclasses.dataclass
class RunArguments:
    """How the run is driven: presets, resuming, stopping, reporting."""

    preset: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "A JSON file of defaults for any flag (e.g. configs/small.json, or just `small` for the "
            "project's configs/small.json). Flags on the command line override it."
        },
    )
    resume: bool = dataclasses.field(
        default=False,
        metadata={"help": "Continue an interrupted run from the last checkpoint in --output_dir."},
    )
    overwrite_output_dir: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "Start afresh in an --output_dir that holds a previous run (its checkpoints are deleted)."
        },
    )
    early_stopping_patience: int | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Stop after this many evaluations without improvement of --metric_for_best_model "
            "(default per task: loss for lm and summarization, f1 for classification). Needs --eval_strategy."
        },
    )
    peak_flops: float | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Peak FLOP/s of one device, for the model FLOPs utilization (MFU) in the logs. Default: "
            "the dense bf16 peak of a known GPU (H100/H200 ~989e12, A100 312e12, ...); no MFU otherwise."
        },
    )
    weights_digest_dir: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Each process writes the SHA-256 of its final weights to DIR/rank<N>.sha256, to check "
            "that distributed replicas agree."
        },
    )


# Our defaults for TrainingArguments (a preset or the command line still wins): count the input tokens
# for the throughput log, and keep a NaN loss visible in the logs so that training stops on it.
TRAINING_DEFAULTS = {"include_num_input_tokens_seen": True, "logging_nan_inf_filter": False}


class Arguments(NamedTuple):
    model: ModelArguments
    data: DataTrainingArguments
    run: RunArguments
    training: TrainingArguments
    argv: list[str]


def make_parser() -> HfArgumentParser:
    return HfArgumentParser(
        (ModelArguments, DataTrainingArguments, RunArguments, TrainingArguments),
        prog="python -m llm_memory.train",
        description="Train the memory transformer (see the module docstring for examples).",
    )


def resolve_preset_path(preset: str) -> Path:
    path = Path(preset)
    if not path.is_file() and not path.suffix and (CONFIGS_DIR / f"{preset}.json").is_file():
        path = CONFIGS_DIR / f"{preset}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIGS_DIR.glob("*.json"))) or "none"
        raise ValueError(
            f"The preset file {preset!r} does not exist; pass a JSON file (project presets: {known})."
        )
    return path


def read_preset(preset: str, parser: HfArgumentParser) -> dict:
    """The settings of a preset file, checked against the parser's flags; ``_`` keys are comments."""
    path = resolve_preset_path(preset)
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"The preset {str(path)!r} is not valid JSON: {err}.") from err
    if not isinstance(settings, dict):
        raise ValueError(f"The preset {str(path)!r} must hold a JSON object of flag names and values.")
    flags = {action.dest for action in parser._actions} - {"help", "preset"}
    settings = {key: value for key, value in settings.items() if not key.startswith("_")}
    unknown = sorted(set(settings) - flags)
    if unknown:
        raise ValueError(
            f"The preset {str(path)!r} sets unknown flag(s) {', '.join(unknown)}; "
            "see `python -m llm_memory.train --help` for the flags."
        )
    return settings


def parse_args(argv: Sequence[str] | None = None) -> Arguments:
    """Parses the command line on top of the preset's defaults; task-dependent defaults are filled in."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser()
    parser.set_defaults(**TRAINING_DEFAULTS)
    known, _ = parser.parse_known_args(argv)
    preset = read_preset(known.preset, parser) if known.preset else {}
    parser.set_defaults(**preset)
    task = parser.parse_known_args(argv)[0].task
    parser.set_defaults(
        **{
            key: value
            for key, value in {
                "metric_for_best_model": BEST_MODEL_METRIC[task],
                "output_dir": f"runs/{task}",
            }.items()
            if key not in preset
        }
    )
    model_args, data_args, run_args, training_args = parser.parse_args_into_dataclasses(
        args=argv, look_for_args_file=False
    )
    return Arguments(model_args, data_args, run_args, training_args, argv)


# ---------------------------------------------------------------------------------------------------
# Checks that need no data: run before anything slow.
# ---------------------------------------------------------------------------------------------------


def config_from_args(model_args: ModelArguments, **extra) -> MemoryTransformerConfig:
    """A new model's config; raises ValueError naming the flag when the sizes cannot work."""
    return MemoryTransformerConfig(
        vocab_size=extra.pop("vocab_size", model_args.vocab_size),
        hidden_size=model_args.hidden_size,
        num_hidden_layers=model_args.num_hidden_layers,
        num_attention_heads=model_args.num_attention_heads,
        intermediate_size=model_args.intermediate_size,
        max_position_embeddings=model_args.max_position_embeddings,
        position_embedding_type=model_args.position_embedding_type,
        use_lstm=model_args.use_lstm,
        lstm_num_layers=model_args.lstm_num_layers,
        hidden_dropout=model_args.hidden_dropout,
        attention_dropout=model_args.attention_dropout,
        **extra,
    )


def require_model_folder(path: str, flag: str) -> None:
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"{flag} {path!r} is not a model folder (no config.json there); check the path.")


def checkpoint_is_complete(folder: str) -> bool:
    """Whether a ``checkpoint-<step>`` folder was written to the end: the Trainer writes its
    trainer_state.json last, after the weights (a run killed while saving leaves it out or cut)."""
    try:
        json.loads(Path(folder, "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return any(Path(folder, name).is_file() for name in ("model.safetensors", "pytorch_model.bin"))


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest complete checkpoint of ``output_dir``; incomplete newer ones are named in a warning."""
    if not os.path.isdir(output_dir):
        return None
    steps = sorted(
        (int(name.split("-", 1)[1]), name)
        for name in os.listdir(output_dir)
        if re.fullmatch(r"checkpoint-\d+", name) and os.path.isdir(os.path.join(output_dir, name))
    )
    for _, name in reversed(steps):
        folder = os.path.join(output_dir, name)
        if checkpoint_is_complete(folder):
            return folder
        logger.warning("Skipping %s: it is incomplete (the run was stopped while saving it).", folder)
    return None


def find_checkpoint(args: Arguments) -> str | None:
    """The checkpoint to resume from, or None for a fresh run; refuses to mix a fresh run into an old one."""
    training_args, run_args = args.training, args.run
    if training_args.resume_from_checkpoint:
        require_model_folder(training_args.resume_from_checkpoint, "--resume_from_checkpoint")
        return training_args.resume_from_checkpoint
    output_dir = training_args.output_dir
    last = last_complete_checkpoint(output_dir)
    if run_args.resume:
        if last is None:
            raise ValueError(
                f"--resume: there is no complete checkpoint (checkpoint-<step> folder) in {output_dir!r} to "
                "continue from; run without --resume to start, or check --output_dir."
            )
        return last
    previous = last is not None or os.path.isfile(os.path.join(output_dir, FINAL_MARKER))
    if previous and not run_args.overwrite_output_dir:
        raise ValueError(
            f"--output_dir {output_dir!r} already holds a run; pass --resume to continue it, "
            "--overwrite_output_dir to start afresh there, or choose another --output_dir."
        )
    others = foreign_entries(output_dir)
    if not previous and others and not run_args.overwrite_output_dir:
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise ValueError(
            f"--output_dir {output_dir!r} is not empty and holds no run of this trainer ({shown}); the model "
            "would be written among those files, its card replacing any README.md. Choose a new or empty "
            "folder, or pass --overwrite_output_dir to write there anyway."
        )
    return None


def foreign_entries(output_dir: str) -> list[str]:
    """The names in ``output_dir`` that a run of this trainer did not write (sorted; [] if none)."""
    if not os.path.isdir(output_dir):
        return []
    ours = re.compile(r"checkpoint-\d+|runs|" + re.escape(LOG_FILE))
    return sorted(name for name in os.listdir(output_dir) if not ours.fullmatch(name))


def finished_run_metrics(args: Arguments) -> dict | None:
    """With --resume on a run that already wrote its final model: that run's metrics (nothing to do)."""
    output_dir = args.training.output_dir
    results = Path(output_dir, "all_results.json")
    if args.run.resume and Path(output_dir, FINAL_MARKER).is_file() and results.is_file():
        return json.loads(results.read_text())
    return None


def check_arguments(args: Arguments) -> None:
    """Raises ValueError for settings that cannot work, before any data is read."""
    model_args, data_args, run_args, training_args = args.model, args.data, args.run, args.training
    if model_args.init_from:
        require_model_folder(model_args.init_from, "--init_from")
        init_config = MemoryTransformerConfig.from_pretrained(model_args.init_from)
        max_positions = init_config.max_position_embeddings
    else:
        config_from_args(model_args)  # the size checks live in the config
        max_positions = model_args.max_position_embeddings
        if model_args.tokenizer_name is None and model_args.vocab_size < MIN_VOCAB_SIZE:
            raise ValueError(
                f"--vocab_size {model_args.vocab_size} is too small; use at least {MIN_VOCAB_SIZE}."
            )
    if model_args.tokenizer_name and not os.path.isdir(model_args.tokenizer_name):
        raise ValueError(
            f"--tokenizer_name {model_args.tokenizer_name!r} is not a folder; pass a tokenizer folder."
        )
    block_size = data_args.block_size or max_positions
    if not 0 < block_size <= max_positions:
        raise ValueError(
            f"--block_size {block_size} must be between 1 and the model's max_position_embeddings "
            f"({max_positions}); lower --block_size or raise --max_position_embeddings."
        )
    if data_args.task == "summarization" and not 0 < data_args.generation_max_length < block_size - 1:
        raise ValueError(
            f"--generation_max_length {data_args.generation_max_length} must be positive and leave room for "
            f"the document within --block_size {block_size}."
        )
    if not 1 <= data_args.memory_windows <= MAX_MEMORY_WINDOWS:
        raise ValueError(
            f"--memory_windows must be from 1 to {MAX_MEMORY_WINDOWS}, got {data_args.memory_windows}."
        )
    if data_args.memory_windows > 1:
        use_lstm = init_config.use_lstm if model_args.init_from else model_args.use_lstm
        if data_args.task != "classification" or not use_lstm:
            raise ValueError(
                "--memory_windows reads texts window by window through the LSTM memory for classification: "
                "pass --task classification and a model with the LSTM (--use_lstm true)."
            )
    for flag in ("max_train_samples", "max_eval_samples"):
        value = getattr(data_args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag} must be at least 1, got {value}.")
    if run_args.early_stopping_patience is not None:
        if run_args.early_stopping_patience < 1:
            raise ValueError("--early_stopping_patience must be at least 1.")
        if training_args.eval_strategy == "no":
            raise ValueError(
                "--early_stopping_patience needs evaluations during training: pass --eval_strategy steps "
                "(with --eval_steps) or epoch."
            )


# ---------------------------------------------------------------------------------------------------
# Data and tokenizer.
# ---------------------------------------------------------------------------------------------------


def dataset_source(data_args: DataTrainingArguments) -> str | None:
    """The dataset name to load, the task's built-in corpus when neither a name nor a file is given."""
    if data_args.dataset_name is None and data_args.train_file is None:
        return DEFAULT_DATASET[data_args.task]
    return data_args.dataset_name


def load_raw_dataset(data_args: DataTrainingArguments, seed: int) -> DatasetDict:
    """Train and validation rows, capped by --max_train_samples/--max_eval_samples."""

    def check(raw: DatasetDict) -> DatasetDict:
        data.check_columns(raw, task_columns(data_args))
        label_column = data_args.label_column_name if data_args.task == "classification" else None
        text_columns = [column for column in task_columns(data_args) if column != label_column]
        raw, dropped = data.check_cells(raw, text_columns, label_column, data_places(data_args))
        for split, count in dropped.items():
            if count and data_args.task != "lm":  # a text file's blank lines are no news for a language model
                logger.warning(
                    "Dropped %d row(s) of the %s split whose text is empty or missing.", count, split
                )
        return raw

    raw = data.load_text_dataset(
        check=check,
        dataset_name=dataset_source(data_args),
        dataset_config_name=data_args.dataset_config_name,
        train_file=data_args.train_file,
        validation_file=data_args.validation_file,
        validation_split_percentage=data_args.validation_split_percentage,
        seed=seed,
        keep_linebreaks=data_args.keep_linebreaks,
    )
    splits = {"train": raw["train"], "validation": raw["validation"]}  # a test split is not used here
    for split, limit in (("train", data_args.max_train_samples), ("validation", data_args.max_eval_samples)):
        if limit is not None:
            splits[split] = splits[split].select(range(min(limit, len(splits[split]))))
    return DatasetDict(splits)


def data_places(data_args: DataTrainingArguments) -> dict[str, str]:
    """How the messages name each split's source: its file, or the dataset."""
    if data_args.train_file:
        # Cells are checked before a validation split is carved from train, so only given files appear.
        return {
            "train": f"the train file {data_args.train_file!r}",
            "validation": f"the validation file {data_args.validation_file!r}",
        }
    name = dataset_source(data_args)
    return {split: f"the {split} split of the dataset {name!r}" for split in ("train", "validation")}


def task_columns(data_args: DataTrainingArguments) -> list[str]:
    if data_args.task == "classification":
        return [data_args.text_column_name, data_args.label_column_name]
    if data_args.task == "summarization":
        return [data_args.document_column_name, data_args.summary_column_name]
    return [data_args.text_column_name]


def encode_labels(raw: DatasetDict, label_column: str) -> tuple[DatasetDict, list[str]]:
    """One ClassLabel across splits (``data.encode_label_column``), checked to hold two classes or more."""
    raw, names = data.encode_label_column(raw, label_column)
    seen = sorted({int(label) for label in raw["train"][label_column]})
    if len(seen) < 2:
        only = ", ".join(names[i] for i in seen) or "none"
        raise data.DataError(
            f"Classification needs at least two classes, but the training labels in {label_column!r} hold "
            f"only one ({only}); check --label_column_name or the data."
        )
    unseen = sorted({int(label) for label in raw["validation"][label_column]} - set(seen))
    if unseen:
        raise data.DataError(
            f"The validation labels {', '.join(repr(names[i]) for i in unseen)} in {label_column!r} never "
            "appear in the training split, so the classifier cannot learn them; add training rows with "
            "them or remove those validation rows."
        )
    return raw, names


def tokenizer_texts(raw: DatasetDict, data_args: DataTrainingArguments):
    """The training split's text, for learning the tokenizer."""
    if data_args.task == "summarization":
        yield from raw["train"][data_args.document_column_name]
        yield from raw["train"][data_args.summary_column_name]
    else:
        yield from raw["train"][data_args.text_column_name]


def on_main_process(make, training_args: TrainingArguments):
    """Runs ``make()`` on the first process only and hands its result (or its error) to every process."""
    if training_args.world_size == 1:
        return make()
    result = None
    if training_args.process_index == 0:
        try:
            result = make()
        except Exception as err:  # re-raised everywhere, so no process waits forever
            result = err
    box = [result]
    torch.distributed.broadcast_object_list(box, src=0)
    if isinstance(box[0], Exception):
        raise box[0]
    return box[0]


def load_tokenizer(args: Arguments, raw: DatasetDict, checkpoint: str | None) -> PreTrainedTokenizerBase:
    model_args, data_args = args.model, args.data
    source = checkpoint or model_args.tokenizer_name or model_args.init_from
    if source is not None:
        tokenizer = AutoTokenizer.from_pretrained(source)
    else:
        max_positions = model_args.max_position_embeddings
        tokenizer = on_main_process(
            lambda: train_tokenizer(
                tokenizer_texts(raw, data_args),
                vocab_size=model_args.vocab_size,
                model_max_length=max_positions,
            ),
            args.training,
        )
    if data_args.truncation_side is not None:
        tokenizer.truncation_side = data_args.truncation_side
        tokenizer.init_kwargs["truncation_side"] = data_args.truncation_side  # saved with the tokenizer
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError("The tokenizer needs a pad and an eos token; pass a --tokenizer_name that has them.")
    if data_args.task == "summarization" and tokenizer.sep_token_id is None:
        raise ValueError(
            "Summarization needs a tokenizer with a sep token; pass a --tokenizer_name that has one."
        )
    return tokenizer


def prepare_datasets(
    raw: DatasetDict, tokenizer, data_args: DataTrainingArguments, block_size: int
) -> DatasetDict:
    if data_args.task == "classification":
        max_length = block_size * data_args.memory_windows
        return data.prepare_classification_dataset(
            raw, tokenizer, max_length, data_args.text_column_name, data_args.label_column_name
        )
    if data_args.task == "summarization":
        return data.prepare_summarization_dataset(
            raw, tokenizer, block_size, data_args.document_column_name, data_args.summary_column_name
        )
    return data.prepare_lm_dataset(raw, tokenizer, block_size, data_args.text_column_name)


def data_collator(task: str, tokenizer, memory_windows: int = 1):
    if task == "classification" and memory_windows > 1:
        # Windows are cut from the end of each row, so every text must end in the last column.
        left = copy.deepcopy(tokenizer)
        left.padding_side = "left"
        return DataCollatorWithPadding(left)
    if task == "classification":
        return DataCollatorWithPadding(tokenizer)
    if task == "summarization":
        # Pads labels with -100, so the padding is out of the loss like the document.
        return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=data.IGNORE_INDEX)
    return default_data_collator  # blocks are all block_size long


# ---------------------------------------------------------------------------------------------------
# Model.
# ---------------------------------------------------------------------------------------------------


def build_model(
    args: Arguments, tokenizer, label_names: list[str] | None = None, checkpoint: str | None = None
) -> MemoryTransformerForCausalLM | MemoryTransformerForSequenceClassification:
    """A new model sized by the flags, or the checkpoint / --init_from model with the task's head."""
    model_args, task = args.model, args.data.task
    source = checkpoint or model_args.init_from
    attn_implementation = model_args.attn_implementation or "sdpa"
    head = {}
    if task == "classification":
        head = {
            "num_labels": len(label_names),
            "id2label": dict(enumerate(label_names)),
            "label2id": {name: i for i, name in enumerate(label_names)},
        }
    model_class = (
        MemoryTransformerForSequenceClassification
        if task == "classification"
        else MemoryTransformerForCausalLM
    )
    if source is not None:
        # From a language model the classifier head is not in the checkpoint: the body loads, `score`
        # starts new; from a classifier with other classes, `score` is replaced.
        try:
            model = model_class.from_pretrained(
                source,
                attn_implementation=attn_implementation,
                ignore_mismatched_sizes=task == "classification",
                **head,
            )
            check_finite(model, source)
        except SafetensorError as err:
            raise ValueError(f"Could not load {source!r}: {describe_load_error(source, err)}") from err
        return model
    config = config_from_args(
        model_args,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        sep_token_id=tokenizer.sep_token_id,
        **head,
    )
    auto_class = AutoModelForSequenceClassification if task == "classification" else AutoModelForCausalLM
    return auto_class.from_config(config, attn_implementation=attn_implementation)


def matmul_parameters(model: nn.Module) -> int:
    """Parameters used in matrix products: all but embedding lookups, plus a tied output projection."""
    embedding_ids = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    count = sum(p.numel() for p in model.parameters() if id(p) not in embedding_ids)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and id(head.weight) in embedding_ids:
        count += head.weight.numel()
    return count


def training_flops_per_token(model: nn.Module, seq_len: int) -> float:
    """6N for the forward and backward matmuls plus 12·L·H·T for attention (PaLM, appendix B)."""
    config = model.config
    return 6 * matmul_parameters(model) + 12 * config.num_hidden_layers * config.hidden_size * seq_len


def device_peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).lower()
    for key in sorted(PEAK_BF16_FLOPS, key=len, reverse=True):
        if key.lower() in name:
            return PEAK_BF16_FLOPS[key]
    return None


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of every tensor of the state dict, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------
# Metrics.
# ---------------------------------------------------------------------------------------------------


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf  # exp overflows a float past ~709


def classification_metrics(eval_pred) -> dict[str, float]:
    """Accuracy and macro-F1 (every class counts the same, whatever its size)."""
    from sklearn.metrics import accuracy_score, f1_score  # here: a second's import only this task needs

    logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
    predictions = np.argmax(logits, axis=-1)
    return {
        "accuracy": float(accuracy_score(eval_pred.label_ids, predictions)),
        "f1": float(f1_score(eval_pred.label_ids, predictions, average="macro")),
    }


@torch.no_grad()
def generate_summaries(
    model, tokenizer, documents: Sequence[str], max_new_tokens: int, block_size: int, batch_size: int = 8
) -> list[str]:
    """Greedy summaries: each prompt is the document (cut to fit) followed by the separator token."""
    room = block_size - max_new_tokens - 1
    prompts = [
        data.summary_prompt(tokenizer, ids, room)
        for ids in tokenizer(list(documents), add_special_tokens=False)["input_ids"]
    ]
    model.eval()
    summaries = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        width = max(len(p) for p in batch)
        # Left padding, so every row's new tokens start at column `width`.
        input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in batch])
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        output = model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=attention_mask.to(model.device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        summaries += tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
    return [summary.strip() for summary in summaries]


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 in percent (Lin, 2004), with Porter stemming as in the summarization papers."""
    from rouge_score import rouge_scorer  # here: only summarization needs it (and nltk under it)

    kinds = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(kinds), use_stemmer=True)
    totals = dict.fromkeys(kinds, 0.0)
    for prediction, reference in zip(predictions, references, strict=True):
        for kind, score in scorer.score(reference, prediction).items():
            totals[kind] += score.fmeasure
    return {kind: 100 * total / max(len(predictions), 1) for kind, total in totals.items()}


# ---------------------------------------------------------------------------------------------------
# Callbacks.
# ---------------------------------------------------------------------------------------------------


class ThroughputCallback(TrainerCallback):
    """Adds ``tokens_per_second`` and ``mfu`` (model FLOPs utilization) to each training log.

    Tokens are the Trainer's count of input tokens over all processes (``--include_num_input_tokens_seen``,
    on by default here); time is the time spent inside training steps since the last log, so evaluation
    and checkpointing do not count.
    MFU = tokens/s per device × training FLOPs per token / the device's peak FLOP/s (absent when the
    peak is unknown, e.g. on a CPU).
    """

    def __init__(self, flops_per_token: float, peak_flops: float | None, num_processes: int):
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self.num_processes = num_processes
        self._tokens_at_log = 0
        self._step_seconds = 0.0
        self._step_start = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._tokens_at_log = state.num_input_tokens_seen  # nonzero when resuming

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._step_start is not None:
            self._step_seconds += time.perf_counter() - self._step_start

    def on_log(self, args, state, control, logs=None, **kwargs):
        tokens = state.num_input_tokens_seen - self._tokens_at_log
        if logs is None or "loss" not in logs or tokens <= 0 or self._step_seconds <= 0:
            return
        throughput = {"tokens_per_second": round(tokens / self._step_seconds, 1)}
        if self.peak_flops:
            per_device = tokens / self._step_seconds / self.num_processes
            throughput["mfu"] = round(per_device * self.flops_per_token / self.peak_flops, 4)
        # The printed line and the later callbacks read `logs`; the saved history is its own copy.
        logs.update(throughput)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(throughput)
        self._tokens_at_log = state.num_input_tokens_seen
        self._step_seconds = 0.0


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class NonFiniteLossCallback(TrainerCallback):
    """Stops training at the first log whose loss (or gradient norm) is NaN or infinite.

    Logged values are averaged over all processes, so every process stops at the same step. The
    checkpoint of that step is not saved, and ``run`` then raises TrainingDiverged instead of writing
    a model. Needs ``--logging_nan_inf_filter false`` (this script's default), or the Trainer hides a
    NaN loss behind the previous average.
    """

    def __init__(self):
        self.diverged: tuple[int, str, float] | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        # With fp16 an infinite gradient norm only makes the loss scaler skip a step.
        keys = ("loss", "eval_loss") if args.fp16 else ("loss", "grad_norm", "eval_loss")
        for key in keys:
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(value) and self.diverged is None:
                self.diverged = (state.global_step, key, value)
                control.should_training_stop = True
                control.should_save = False
                control.should_evaluate = False


# ---------------------------------------------------------------------------------------------------
# The finished folder.
# ---------------------------------------------------------------------------------------------------


def staging_dir(output_dir: str) -> Path:
    """A hidden sibling of the output folder where the final model is written before it moves in."""
    final = Path(output_dir).resolve()
    return final.parent / f".{final.name}.incomplete"


def move_into_place(staging: Path, output_dir: str) -> None:
    """Moves every file of ``staging`` into ``output_dir``, config.json last, then removes ``staging``.

    Until config.json arrives the folder does not look like a model (an older one, from the run that
    was resumed, goes first), so a run that dies here leaves no half-written model behind.
    """
    final = Path(output_dir)
    final.mkdir(parents=True, exist_ok=True)
    (final / FINAL_MARKER).unlink(missing_ok=True)
    for entry in sorted(staging.iterdir(), key=lambda p: p.name == FINAL_MARKER):
        os.replace(entry, final / entry.name)
    staging.rmdir()


def hyperparameters(args: Arguments, trainer: Trainer) -> dict:
    training_args = args.training
    return {
        "task": args.data.task,
        "block size": args.data.block_size,
        "steps": trainer.state.global_step,
        "epochs": round(trainer.state.epoch or 0, 3),
        "learning rate": training_args.learning_rate,
        "scheduler": training_args.lr_scheduler_type.value,
        "warmup steps": training_args.warmup_steps,
        "batch size per device": training_args.per_device_train_batch_size,
        "gradient accumulation": training_args.gradient_accumulation_steps,
        "processes": training_args.world_size,
        "weight decay": training_args.weight_decay,
        "optimizer": training_args.optim.value,
        "precision": "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32",
        "seed": training_args.seed,
    }


def save_final_model(
    trainer: Trainer, args: Arguments, metrics: dict[str, float], label_names: list[str] | None
) -> None:
    """Writes model, tokenizer, card and results to a sibling folder, then moves them into --output_dir."""
    output_dir = args.training.output_dir
    staging = staging_dir(output_dir)
    if trainer.is_world_process_zero():
        shutil.rmtree(staging, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(staging))  # every process: FSDP and DeepSpeed gather the weights here
    if trainer.is_world_process_zero():
        (staging / "training_args.bin").unlink(missing_ok=True)  # a pickle; the card has the command
        (staging / "all_results.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        trainer.state.save_to_json(str(staging / "trainer_state.json"))
        data_args = args.data
        dataset = describe_dataset(
            dataset_source(data_args),
            data_args.dataset_config_name,
            data_args.train_file,
            data_args.validation_file,
        )
        model = trainer.model
        card = ModelCardInfo(
            model_name=Path(output_dir).resolve().name,
            task=args.data.task,
            metrics=metrics,
            command=launch_command(args.argv),
            **dataset,
            config=model.config.to_dict(),
            hyperparameters=hyperparameters(args, trainer),
            num_parameters=model.num_parameters(),
            init_from=args.model.init_from,
            label_names=label_names,
        )
        (staging / "README.md").write_text(build_model_card(card), encoding="utf-8")
        move_into_place(staging, output_dir)
        # The finished folder is the model's repository: the Trainer's checkpoints served only to resume.
        for entry in Path(output_dir).glob("checkpoint-*"):
            if entry.is_dir():
                shutil.rmtree(entry)
    trainer.accelerator.wait_for_everyone()


def remove_previous_run(output_dir: str) -> None:
    """For --overwrite_output_dir: the old checkpoints go, and the folder stops looking like a model."""
    if not os.path.isdir(output_dir):
        return
    for entry in Path(output_dir).iterdir():
        if entry.is_dir() and entry.name.startswith("checkpoint-"):
            shutil.rmtree(entry)
    Path(output_dir, FINAL_MARKER).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------------------------------


def setup_logging(training_args: TrainingArguments) -> None:
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    # This script's own few lines show on the main process; the libraries stay at their level.
    # (the package's logger: the progress lines of llm_memory.training_log too)
    logging.getLogger("llm_memory").setLevel(
        min(log_level, logging.INFO) if training_args.should_log else log_level
    )
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)


class PreparedData(NamedTuple):
    raw: DatasetDict  # the rows, for the ROUGE references
    encoded: DatasetDict  # model inputs
    tokenizer: PreTrainedTokenizerBase
    label_names: list[str] | None
    block_size: int


def prepare_data(args: Arguments, checkpoint: str | None) -> PreparedData:
    """Loads the rows, checks them for the task, gets the tokenizer and encodes the rows."""
    model_args, data_args, training_args = args.model, args.data, args.training
    with training_args.main_process_first(desc="loading the dataset"):
        raw = load_raw_dataset(data_args, training_args.seed)
    label_names = None
    if data_args.task == "classification":
        raw, label_names = encode_labels(raw, data_args.label_column_name)
    tokenizer = load_tokenizer(args, raw, checkpoint)
    source = checkpoint or model_args.init_from
    max_positions = (
        MemoryTransformerConfig.from_pretrained(source).max_position_embeddings
        if source
        else model_args.max_position_embeddings
    )
    block_size = data_args.block_size or max_positions
    with training_args.main_process_first(desc="tokenizing the dataset"):
        encoded = prepare_datasets(raw, tokenizer, data_args, block_size)
    logger.info(
        "Task %s: %d training and %d validation examples of up to %d tokens, vocabulary %d",
        data_args.task,
        len(encoded["train"]),
        len(encoded["validation"]),
        block_size,
        len(tokenizer),
    )
    return PreparedData(raw, encoded, tokenizer, label_names, block_size)


def final_metrics(trainer: Trainer, train_metrics: dict, args: Arguments, prepared: PreparedData) -> dict:
    """Train and validation metrics; perplexity from the loss, and ROUGE of greedy summaries."""
    data_args = args.data
    metrics = {**train_metrics, **trainer.evaluate()}
    metrics["train_samples"] = len(prepared.encoded["train"])
    metrics["eval_samples"] = len(prepared.encoded["validation"])
    if data_args.task != "classification":
        metrics["eval_perplexity"] = perplexity(metrics["eval_loss"])
    if data_args.task == "summarization" and trainer.is_world_process_zero():
        rows = prepared.raw["validation"]
        summaries = generate_summaries(
            trainer.model,
            prepared.tokenizer,
            rows[data_args.document_column_name],
            data_args.generation_max_length,
            prepared.block_size,
            args.training.per_device_eval_batch_size,
        )
        scores = rouge_scores(summaries, rows[data_args.summary_column_name])
        metrics.update({f"eval_{kind}": value for kind, value in scores.items()})
    return metrics


def logging_steps_given(args: Arguments) -> bool:
    """Whether --logging_steps was chosen (on the command line or in the preset), not left at 500."""
    if any(arg == "--logging_steps" or arg.startswith("--logging_steps=") for arg in args.argv):
        return True
    return bool(args.run.preset) and "logging_steps" in read_preset(args.run.preset, make_parser())


def run(args: Arguments, callbacks: Sequence[TrainerCallback] = ()) -> dict[str, float]:
    """Trains, evaluates and writes the finished folder; returns the metrics (as in all_results.json).

    ``callbacks`` are added to the Trainer's (tests use them to interrupt a run).
    """
    data_args, run_args, training_args = args.data, args.run, args.training
    setup_logging(training_args)
    check_arguments(args)
    if (finished := finished_run_metrics(args)) is not None:
        logger.info(
            "%s holds a finished run, so --resume has nothing to continue and changes nothing; to train "
            "further, start a new run with --init_from %s.",
            training_args.output_dir,
            training_args.output_dir,
        )
        return finished
    checkpoint = find_checkpoint(args)
    if checkpoint is None and run_args.overwrite_output_dir:
        with training_args.main_process_first(desc="removing the previous run"):
            if training_args.process_index == 0:
                remove_previous_run(training_args.output_dir)
    if checkpoint:
        logger.info("Resuming from %s", checkpoint)
    prepared = prepare_data(args, checkpoint)
    data_args.block_size = prepared.block_size  # for the card

    set_seed(training_args.seed)
    model = build_model(args, prepared.tokenizer, prepared.label_names, checkpoint)
    logger.info("Model: %.2fM parameters", model.num_parameters() / 1e6)
    stop_on_nan = NonFiniteLossCallback()
    throughput = ThroughputCallback(
        training_flops_per_token(model, prepared.block_size),
        run_args.peak_flops or device_peak_flops(training_args.device),
        training_args.world_size,
    )
    # After the throughput callback: the progress log and its CSV row include tokens/s.
    progress = ProgressCallback(training_args.output_dir, adapt_logging=not logging_steps_given(args))
    trainer_callbacks = [stop_on_nan, throughput, progress, *callbacks]
    if run_args.early_stopping_patience is not None:
        trainer_callbacks.append(EarlyStoppingCallback(run_args.early_stopping_patience))
    windowed = data_args.memory_windows > 1
    trainer_class = (
        partial(WindowedClassificationTrainer, window=prepared.block_size) if windowed else Trainer
    )
    trainer = trainer_class(
        model=model,
        args=training_args,
        data_collator=data_collator(data_args.task, prepared.tokenizer, data_args.memory_windows),
        train_dataset=prepared.encoded["train"],
        eval_dataset=prepared.encoded["validation"],
        processing_class=prepared.tokenizer,
        compute_metrics=classification_metrics if data_args.task == "classification" else None,
        callbacks=trainer_callbacks,
    )

    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    if stop_on_nan.diverged is not None:
        step, key, value = stop_on_nan.diverged
        raise TrainingDiverged(
            f"the {key.replace('_', ' ')} became {value} at step {step}, so training stopped and no model "
            "was written; lower --learning_rate or --max_grad_norm, or raise --warmup_steps."
        )

    model = trainer.model  # the best checkpoint's weights with --load_best_model_at_end
    model.config.use_cache = True  # the Trainer turns the cache off for training; generation wants it
    if data_args.task == "lm":
        # generate() and pipelines decode as the demo does: sampled, with no 4-gram repeats.
        for name, value in generation_config_defaults().items():
            setattr(model.generation_config, name, value)
    if data_args.task == "summarization":
        # Greedy and short: an --init_from language model's sampled settings (temperature, top_p) would
        # leave an invalid config (sampling settings without sampling) that cannot be saved.
        plain = GenerationConfig()
        for name in generation_config_defaults():
            setattr(model.generation_config, name, getattr(plain, name))
        model.generation_config.max_new_tokens = data_args.generation_max_length
        model.generation_config.do_sample = False
    calibration = None
    if data_args.task == "classification":
        # Every process fits the same temperature on the same rows, so the replicas stay equal.
        rows = prepared.raw["validation"]
        calibration = calibrate(
            model,
            prepared.tokenizer,
            rows[data_args.text_column_name],
            rows[data_args.label_column_name],
            training_args.per_device_eval_batch_size,
            memory_windows=data_args.memory_windows,
        )
        logger.info("Calibration on the validation split: %s", calibration)
    metrics = final_metrics(trainer, train_result.metrics, args, prepared)
    if calibration is not None:
        metrics["eval_temperature"] = calibration["temperature"]
        metrics["eval_ece"] = calibration["calibrated"]["ece"]
        metrics["eval_ece_uncalibrated"] = calibration["uncalibrated"]["ece"]
    if trainer.is_world_process_zero():
        trainer.log_metrics("all", metrics)
    if run_args.weights_digest_dir:
        os.makedirs(run_args.weights_digest_dir, exist_ok=True)
        path = Path(run_args.weights_digest_dir, f"rank{training_args.process_index}.sha256")
        path.write_text(weights_digest(model) + "\n")
    save_final_model(trainer, args, metrics, prepared.label_names)
    logger.info("Wrote the model to %s", training_args.output_dir)
    return metrics


def main(argv: list[str] | None = None) -> int:
    """The command line: returns 0, or 1 after one ``error:`` line on stderr for a bad input."""
    try:
        run(parse_args(argv))
    except (ValueError, TrainingDiverged) as err:  # DataError is a ValueError
        logger.debug("Stopped on a bad input", exc_info=True)
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
