"""Checks of the training flags that need no data, run before anything slow.

Each raises ValueError naming the flag and what would work; the model's own size checks live in its
config (``MemoryTransformerConfig``), which ``config_from_args`` builds.
"""

import os

from llm_memory.modeling.configuration_memory_transformer import MemoryTransformerConfig
from llm_memory.training.arguments import MAX_MEMORY_WINDOWS, Arguments
from llm_memory.training.tokenization import MIN_VOCAB_SIZE


def config_from_args(args: Arguments, **extra) -> MemoryTransformerConfig:
    """A new model's config: the preset's ``model`` section and --config_overrides on the config's defaults;
    raises ValueError naming the setting when the sizes cannot work."""
    try:
        return MemoryTransformerConfig(**{**args.model_config, **extra})
    except ValueError as err:
        raise ValueError(
            f"{err} (a new model's config: the preset's `model` section, --config_overrides)"
        ) from err


def require_model_folder(path: str, flag: str) -> None:
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"{flag} {path!r} is not a model folder (no config.json there); check the path.")


def check_arguments(args: Arguments) -> None:
    """Raises ValueError for settings that cannot work, before any data is read."""
    model_args, data_args, run_args, training_args = args.model, args.data, args.run, args.training
    if model_args.init_from:
        if model_args.config_overrides:
            raise ValueError(
                "--config_overrides sets up a new model and cannot change the --init_from model's config; "
                "drop one of them."
            )
        require_model_folder(model_args.init_from, "--init_from")
        init_config = MemoryTransformerConfig.from_pretrained(model_args.init_from)
        max_positions = init_config.max_position_embeddings
    else:
        new_config = config_from_args(args)  # the size checks live in the config
        max_positions = new_config.max_position_embeddings
        if model_args.tokenizer_name is None and new_config.vocab_size < MIN_VOCAB_SIZE:
            raise ValueError(
                f"vocab_size {new_config.vocab_size} is too small for the tokenizer trained for a new model; "
                f"use at least {MIN_VOCAB_SIZE} (--config_overrides vocab_size={MIN_VOCAB_SIZE})."
            )
    if model_args.tokenizer_name and not os.path.isdir(model_args.tokenizer_name):
        raise ValueError(
            f"--tokenizer_name {model_args.tokenizer_name!r} is not a folder; pass a tokenizer folder."
        )
    block_size = data_args.block_size or max_positions
    if not 0 < block_size <= max_positions:
        raise ValueError(
            f"--block_size {block_size} must be between 1 and the model's max_position_embeddings "
            f"({max_positions}); lower --block_size or raise max_position_embeddings (--config_overrides)."
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
        use_lstm = (init_config if model_args.init_from else new_config).use_lstm
        if data_args.task != "classification" or not use_lstm:
            raise ValueError(
                "--memory_windows reads texts window by window through the LSTM memory for classification: "
                "pass --task classification and a model with the LSTM (use_lstm=true)."
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
