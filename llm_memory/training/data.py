"""The transforms that turn rows into model inputs, and the checks that rows can be read.

Follows Transformers' ``run_clm.py``: text is tokenized and grouped into fixed-size blocks by pure
top-level functions applied with ``Dataset.map(batched=True)``, and the labels are the input ids (the
model does the shift). Added here: encoders for the classification and summarization tasks, the
summarization prompt, and one exception, ``DataError``, that says what to fix.
"""

import re
from collections.abc import Callable, Sequence

from datasets import ClassLabel, Dataset, DatasetDict, Value

# Label of a position that is left out of the loss (the default ignore_index of PyTorch's cross entropy).
IGNORE_INDEX = -100


class DataError(ValueError):
    """Bad data input (a file, a dataset name, a column); the message says what to fix."""


# A sentence: up to a full stop, ! or ? (with closing quotes or brackets) before a space or the end, a
# CJK full stop, or a blank line.
_SENTENCE = re.compile(r"\S.*?(?:[.!?][\"'”’)\]]*(?=\s|$)|[。！？]|(?=\n[ \t]*\n)|$)", re.DOTALL)


def split_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the sentences of ``text``, in order."""
    return [match.span() for match in _SENTENCE.finditer(text)]


def check_columns(dataset: Dataset | DatasetDict, required: list[str]) -> None:
    """Raises DataError naming the first required column that a split lacks."""
    columns_by_split = (
        {f"the {split} split": columns for split, columns in dataset.column_names.items()}
        if isinstance(dataset, DatasetDict)
        else {"the dataset": dataset.column_names}
    )
    for where, columns in columns_by_split.items():
        for column in required:
            if column not in columns:
                raise DataError(
                    f"Column {column!r} not found in {where}; its columns are "
                    f"{', '.join(repr(c) for c in columns) or '(none)'}. Pass the column to use with the "
                    "matching *_column argument."
                )


def _is_text_feature(feature) -> bool:
    return isinstance(feature, Value) and feature.dtype in ("string", "large_string")


def check_cells(
    raw: DatasetDict,
    text_columns: Sequence[str],
    label_column: str | None = None,
    places: dict[str, str] | None = None,
) -> tuple[DatasetDict, dict[str, int]]:
    """Checks the cells a task reads; returns the rows kept and how many were dropped per split.

    A text column must hold text (a DataError names the column, the type found and the first row). A row
    whose text is empty or missing says nothing and is dropped, with a count; a row whose label is
    missing cannot be guessed, so it stops the run with its row number. ``places`` names each split's
    source for the messages (a file, a dataset); rows count from 1, as a spreadsheet shows data rows.
    """
    places = places or {}
    kept, dropped = {}, {}
    for split, dataset in raw.items():
        place = places.get(split, f"the {split} split")
        for column in text_columns:
            feature = dataset.features[column]
            if not _is_text_feature(feature):
                found = getattr(feature, "dtype", type(feature).__name__)
                first = next((v for v in dataset[column] if v is not None), None)
                raise DataError(
                    f"Column {column!r} of {place} holds {found} values, not text (row 1: {first!r}); point "
                    "the *_column_name argument at the column that holds the text."
                )
        if label_column is not None:
            for row, label in enumerate(dataset[label_column], start=1):
                if label is None or (isinstance(label, str) and not label.strip()):
                    raise DataError(
                        f"Row {row} of {place} has no {label_column!r} (an empty cell); fill in its class "
                        "or remove the row."
                    )
        empty = [
            row
            for row, texts in enumerate(zip(*(dataset[c] for c in text_columns), strict=True))
            if any(text is None or not text.strip() for text in texts)
        ]
        if empty:
            dataset = dataset.select(sorted(set(range(len(dataset))) - set(empty)))
            if len(dataset) == 0:
                raise DataError(f"Every row of {place} has an empty {' or '.join(map(repr, text_columns))}.")
        kept[split], dropped[split] = dataset, len(empty)
    return DatasetDict(kept), dropped


# ---------------------------------------------------------------------------------------------------
# Transforms: pure functions of a batch, for Dataset.map(batched=True).
# ---------------------------------------------------------------------------------------------------


def tokenize_texts(examples: dict[str, list], tokenizer, text_column: str = "text") -> dict[str, list]:
    """Token ids of each text followed by eos, so documents stay apart once grouped.

    Empty texts (blank lines of a .txt file) give no tokens at all rather than a lone eos.
    """
    texts = examples[text_column]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    eos = [tokenizer.eos_token_id]
    return {
        "input_ids": [ids + eos if text.strip() else [] for text, ids in zip(texts, encoded, strict=True)]
    }


def group_texts(examples: dict[str, list], block_size: int) -> dict[str, list]:
    """Concatenates every column and cuts it into blocks of ``block_size``; labels copy input_ids.

    The remainder shorter than a block is dropped (per batch of ``map``, as in run_clm); the model
    shifts the labels itself.
    """
    if block_size < 1:
        raise ValueError(f"block_size={block_size} must be at least 1.")
    concatenated = {key: [token for row in rows for token in row] for key, rows in examples.items()}
    total_length = len(concatenated["input_ids"]) // block_size * block_size
    blocks = {
        key: [values[i : i + block_size] for i in range(0, total_length, block_size)]
        for key, values in concatenated.items()
    }
    blocks["labels"] = [list(block) for block in blocks["input_ids"]]
    return blocks


def truncation_side(tokenizer) -> str:
    """``"left"`` if the tokenizer cuts long texts from their start, else ``"right"`` (the default)."""
    return "left" if getattr(tokenizer, "truncation_side", "right") == "left" else "right"


def truncate(ids: Sequence[int], max_length: int, tokenizer) -> list[int]:
    """At most ``max_length`` of ``ids``, cut on the tokenizer's ``truncation_side``: ``"right"`` (the
    default) keeps the first tokens, ``"left"`` the last ones, as the tokenizer's own truncation does."""
    if len(ids) <= max_length:
        return list(ids)
    return list(ids[-max_length:] if truncation_side(tokenizer) == "left" else ids[:max_length])


def encode_classification(
    examples: dict[str, list],
    tokenizer,
    max_length: int,
    text_column: str = "text",
    label_column: str = "label",
) -> dict[str, list]:
    """input_ids (at most ``max_length`` tokens), attention_mask and labels, unpadded.

    A longer text is cut on the tokenizer's ``truncation_side``: ``"right"`` (the default) keeps its
    first ``max_length`` tokens, ``"left"`` its last ones (where a review usually gives its verdict). An
    empty text becomes a lone eos so the classifier always has a last token to read. Padding is left to
    the collator.
    """
    if max_length < 1:
        raise ValueError(f"max_length={max_length} must be at least 1.")
    encoded = tokenizer(examples[text_column], add_special_tokens=False)["input_ids"]
    input_ids = [truncate(ids, max_length, tokenizer) or [tokenizer.eos_token_id] for ids in encoded]
    return {
        "input_ids": input_ids,
        "attention_mask": [[1] * len(ids) for ids in input_ids],
        "labels": list(examples[label_column]),
    }


def summary_prompt(tokenizer, document_ids: list[int], room: int) -> list[int]:
    """The summarization prompt, ``document <|sep|>``: the document's first ``room`` tokens and the sep
    token. Training (with the summary and eos after it), ROUGE evaluation, the Summarize tab's abstract
    and its summarizer salience all build it here."""
    if tokenizer.sep_token_id is None:
        raise DataError("The tokenizer has no sep token, so it cannot mark where a summary starts.")
    return document_ids[: max(room, 0)] + [tokenizer.sep_token_id]


def encode_summarization(
    examples: dict[str, list],
    tokenizer,
    max_length: int,
    document_column: str = "document",
    summary_column: str = "summary",
) -> dict[str, list]:
    """``document + [sep] + summary + [eos]`` in at most ``max_length`` tokens, loss on the summary only.

    labels are IGNORE_INDEX on the document and the separator, and the summary ids plus eos after it,
    so the model learns to continue ``document + [sep]`` with the summary and stop. The document is
    cut first; only a summary that would leave the document less than half the room is cut too (the
    document to half, the summary to the rest), so the summary is never lost.
    """
    if max_length < 3:
        raise ValueError(f"max_length={max_length} must be at least 3 (a document token, sep, eos).")
    documents = tokenizer(examples[document_column], add_special_tokens=False)["input_ids"]
    summaries = tokenizer(examples[summary_column], add_special_tokens=False)["input_ids"]
    room = max_length - 2  # sep and eos
    eos = tokenizer.eos_token_id
    batch = {"input_ids": [], "attention_mask": [], "labels": []}
    for document, summary in zip(documents, summaries, strict=True):
        prompt = summary_prompt(tokenizer, document, min(len(document), max(room - len(summary), room // 2)))
        summary = summary[: room + 1 - len(prompt)]
        input_ids = prompt + summary + [eos]
        batch["input_ids"].append(input_ids)
        batch["attention_mask"].append([1] * len(input_ids))
        batch["labels"].append([IGNORE_INDEX] * len(prompt) + summary + [eos])
    return batch


# ---------------------------------------------------------------------------------------------------
# Whole-dataset preparation.
# ---------------------------------------------------------------------------------------------------


def _map(raw: Dataset | DatasetDict, function: Callable, fn_kwargs: dict, desc: str) -> Dataset | DatasetDict:
    """``map(batched=True)`` dropping every input column, split by split (their columns may differ)."""
    if isinstance(raw, DatasetDict):
        return DatasetDict(
            {split: _map(dataset, function, fn_kwargs, desc) for split, dataset in raw.items()}
        )
    return raw.map(function, batched=True, fn_kwargs=fn_kwargs, remove_columns=raw.column_names, desc=desc)


def prepare_lm_dataset(
    raw: Dataset | DatasetDict, tokenizer, block_size: int, text_column: str = "text"
) -> Dataset | DatasetDict:
    """Tokenized and grouped blocks of ``block_size`` with labels, for causal language modelling."""
    check_columns(raw, [text_column])
    tokenized = _map(
        raw,
        tokenize_texts,
        {"tokenizer": tokenizer, "text_column": text_column},
        "Running tokenizer on dataset",
    )
    grouped = _map(
        tokenized, group_texts, {"block_size": block_size}, f"Grouping texts in chunks of {block_size}"
    )
    splits = grouped.items() if isinstance(grouped, DatasetDict) else [("dataset", grouped)]
    for split, dataset in splits:
        if len(dataset) == 0:
            raise DataError(
                f"The {split} split has fewer than block_size={block_size} tokens, so it gives no block; "
                "lower block_size or add text."
            )
    return grouped


def encode_label_column(
    raw: Dataset | DatasetDict, label_column: str
) -> tuple[Dataset | DatasetDict, list[str]]:
    """Gives the label column one ClassLabel across all splits; returns the data and the class names.

    Class names are sorted, so every split gets the same ids; integer labels 0..k-1 keep their ids and
    are named by them.
    """
    splits = list(raw.values()) if isinstance(raw, DatasetDict) else [raw]
    feature = splits[0].features[label_column]
    if isinstance(feature, ClassLabel):
        return raw, list(feature.names)
    if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        names = sorted({label for split in splits for label in split[label_column]})
        return raw.cast_column(label_column, ClassLabel(names=names)), names
    if isinstance(feature, Value) and feature.dtype.startswith(("int", "uint")):
        values = [int(label) for split in splits for label in split[label_column]]
        if min(values, default=0) < 0:
            raise DataError(
                f"Column {label_column!r} holds negative class ids; classes must be 0, 1, ... or names."
            )
        return raw, [str(i) for i in range(max(values, default=-1) + 1)]
    raise DataError(
        f"Column {label_column!r} must hold class names or integer class ids for classification, not {feature}."
    )


def prepare_classification_dataset(
    raw: Dataset | DatasetDict,
    tokenizer,
    max_length: int,
    text_column: str = "text",
    label_column: str = "label",
) -> Dataset | DatasetDict:
    """input_ids, attention_mask and integer labels; string labels are encoded as classes first."""
    check_columns(raw, [text_column, label_column])
    raw, _ = encode_label_column(raw, label_column)
    fn_kwargs = {
        "tokenizer": tokenizer,
        "max_length": max_length,
        "text_column": text_column,
        "label_column": label_column,
    }
    return _map(raw, encode_classification, fn_kwargs, "Encoding classification examples")


def prepare_summarization_dataset(
    raw: Dataset | DatasetDict,
    tokenizer,
    max_length: int,
    document_column: str = "document",
    summary_column: str = "summary",
) -> Dataset | DatasetDict:
    """``document [sep] summary [eos]`` examples with the loss on the summary only."""
    check_columns(raw, [document_column, summary_column])
    fn_kwargs = {
        "tokenizer": tokenizer,
        "max_length": max_length,
        "document_column": document_column,
        "summary_column": summary_column,
    }
    return _map(raw, encode_summarization, fn_kwargs, "Encoding summarization examples")
