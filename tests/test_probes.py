"""Memory probes: the fact is really in the text, at the stated distance, the same for the same seed."""

import collections
import random
import re

import pytest
import torch
from transformers import default_data_collator

from llm_memory.memory.probes import (
    KV_PAIRS,
    QA1_PEOPLE,
    QA2_OBJECTS,
    QA2_VERBS,
    TASKS,
    Distractors,
    chance_level,
    make_probe,
    make_probe_dataset,
    max_answer_length,
    review_texts,
)
from llm_memory.training.data import IGNORE_INDEX

# Window of the tiny test models is 64 tokens; 300 and 1000 lie far beyond it.
DISTANCES = (40, 300, 1000)


@pytest.fixture(scope="module")
def distractors(tokenizer):
    return Distractors(review_texts("test")[:200], tokenizer)


def contains(ids: list[int], part: list[int]) -> bool:
    return any(ids[i : i + len(part)] == part for i in range(len(ids) - len(part) + 1))


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("distance", DISTANCES)
def test_fact_holds_the_answer_at_the_stated_distance(task, distance, tokenizer, distractors):
    for seed in range(3):
        probe = make_probe(task, distance, tokenizer, seed, distractors)
        start, end = probe.fact_token_span
        fact_ids = probe.input_ids[start:end]
        assert probe.answer.strip() in tokenizer.decode(fact_ids)
        # The answer's very tokens sit in the fact, so copying them is possible.
        assert contains(fact_ids, probe.answer_ids)
        assert probe.distance == distance == len(probe.input_ids) - end
        assert end <= probe.question_start < len(probe.input_ids)
        assert probe.text == tokenizer.decode(probe.input_ids)
        assert tokenizer.decode(probe.input_ids[probe.question_start :]).strip().endswith(("is", "in the"))
        assert probe.answer.strip() and probe.answer == tokenizer.decode(probe.answer_ids)


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_same_probe(task, tokenizer, distractors):
    first = make_probe(task, 120, tokenizer, 7, distractors)
    assert make_probe(task, 120, tokenizer, 7, distractors) == first
    assert make_probe(task, 120, tokenizer, random.Random(7), distractors) == first
    assert make_probe(task, 120, tokenizer, 8, distractors) != first


def test_passkey_reads_as_stated(tokenizer, distractors):
    probe = make_probe("passkey", 60, tokenizer, 0, distractors)
    key = probe.answer.strip()
    assert re.fullmatch(r"\d{5}", key)
    assert f"The pass key is {key}. Remember it." in probe.text
    assert probe.text.rstrip().endswith("What is the pass key? The pass key is")
    # Sentences with digits are kept out of the filler: the key is the only number.
    assert re.findall(r"\d+", probe.text) == [key]


def test_kv_asks_one_of_several_codes(tokenizer, distractors):
    for seed in range(5):
        probe = make_probe("kv", 200, tokenizer, seed, distractors)
        codes = dict(re.findall(r"The code for (\w+) is (\d+)\.", probe.text))
        assert len(codes) == KV_PAIRS and len(set(codes.values())) == KV_PAIRS
        (asked,) = re.findall(r"What is the code for (\w+)\?", probe.text)
        assert codes[asked] == probe.answer.strip()
        assert f"The code for {asked} is" in tokenizer.decode(probe.input_ids[slice(*probe.fact_token_span)])


def test_qa1_answer_is_the_last_move_of_the_person(tokenizer, distractors):
    for seed in range(8):
        probe = make_probe("qa1", 150, tokenizer, seed, distractors)
        (person,) = re.findall(r"Where is (\w+)\?", probe.text)
        assert person in QA1_PEOPLE
        moves = re.findall(rf"{person} [a-z ]+ to the (\w+)\.", probe.text)
        assert moves[-1] == probe.answer.strip()
        assert probe.answer.strip() not in moves[:-1]  # older moves went elsewhere, so order matters
        assert tokenizer.decode(probe.input_ids[slice(*probe.fact_token_span)]).strip().startswith(person)


def test_qa2_answer_is_where_the_taker_went_after_taking_it(tokenizer, distractors):
    for seed in range(12):
        probe = make_probe("qa2", 150, tokenizer, seed, distractors)
        (thing,) = re.findall(r"Where is the (\w+)\?", probe.text)
        assert thing in QA2_OBJECTS
        (taker,) = re.findall(rf"(\w+) (?:{'|'.join(QA2_VERBS)}) the {thing}\.", probe.text)
        assert taker in QA1_PEOPLE
        taken_at = probe.text.index(f"the {thing}.")
        moves_after = re.findall(rf"{taker} [a-z ]+ to the (\w+)\.", probe.text[taken_at:])
        assert moves_after and moves_after[-1] == probe.answer.strip()
        # The supporting fact (distance is measured from it) is that last move; the taking is older.
        fact = tokenizer.decode(probe.input_ids[slice(*probe.fact_token_span)]).strip()
        assert fact.startswith(taker) and fact.endswith(f"the {probe.answer.strip()}.")
        assert probe.fact_token_span[0] > len(tokenizer(probe.text[:taken_at])["input_ids"]) - 2


@pytest.mark.parametrize("task", TASKS)
def test_aligned_probe_fills_whole_windows(task, tokenizer, distractors):
    for distance in (40, 100, 300):
        probe = make_probe(task, distance, tokenizer, distance, distractors, align_to=64)
        assert (len(probe.input_ids) + max_answer_length(task, tokenizer)) % 64 == 0
        assert len(probe.answer_ids) <= max_answer_length(task, tokenizer)
        assert probe.distance == distance


@pytest.mark.parametrize("task", ["qa1", "qa2"])
def test_where_an_aligned_question_ends_says_nothing_about_its_answer(task, tokenizer, distractors):
    # Places take 1 to 3 tokens. Were the answer to end the window, a model reading only the question's
    # window could tell "office" (1 token) from "kitchen" (3) by the position the question ends at.
    ends = collections.defaultdict(set)
    for seed in range(60):
        probe = make_probe(task, 200, tokenizer, seed, distractors, align_to=64)
        ends[probe.answer.strip()].add(len(probe.input_ids) % 64)
    assert len({len(tokenizer.encode(" " + place)) for place in ends}) > 1  # lengths do differ
    assert len(set.union(*ends.values())) == 1


def test_default_distractors_are_test_reviews(tokenizer):
    probe = make_probe("passkey", 80, tokenizer, 0)
    assert probe.distance == 80 and len(probe.input_ids) > 80


@pytest.mark.parametrize(
    "task, distance, message",
    [
        ("bogus", 100, "Unknown task"),
        ("passkey", 0, "positive integer"),
        ("passkey", -3, "positive integer"),
        ("passkey", 2.5, "positive integer"),
        ("kv", 3, "shorter than the kv question"),
    ],
)
def test_bad_input_says_what_to_fix(task, distance, message, tokenizer, distractors):
    with pytest.raises(ValueError, match=message):
        make_probe(task, distance, tokenizer, 0, distractors)


def test_distractors_without_sentences(tokenizer):
    with pytest.raises(ValueError, match="no usable sentence"):
        make_probe("passkey", 50, tokenizer, 0, ["12 34", "ok."])


def test_dataset_masks_all_but_the_answer(tokenizer, distractors):
    dataset = make_probe_dataset("kv", [40, 300], 3, tokenizer, seed=1, distractor_texts=distractors)
    assert len(dataset) == 6 and dataset["distance"] == [40] * 3 + [300] * 3
    for row in dataset:
        answer = [label for label in row["labels"] if label != IGNORE_INDEX]
        assert len(row["labels"]) == len(row["input_ids"])
        assert row["labels"][-len(answer) :] == row["input_ids"][-len(answer) :] == answer
        assert all(label == IGNORE_INDEX for label in row["labels"][: -len(answer)])
    again = make_probe_dataset("kv", [40, 300], 3, tokenizer, seed=1, distractor_texts=distractors)
    assert again["input_ids"] == dataset["input_ids"]
    batch = default_data_collator([dataset.remove_columns("distance")[0]])
    assert batch["input_ids"].dtype == torch.long and batch["labels"].shape == batch["input_ids"].shape


@pytest.mark.parametrize("task", TASKS)
def test_chance_level(task):
    chance = chance_level(task)
    assert 0 < chance["exact"] < 0.5 and chance["note"]
