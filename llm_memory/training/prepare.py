"""The data of a run: its rows, checked for the task, its tokenizer, the encoded splits and the collator.

Rows come from ``sources``, the transforms from ``data``; the tokenizer is the checkpoint's, a given
one, or a byte-level BPE trained on the training split (on the first process, sent to the others).
"""

import copy
import logging
from typing import NamedTuple

import torch
from datasets import DatasetDict
from transformers import (
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    DataCollatorWithPadding,
    PreTrainedTokenizerBase,
    TrainingArguments,
    default_data_collator,
)

from llm_memory.modeling.configuration_memory_transformer import MemoryTransformerConfig
from llm_memory.training import data, sources
from llm_memory.training.arguments import Arguments, DataTrainingArguments
from llm_memory.training.checks import config_from_args
from llm_memory.training.tokenization import train_tokenizer

logger = logging.getLogger(__name__)

DEFAULT_DATASET = {
    "lm": "movie_reviews",
    "classification": "movie_reviews",
    "summarization": "package_docstrings",
}


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

    raw = sources.load_text_dataset(
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
        new_config = config_from_args(args)
        max_positions = new_config.max_position_embeddings
        tokenizer = on_main_process(
            lambda: train_tokenizer(
                tokenizer_texts(raw, data_args),
                vocab_size=new_config.vocab_size,
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
        else config_from_args(args).max_position_embeddings
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
