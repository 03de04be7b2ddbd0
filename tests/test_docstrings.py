"""The docstring corpora: standard-library pairs (the benchmark set) and installed packages' pairs (training)."""

import hashlib
import json
import os
import subprocess
import sys
import time
import zlib

import pytest

from llm_memory.training import docstrings
from llm_memory.training.docstrings import VALIDATION_EVERY, load_docstring_pairs, load_package_docstrings
from llm_memory.training.sources import load_text_dataset

# Small, stable packages that the requirements install: reading them takes a second or two.
PACKAGES = ("accelerate", "huggingface_hub")


@pytest.fixture(scope="module")
def package_pairs():
    return load_package_docstrings(PACKAGES)


def test_docstring_pairs_are_well_formed():
    start = time.perf_counter()
    pairs = load_docstring_pairs()
    assert time.perf_counter() - start < 5
    assert pairs.column_names == ["document", "summary"]
    assert len(pairs) >= 300
    assert len(set(zip(pairs["document"], pairs["summary"], strict=True))) == len(pairs)
    for document, summary in zip(pairs["document"], pairs["summary"], strict=True):
        assert "\n" not in summary and summary == summary.strip() and len(summary.split()) >= 3
        assert len(document.split()) >= 30 and document == document.strip()
    assert "Metaclass for defining Abstract Base Classes (ABCs)." in pairs["summary"]  # abc.ABCMeta


def test_docstring_pairs_limits():
    pairs = load_docstring_pairs()
    first = load_docstring_pairs(max_pairs=10)
    assert first.to_dict() == pairs.select(range(10)).to_dict()
    longer = load_docstring_pairs(min_body_words=100)
    assert 0 < len(longer) < len(pairs)
    assert all(len(document.split()) >= 100 for document in longer["document"])


def test_docstring_pairs_are_the_same_in_another_process():
    # docstrings.py is loaded on its own, without the package (and torch), to keep the test fast.
    code = (
        "import hashlib, importlib.util, json, sys; "
        "spec = importlib.util.spec_from_file_location('docstrings', sys.argv[1]); "
        "docstrings = importlib.util.module_from_spec(spec); spec.loader.exec_module(docstrings); "
        "print(hashlib.sha256(json.dumps(docstrings.load_docstring_pairs().to_dict()).encode()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    digest = subprocess.run(
        [sys.executable, "-c", code, docstrings.__file__],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    expected = hashlib.sha256(json.dumps(load_docstring_pairs().to_dict()).encode()).hexdigest()
    assert digest.stdout.strip() == expected


def test_builtin_docstrings_get_a_validation_split():
    raw = load_text_dataset(dataset_name="builtin:docstrings", validation_split_percentage=10)
    assert raw["train"].column_names == ["document", "summary"]
    assert len(raw["train"]) + len(raw["validation"]) == len(load_docstring_pairs())


def test_package_pairs_are_well_formed_and_say_where_they_come_from(package_pairs):
    assert list(package_pairs) == ["train", "validation", "test"]
    for split in ("train", "validation"):
        rows = package_pairs[split]
        assert rows.column_names == ["document", "summary", "package"]
        assert {package.split("==")[0] for package in rows["package"]} == set(PACKAGES)
        assert all(package.split("==")[1][0].isdigit() for package in rows["package"])  # a version
        for document, summary in zip(rows["document"], rows["summary"], strict=True):
            assert "\n" not in summary and summary == summary.strip() and len(summary.split()) >= 3
            assert len(document.split()) >= 30
    assert len(package_pairs["train"]) >= 400 and len(package_pairs["validation"]) >= 10
    pairs = [(r["document"], r["summary"]) for split in ("train", "validation") for r in package_pairs[split]]
    assert len(set(pairs)) == len(pairs)


def test_package_pairs_validation_is_fixed_by_the_summary(package_pairs):
    def held_out(summary):
        return zlib.crc32(summary.encode()) % VALIDATION_EVERY == 0

    assert all(held_out(s) for s in package_pairs["validation"]["summary"])
    assert not any(held_out(s) for s in package_pairs["train"]["summary"])
    # One package's rows are the same whichever other packages are read with it.
    alone = load_package_docstrings(PACKAGES[:1])
    mine = [r for r in package_pairs["validation"] if r["package"].startswith(PACKAGES[0] + "==")]
    assert alone["validation"].to_list() == mine


def test_package_pairs_never_repeat_the_benchmark_pairs(package_pairs):
    stdlib = load_docstring_pairs()
    assert package_pairs["test"]["document"] == stdlib["document"]
    assert package_pairs["test"]["summary"] == stdlib["summary"]
    assert set(package_pairs["test"]["package"]) == {"python-stdlib"}
    taken = set(stdlib["document"]) | set(stdlib["summary"])
    for split in ("train", "validation"):
        assert not taken & (set(package_pairs[split]["document"]) | set(package_pairs[split]["summary"]))


def test_package_pairs_read_sources_without_importing_them():
    # docstrings.py on its own (the package would import transformers, and that imports accelerate).
    code = (
        "import importlib.util, sys; "
        "spec = importlib.util.spec_from_file_location('docstrings', sys.argv[1]); "
        "docstrings = importlib.util.module_from_spec(spec); spec.loader.exec_module(docstrings); "
        "pairs = docstrings.load_package_docstrings(['accelerate']); "
        "print(len(pairs['train']) > 0, 'accelerate' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, docstrings.__file__],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "True False"


def test_a_package_that_is_not_installed_is_named():
    with pytest.raises(ValueError, match="'no_such_package_here' is not installed"):
        load_package_docstrings(["no_such_package_here"])
