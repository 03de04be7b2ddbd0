"""Where training rows come from: the built-in corpora, local files and Hub datasets.

Follows the data loading of Transformers' ``run_clm.py``: raw text comes from local files (the builder
is inferred from the extension) or a Hub dataset through ``datasets.load_dataset``, and a missing
validation split is carved out of train. Added here: the offline built-in corpora (movie reviews, the
pretraining and sentiment mixes, docstrings for summarization), each with fixed splits.
"""

import os
from collections.abc import Callable

import datasets
from datasets import DatasetDict

from llm_memory.training import data_mix, docstrings, selection
from llm_memory.training.data import DataError
from llm_memory.training.reviews import load_movie_reviews

# Extension -> ``datasets`` builder, as in run_clm.
FILE_BUILDERS = {"txt": "text", "csv": "csv", "json": "json", "jsonl": "json", "parquet": "parquet"}

BUILTIN_PREFIX = "builtin:"

# A built-in corpus has fixed splits: they do not follow the training seed, so that a test split is
# never trained on by a run with another seed (each benchmark scores the seed-0 test split).
BUILTIN_DATASETS: dict[str, Callable[[int], DatasetDict]] = {
    "movie_reviews": lambda seed: load_movie_reviews(),
    # Train only; load_text_dataset carves the validation split.
    "docstrings": lambda seed: DatasetDict({"train": docstrings.load_docstring_pairs()}),
    # Docstrings of installed packages for training a summarizer; its test split is the one above.
    "package_docstrings": lambda seed: docstrings.load_package_docstrings(),
    # Package docstrings with one sentence marked, labelled by whether a summary takes it (selection.py).
    "docstring_selection": lambda seed: selection.load_docstring_selection(),
    # The pretraining mix (data_mix.py): reviews and general English text that gensim ships.
    "lm_mix": lambda seed: data_mix.load_lm_mix(),
    # Reviews at mixed lengths for the sentiment classifier (data_mix.py).
    "sentiment_mix": lambda seed: data_mix.load_sentiment_mix(),
    # The same with pairs of critic sentences joined by a contrast or by "and" (data_mix.py).
    "sentiment_pairs_mix": lambda seed: data_mix.load_sentiment_mix(pairs=True),
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


# The built-in corpora: a short name, a sentence, and the Hub datasets they come from.
BUILTIN_CARDS = {
    "movie_reviews": (
        "movie reviews (IMDB + Rotten Tomatoes)",
        "The built-in movie review corpus: IMDB reviews and Rotten Tomatoes sentences (the "
        "`movie-reviews` package), split by `llm_memory.training.reviews.load_movie_reviews`",
        ["stanfordnlp/imdb", "cornell-movie-review-data/rotten_tomatoes"],
    ),
    "lm_mix": (
        "movie reviews + English Wikipedia and news",
        "The built-in pretraining mix (`llm_memory.training.data_mix.load_lm_mix`): the movie review corpus' "
        "training split (IMDB reviews and Rotten Tomatoes sentences, the `movie-reviews` package) and "
        "English Wikipedia articles and news stories from the `gensim` package's test data",
        ["stanfordnlp/imdb", "cornell-movie-review-data/rotten_tomatoes"],
    ),
    "sentiment_mix": (
        "movie reviews at mixed lengths",
        "The built-in sentiment mix (`llm_memory.training.data_mix.load_sentiment_mix`): each labelled review of "
        "the movie review corpus as a whole review, its last sentences, and the Rotten Tomatoes critic "
        "sentences as they are",
        ["stanfordnlp/imdb", "cornell-movie-review-data/rotten_tomatoes"],
    ),
    "docstring_selection": (
        "package docstrings, one sentence marked",
        "The built-in extractive summarization set (`llm_memory.training.selection.load_docstring_selection`): "
        "installed packages' docstrings with one sentence marked, labelled `summary` where it is the "
        "sentence closest (ROUGE-1) to the docstring's summary line and `other` otherwise",
        [],
    ),
    "sentiment_pairs_mix": (
        "movie reviews at mixed lengths, and critic sentences joined in pairs",
        "The built-in sentiment mix with pairs of critic sentences joined into one by a contrast (taking "
        "the label of the clause it favours) or by 'and' (`llm_memory.training.data_mix.load_sentiment_mix` "
        "with pairs=True)",
        ["stanfordnlp/imdb", "cornell-movie-review-data/rotten_tomatoes"],
    ),
    "docstrings": (
        "docstrings (Python standard library)",
        "The built-in summarization corpus: Python standard-library docstrings, the first paragraph as "
        "the summary of the rest (`llm_memory.training.docstrings.load_docstring_pairs`)",
        [],
    ),
    "package_docstrings": (
        "docstrings (installed Python packages)",
        "The built-in summarizer training corpus: the docstrings of installed packages (transformers, "
        "torch, sympy, scipy, pandas and others), read from their source files, the first paragraph as "
        "the summary of the rest; the standard-library pairs are its test split and never trained on "
        "(`llm_memory.training.docstrings.load_package_docstrings`)",
        [],
    ),
}


def describe_dataset(
    dataset_name: str | None,
    dataset_config_name: str | None = None,
    train_file: str | None = None,
    validation_file: str | None = None,
) -> dict:
    """The ModelCardInfo fields about the training data: name, type, description and Hub ids."""
    if train_file:
        names = ", ".join(os.path.basename(f) for f in (train_file, validation_file) if f)
        return {
            "dataset_name": f"local files ({names})",
            "dataset_type": "local",
            "dataset_description": f"Local files: {names}",
        }
    builtin = dataset_name.removeprefix(BUILTIN_PREFIX)
    if builtin in BUILTIN_DATASETS:
        name, description, hub_ids = BUILTIN_CARDS.get(builtin, (builtin, builtin, []))
        return {
            "dataset_name": name,
            "dataset_type": builtin,
            "dataset_description": description,
            "dataset_hub_ids": hub_ids,
        }
    config = f" ({dataset_config_name})" if dataset_config_name else ""
    return {
        "dataset_name": f"{dataset_name}{config}",
        "dataset_type": dataset_name,
        "dataset_description": f"The `{dataset_name}`{config} dataset",
        "dataset_hub_ids": [dataset_name],
    }
