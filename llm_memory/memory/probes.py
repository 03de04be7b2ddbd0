"""Memory probes: a fact hidden in real text at a set distance, and a question about it at the end.

Follows BABILong (Kuratov et al., 2024): facts are placed between the sentences of unrelated natural
text (here movie reviews instead of PG-19 books), and the question comes after all of it. Three tasks:

- ``passkey`` (Mohtashami & Jaggi, 2023): "The pass key is 48213. Remember it." ... "What is the pass
  key? The pass key is" -> "48213".
- ``kv``: associative recall over several "The code for <word> is <number>." facts; one key is asked.
- ``qa1`` (bAbI task 1, Weston et al., 2015): person-location moves; "Where is Mary?" is answered by
  the last move of Mary.
- ``qa2`` (bAbI task 2): two supporting facts; "Mary picked up the football." and, later, Mary's last
  move: "Where is the football?" is answered by where Mary went after taking it.

Unlike BABILong, the position is controlled in tokens: ``distance`` is the number of prompt tokens
after the end of the fact (the filler text, any later facts and the question), exact to the token, so
accuracy can be read against distance, inside and beyond the attention window. Everything is drawn
from a seeded ``random.Random``: the same seed gives the same probes.
"""

import dataclasses
import functools
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from datasets import Dataset

from llm_memory.training.data import IGNORE_INDEX
from llm_memory.training.reviews import clean_review, load_movie_reviews

TASKS = ("passkey", "kv", "qa1", "qa2")

PASSKEY_DIGITS = 5
KV_DIGITS = 4
KV_PAIRS = 4
# Names and places of bAbI task 1.
QA1_PEOPLE = ("Mary", "John", "Sandra", "Daniel")
QA1_LOCATIONS = ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office")
QA1_VERBS = ("went to", "journeyed to", "moved to", "travelled to", "went back to")
# Objects and verbs of bAbI task 2.
QA2_OBJECTS = ("apple", "football", "milk")
QA2_VERBS = ("picked up", "grabbed", "got", "took")
KV_KEYS = (
    "apple", "river", "falcon", "candle", "garden", "silver", "tiger", "window",
    "forest", "pencil", "harbor", "violet", "castle", "meadow", "rocket", "willow",
)  # fmt: skip
# Distractor text before the fact: a random amount up to this, so the fact's absolute position is no cue.
MAX_LEAD_TOKENS = 64

# Sentence ends; reviews often omit the space after the full stop ("at all.for one").
_SENTENCE_END = re.compile(r"(?<=[.!?])\s*(?=[A-Za-z\"'(])")
_DIGIT = re.compile(r"\d")


@dataclass(frozen=True)
class Probe:
    """One memory probe. ``input_ids`` is the prompt (up to and including the question's cue); the model
    should continue it with ``answer_ids``. Spans are ``(start, end)`` token offsets into ``input_ids``."""

    task: str
    input_ids: list[int]
    answer_ids: list[int]
    text: str  # the prompt, decoded
    answer: str  # the answer, decoded
    fact_token_span: tuple[int, int]  # the supporting fact
    question_start: int  # first token of the question
    distance: int  # len(input_ids) - fact_token_span[1]


@dataclass(frozen=True)
class Fact:
    """A sentence with a value in it: ``before`` + value + ``after``."""

    before: str
    value: str
    after: str
    numeric: bool


@dataclass(frozen=True)
class Story:
    target: Fact  # the fact the question is about
    question: Fact  # the question and its cue; its value is the answer
    earlier: tuple[Fact, ...] = ()  # facts that must come before the target (older moves of the same person)
    others: tuple[Fact, ...] = ()  # facts that may come before or after it


# ---------------------------------------------------------------------------------------------------
# Stories: what each task says and asks.
# ---------------------------------------------------------------------------------------------------


def _number(rng: random.Random, digits: int) -> str:
    return str(rng.randrange(10 ** (digits - 1), 10**digits))


def passkey_story(rng: random.Random) -> Story:
    key = _number(rng, PASSKEY_DIGITS)
    return Story(
        target=Fact("The pass key is", key, ". Remember it.", numeric=True),
        question=Fact("What is the pass key? The pass key is", key, "", numeric=True),
    )


def kv_story(rng: random.Random) -> Story:
    keys = rng.sample(KV_KEYS, KV_PAIRS)
    values: list[str] = []  # a list, not a set: a set's order would change with the hash seed
    while len(values) < KV_PAIRS:
        value = _number(rng, KV_DIGITS)
        if value not in values:
            values.append(value)
    facts = [
        Fact(f"The code for {key} is", value, ".", numeric=True)
        for key, value in zip(keys, values, strict=True)
    ]
    asked = rng.randrange(KV_PAIRS)
    key = keys[asked]
    return Story(
        target=facts[asked],
        question=Fact(f"What is the code for {key}? The code for {key} is", facts[asked].value, "", True),
        others=tuple(fact for index, fact in enumerate(facts) if index != asked),
    )


def qa1_story(rng: random.Random) -> Story:
    person, *others = rng.sample(QA1_PEOPLE, len(QA1_PEOPLE))
    # The asked person's older moves go elsewhere, so only the last move answers the question.
    *old_places, place = rng.sample(QA1_LOCATIONS, rng.randint(2, 3))

    def move(who: str, where: str) -> Fact:
        return Fact(f"{who} {rng.choice(QA1_VERBS)} the", where, ".", numeric=False)

    return Story(
        target=move(person, place),
        question=Fact(f"Where is {person}? {person} is in the", place, "", numeric=False),
        earlier=tuple(move(person, where) for where in old_places),
        others=tuple(move(who, rng.choice(QA1_LOCATIONS)) for who in others[: rng.randint(1, 3)]),
    )


def qa2_story(rng: random.Random) -> Story:
    """The asked person takes an object, then moves (maybe more than once); the question is where the
    object is, so both the taking and the last move are needed. Other people take the other objects or
    move about; the distance is measured from the last move."""
    person, *others = rng.sample(QA1_PEOPLE, len(QA1_PEOPLE))
    thing, *other_things = rng.sample(QA2_OBJECTS, len(QA2_OBJECTS))
    *old_places, place = rng.sample(QA1_LOCATIONS, rng.randint(1, 3))

    def move(who: str, where: str) -> Fact:
        return Fact(f"{who} {rng.choice(QA1_VERBS)} the", where, ".", numeric=False)

    def take(who: str, what: str) -> Fact:
        return Fact(f"{who} {rng.choice(QA2_VERBS)} the", what, ".", numeric=False)

    # The taking and any older moves all come before the last move (``earlier``), so the object is
    # wherever the person went last; other people's takings name other objects.
    bystanders = others[: rng.randint(1, 3)]
    return Story(
        target=move(person, place),
        question=Fact(f"Where is the {thing}? The {thing} is in the", place, "", numeric=False),
        earlier=(take(person, thing), *(move(person, where) for where in old_places)),
        others=tuple(
            take(who, other_things[index])
            if index < len(other_things) and rng.random() < 0.5
            else move(who, rng.choice(QA1_LOCATIONS))
            for index, who in enumerate(bystanders)
        ),
    )


STORIES = {"passkey": passkey_story, "kv": kv_story, "qa1": qa1_story, "qa2": qa2_story}


def chance_level(task: str) -> dict:
    """Accuracy of a guess that knows the answer's form but not the fact."""
    check_task(task)
    if task in ("qa1", "qa2"):
        exact = 1 / len(QA1_LOCATIONS)
        return {"exact": exact, "per_token": None, "note": f"one of {len(QA1_LOCATIONS)} places"}
    digits = PASSKEY_DIGITS if task == "passkey" else KV_DIGITS
    note = f"a {digits}-digit number, one token per digit"
    if task == "kv":
        note += f"; a guess among the {KV_PAIRS} stated codes would get {1 / KV_PAIRS:.2f}"
    return {"exact": 1 / 9 / 10 ** (digits - 1), "per_token": 1 / 10, "note": note}


def check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; choose one of {', '.join(TASKS)}.")


# ---------------------------------------------------------------------------------------------------
# Distractor text, cut into sentences and tokenized on demand.
# ---------------------------------------------------------------------------------------------------


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` in order, markup and whitespace collapsed. Sentences with digits are dropped
    so that the only numbers in a probe are its facts'; very short ones are dropped as noise."""
    sentences = (s.strip() for s in _SENTENCE_END.split(" ".join(clean_review(text).split())))
    return [s for s in sentences if len(s.split()) >= 3 and not _DIGIT.search(s)]


@functools.lru_cache(maxsize=3)
def review_texts(split: str = "test", seed: int = 0) -> tuple[str, ...]:
    """Texts of the movie-review corpus' ``split`` (probes for training use ``train``, for tests ``test``)."""
    return tuple(load_movie_reviews(seed)[split]["text"])


class Distractors:
    """Running text to hide facts in: the sentences of ``texts``, one text after another.

    Texts are split and tokenized (each sentence with a leading space) when first reached, so a large
    corpus costs only what the probes read of it.
    """

    def __init__(self, texts: Sequence[str], tokenizer):
        if not texts:
            raise ValueError("distractor_texts is empty; pass texts to hide the facts in.")
        self.texts = texts
        self.tokenizer = tokenizer
        self._sentences: dict[int, list[list[int]]] = {}

    def sentences(self, index: int) -> list[list[int]]:
        """Token ids of the sentences of text ``index``."""
        if index not in self._sentences:
            texts = [" " + sentence for sentence in split_sentences(self.texts[index])]
            self._sentences[index] = (
                self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"] if texts else []
            )
        return self._sentences[index]

    def stream(self, rng: random.Random) -> Iterator[list[int]]:
        """Sentences from a random place on, text after text, wrapping around."""
        index = rng.randrange(len(self.texts))
        sentence = None
        empty = 0
        while True:
            sentences = self.sentences(index)
            if sentence is None and sentences:
                sentence = rng.randrange(len(sentences))  # start inside the first text
            empty = 0 if sentences else empty + 1
            if empty > len(self.texts):
                raise ValueError("The distractor texts hold no usable sentence (3+ words, no digits).")
            yield from sentences[sentence or 0 :]
            sentence = 0
            index = (index + 1) % len(self.texts)


def as_distractors(distractor_texts, tokenizer, split: str = "test") -> Distractors:
    """A ``Distractors`` from texts, from itself, or from the review corpus' ``split`` when None."""
    if isinstance(distractor_texts, Distractors):
        return distractor_texts
    return Distractors(review_texts(split) if distractor_texts is None else distractor_texts, tokenizer)


def take_tokens(stream: Iterator[list[int]], num_tokens: int, cut: str | None = None) -> list[list[int]]:
    """Whole sentences until ``num_tokens`` are reached; ``cut="end"`` (or ``"start"``) then trims the last
    sentence's end (or the first sentence's start) to give exactly ``num_tokens``."""
    sentences, total = [], 0
    while total < num_tokens:
        sentence = next(stream)
        sentences.append(sentence)
        total += len(sentence)
    extra = total - num_tokens
    if extra and cut == "end":
        sentences[-1] = sentences[-1][: len(sentences[-1]) - extra]
    elif extra and cut == "start":
        while extra >= len(sentences[0]):
            extra -= len(sentences.pop(0))
        sentences[0] = sentences[0][extra:]
    return sentences


# ---------------------------------------------------------------------------------------------------
# Probes.
# ---------------------------------------------------------------------------------------------------


def encode_fact(tokenizer, fact: Fact) -> tuple[list[int], tuple[int, int]]:
    """Token ids of `` before value after`` and the span of the value in them.

    Numbers are spelled one token per digit, so that per-token accuracy is per-digit accuracy and the
    answer's tokens are the same wherever the number appears. Tokens that are only whitespace (a bare
    space before the first digit) are left out of the value's span: they say nothing about the answer.
    """

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False) if text else []

    before = encode(" " + fact.before)
    pieces = [" " + fact.value[0], *fact.value[1:]] if fact.numeric else [" " + fact.value]
    value = [token for piece in pieces for token in encode(piece)]
    blank = 0
    while blank < len(value) - 1 and not tokenizer.decode(value[: blank + 1]).strip():
        blank += 1
    start = len(before) + blank
    return before + value + encode(fact.after), (start, len(before) + len(value))


def make_probe(
    task: str,
    distance: int,
    tokenizer,
    seed: int | random.Random = 0,
    distractor_texts: Sequence[str] | Distractors | None = None,
    max_lead_tokens: int = MAX_LEAD_TOKENS,
    align_to: int | None = None,
) -> Probe:
    """A probe of ``task`` whose supporting fact ends exactly ``distance`` tokens before the prompt's end.

    ``seed`` is an int or a ``random.Random`` to draw from (pass one to draw many different probes).
    ``distractor_texts`` is a list of texts, a ``Distractors``, or None for the test reviews. Text before
    the first fact is up to ``max_lead_tokens`` long; with ``align_to`` (the window) it is instead just
    long enough that the prompt and the task's longest answer (``max_answer_length``) fill whole windows,
    so that read window by window from the start the question and its answer end one window: the fact
    is then in attention's reach exactly when it lies within that window; with carried keys/values too
    when ``window - carry_kv`` divides the window (``carry_kv = window // 2`` does).
    """
    check_task(task)
    if not isinstance(distance, int) or isinstance(distance, bool) or distance < 1:
        raise ValueError(f"distance must be a positive integer (tokens), got {distance!r}.")
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    distractors = as_distractors(distractor_texts, tokenizer)

    story = STORIES[task](rng)
    question, answer_span = encode_fact(tokenizer, story.question)
    prompt_question, answer_ids = question[: answer_span[0]], question[answer_span[0] : answer_span[1]]
    if distance < len(prompt_question):
        raise ValueError(
            f"distance={distance} is shorter than the {task} question ({len(prompt_question)} tokens); "
            f"use a distance of at least {len(prompt_question)}."
        )
    target, _ = encode_fact(tokenizer, story.target)
    others = [encode_fact(tokenizer, fact)[0] for fact in story.others]
    # Each free fact goes after the target while it still fits in the distance, else before it.
    room = distance - len(prompt_question)
    before = [encode_fact(tokenizer, fact)[0] for fact in story.earlier]
    after = []
    for fact in others:
        if rng.random() < 0.5 and len(fact) <= room:
            after.append(fact)
            room -= len(fact)
        else:
            before.append(fact)
    rng.shuffle(before)
    rng.shuffle(after)

    if align_to:
        # Room for the task's longest answer, not this one's: were the question to end where its own
        # answer fits the window, its position would tell a short answer from a long one.
        used = sum(map(len, before)) + len(target) + distance + max_answer_length(task, tokenizer)
        lead_tokens, cut = -used % align_to, "start"
    else:
        lead_tokens, cut = rng.randint(0, max_lead_tokens), None
    stream = distractors.stream(rng)
    lead = take_tokens(stream, lead_tokens, cut=cut)
    gap = take_tokens(stream, room, cut="end")
    lead = _interleave(rng, lead, before)
    gap = _interleave(rng, gap, after)

    input_ids = [token for part in lead for token in part]
    fact_start = len(input_ids)
    input_ids += target
    fact_end = len(input_ids)
    input_ids += [token for part in gap for token in part]
    question_start = len(input_ids)
    input_ids += prompt_question
    return Probe(
        task=task,
        input_ids=input_ids,
        answer_ids=answer_ids,
        text=tokenizer.decode(input_ids),
        answer=tokenizer.decode(answer_ids),
        fact_token_span=(fact_start, fact_end),
        question_start=question_start,
        distance=len(input_ids) - fact_end,
    )


def lengthen(probe: Probe, num_tokens: int, tokenizer, distractors: Distractors, rng: random.Random) -> Probe:
    """The same probe with ``num_tokens`` more distractor tokens in front: the distance to the fact and
    the answer stay; probes of one batch are made equally long this way, with text rather than pads."""
    if num_tokens <= 0:
        return probe
    lead = [token for part in take_tokens(distractors.stream(rng), num_tokens, cut="start") for token in part]
    input_ids = lead + probe.input_ids
    start, end = probe.fact_token_span
    return dataclasses.replace(
        probe,
        input_ids=input_ids,
        text=tokenizer.decode(input_ids),
        fact_token_span=(start + num_tokens, end + num_tokens),
        question_start=probe.question_start + num_tokens,
    )


@functools.cache
def _question_lengths(task: str, tokenizer) -> tuple[int, ...]:
    rng = random.Random(0)
    return tuple(
        encode_fact(tokenizer, STORIES[task](rng).question)[1][0] for _ in range(500)
    )  # 500 stories draw every key, person and object


@functools.cache
def max_answer_length(task: str, tokenizer) -> int:
    """The most tokens an answer of ``task`` takes: the longest place for qa1 and qa2, the digits of the
    number otherwise. Aligned probes leave room for this many, whatever their own answer's length, so
    that where the question ends in its window says nothing about the answer."""
    check_task(task)
    if task in ("qa1", "qa2"):
        facts = [Fact("", place, "", numeric=False) for place in QA1_LOCATIONS]
    else:
        facts = [Fact("", "1" * (PASSKEY_DIGITS if task == "passkey" else KV_DIGITS), "", numeric=True)]
    return max(end - start for _, (start, end) in (encode_fact(tokenizer, fact) for fact in facts))


def min_distance(task: str, tokenizer) -> int:
    """The shortest distance every probe of ``task`` allows: the longest question's prompt, in tokens."""
    check_task(task)
    return max(_question_lengths(task, tokenizer))


def _interleave(rng: random.Random, sentences: list[list[int]], facts: list[list[int]]) -> list[list[int]]:
    """Puts each fact at a random sentence boundary (or at either end)."""
    parts = list(sentences)
    for fact in facts:
        parts.insert(rng.randint(0, len(parts)), fact)
    return parts


def make_probe_dataset(
    task: str,
    distances: Sequence[int],
    samples: int,
    tokenizer,
    seed: int = 0,
    distractor_texts: Sequence[str] | Distractors | None = None,
    split: str = "train",
    max_lead_tokens: int = MAX_LEAD_TOKENS,
    align_to: int | None = None,
) -> Dataset:
    """``samples`` probes per distance as a Dataset for the Trainer (see ``probe_dataset``).

    Without ``distractor_texts`` the filler comes from the review corpus' ``split``: train for training,
    test for evaluation, so no evaluation sentence was trained on.
    """
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}.")
    distractors = as_distractors(distractor_texts, tokenizer, split)
    rng = random.Random(seed)
    return probe_dataset(
        [
            make_probe(task, distance, tokenizer, rng, distractors, max_lead_tokens, align_to)
            for distance in distances
            for _ in range(samples)
        ]
    )


def probe_dataset(probes: Sequence[Probe]) -> Dataset:
    """Probes, in order, as a Dataset for the Trainer: ``input_ids`` (prompt and answer), ``labels``
    (IGNORE_INDEX except on the answer tokens) and ``distance``."""
    return Dataset.from_dict(
        {
            "input_ids": [probe.input_ids + probe.answer_ids for probe in probes],
            "labels": [[IGNORE_INDEX] * len(probe.input_ids) + probe.answer_ids for probe in probes],
            "distance": [probe.distance for probe in probes],
        }
    )
