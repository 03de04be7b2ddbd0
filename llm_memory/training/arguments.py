"""The training command line: argument dataclasses whose help text is the command line, and presets.

Follows Transformers' ``run_clm.py``: ``HfArgumentParser`` parses these dataclasses together with
``TrainingArguments``, so every Trainer flag works. A preset is a JSON object of defaults for any flag,
TrainingArguments' included; flags given on the command line win, and keys starting with ``_`` are
comments. ``--preset NAME`` takes one of the presets shipped in ``llm_memory/training/presets/``
(``tiny``, ``small``, ``lm``, ...), ``--preset PATH`` any JSON file.
"""

import dataclasses
import importlib.resources
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, NamedTuple

from transformers import HfArgumentParser, TrainingArguments

from llm_memory.modeling.configuration_memory_transformer import MemoryTransformerConfig
from llm_memory.training.tokenization import MIN_VOCAB_SIZE

# Windows a classified text may span with --memory_windows: 16 x 256 tokens is past 99.9% of IMDB reviews.
MAX_MEMORY_WINDOWS = 16
# The metric that picks the best checkpoint (load_best_model_at_end) and drives early stopping.
BEST_MODEL_METRIC = {"lm": "loss", "classification": "f1", "summarization": "loss"}
# The presets shipped with the package (package data, so an installed wheel has them too).
PRESETS = importlib.resources.files("llm_memory.training") / "presets"


@dataclasses.dataclass
class ModelArguments:
    """The model to train: a new one (its config from the preset's ``model`` section and
    ``--config_overrides``, on top of ``MemoryTransformerConfig``'s defaults), or a checkpoint to fine-tune."""

    init_from: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "A model folder (a checkpoint or a finished run) to fine-tune instead of training from "
            "scratch; its tokenizer is used too and the new model's config settings are ignored. For "
            "classification from a language model, the LM head is dropped, the body kept and a new "
            "classifier head added."
        },
    )
    tokenizer_name: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "A tokenizer folder to use. Default: the --init_from folder's, else a byte-level BPE "
            "trained on the training split with the config's vocab_size."
        },
    )
    config_overrides: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Settings of a new model's config as key=value pairs separated by commas, on top of the "
            "preset's `model` section, as in Transformers' run_clm.py; any MemoryTransformerConfig field, "
            "e.g. `hidden_size=128,num_hidden_layers=2,use_lstm=false,position_embedding_type=rope`. "
            f"vocab_size also sizes the tokenizer trained when none is given (at least {MIN_VOCAB_SIZE})."
        },
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
            "help": "Defaults for any flag: the name of a shipped preset (e.g. `small`, see "
            "llm_memory/training/presets/) or a JSON file. Flags on the command line override it."
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
    max_train_minutes: float | None = dataclasses.field(
        default=None,
        metadata={
            "help": "End this sitting after this many minutes of training: the step reached is evaluated, "
            "saved as a checkpoint and written as the model, and --resume continues from it later."
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


# The config fields a new model's settings may name: the model's own, less those taken from the tokenizer
# (token ids), derived by the config (layer_types, number_of_conv_states) or fitted after training.
MODEL_CONFIG_KEYS = tuple(
    sorted(
        set(MemoryTransformerConfig.__annotations__)
        - {"pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id"}
        - {"layer_types", "number_of_conv_states", "classifier_temperature"}
    )
)


class Arguments(NamedTuple):
    model: ModelArguments
    data: DataTrainingArguments
    run: RunArguments
    training: TrainingArguments
    argv: list[str]
    # A new model's config settings: the preset's `model` section, then --config_overrides.
    model_config: dict = {}


def make_parser() -> HfArgumentParser:
    return HfArgumentParser(
        (ModelArguments, DataTrainingArguments, RunArguments, TrainingArguments),
        prog="python -m llm_memory.training",
        description="Train the memory transformer (see the module docstring for examples).",
    )


def preset_names() -> list[str]:
    """The names of the shipped presets."""
    return sorted(
        entry.name.removesuffix(".json") for entry in PRESETS.iterdir() if entry.name.endswith(".json")
    )


def resolve_preset_path(preset: str):
    """The preset file: ``preset`` itself when it is a file, else the shipped preset of that name."""
    path = Path(preset)
    if path.is_file():
        return path
    if not path.suffix and (PRESETS / f"{preset}.json").is_file():
        return PRESETS / f"{preset}.json"
    names = preset_names()
    hint = f" (did you mean --preset {path.stem}?)" if path.stem in names else ""
    raise ValueError(
        f"The preset file {preset!r} does not exist{hint}; pass a JSON file or the name of a shipped preset "
        f"({', '.join(names) or 'none'})."
    )


def read_preset(preset: str, parser: HfArgumentParser) -> tuple[dict, dict]:
    """The flag defaults and the ``model`` section (config settings) of a preset file, both checked;
    ``_`` keys are comments."""
    path = resolve_preset_path(preset)
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"The preset {str(path)!r} is not valid JSON: {err}.") from err
    if not isinstance(settings, dict):
        raise ValueError(f"The preset {str(path)!r} must hold a JSON object of flag names and values.")
    settings = {key: value for key, value in settings.items() if not key.startswith("_")}
    model = settings.pop("model", {})
    if not isinstance(model, dict):
        raise ValueError(
            f"The preset {str(path)!r} has a `model` section that is not a JSON object; give it the config "
            'settings of a new model, e.g. {"hidden_size": 128, "num_hidden_layers": 2}.'
        )
    model = {key: value for key, value in model.items() if not key.startswith("_")}
    check_model_keys(model, f"The preset {str(path)!r}'s `model` section")
    flags = {action.dest for action in parser._actions} - {"help", "preset"}
    unknown = sorted(set(settings) - flags)
    if unknown:
        misplaced = [key for key in unknown if key in MODEL_CONFIG_KEYS]
        hint = f" ({', '.join(misplaced)} belong(s) in the `model` section)" if misplaced else ""
        raise ValueError(
            f"The preset {str(path)!r} sets unknown flag(s) {', '.join(unknown)}{hint}; "
            "see `python -m llm_memory.training --help` for the flags."
        )
    return settings, model


def check_model_keys(settings: dict, where: str) -> None:
    unknown = sorted(set(settings) - set(MODEL_CONFIG_KEYS))
    if unknown:
        raise ValueError(
            f"{where} names {', '.join(unknown)}, which a new model's config does not take; "
            f"use some of: {', '.join(MODEL_CONFIG_KEYS)}."
        )


def parse_config_overrides(overrides: str) -> dict:
    """``key=value,key=value`` as typed config settings (the types of the config's fields)."""
    settings = {}
    for pair in overrides.split(","):
        key, sep, value = (part.strip() for part in pair.partition("="))
        if not sep or not key:
            raise ValueError(
                f"--config_overrides {overrides!r}: {pair!r} is not key=value; write e.g. "
                "`hidden_size=128,use_lstm=false`."
            )
        settings[key] = value
    check_model_keys(settings, f"--config_overrides {overrides!r}")
    default = MemoryTransformerConfig()
    try:  # Transformers' own parser (as run_clm.py uses it): values typed like the config's defaults
        default.update_from_string(",".join(f"{key}={value}" for key, value in settings.items()))
    except (ValueError, TypeError) as err:
        raise ValueError(f"--config_overrides {overrides!r}: {err}.") from err
    return {key: getattr(default, key) for key in settings}


def parse_args(argv: Sequence[str] | None = None) -> Arguments:
    """Parses the command line on top of the preset's defaults; task-dependent defaults are filled in."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser()
    parser.set_defaults(**TRAINING_DEFAULTS)
    known, _ = parser.parse_known_args(argv)
    preset, model_config = read_preset(known.preset, parser) if known.preset else ({}, {})
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
    if model_args.config_overrides:
        model_config = {**model_config, **parse_config_overrides(model_args.config_overrides)}
    return Arguments(model_args, data_args, run_args, training_args, argv, model_config)
