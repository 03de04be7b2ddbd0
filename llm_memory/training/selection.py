"""Extractive summarization as classification: a summarization-tuned selector of a document's sentences.

The selector reads a document with one sentence marked (``[[ sentence ]]`` in place) and says whether
that sentence is the one a summary would take: the sentence with the highest ROUGE-1 against the
author's summary, the extractive oracle label of supervised extractive summarizers (BertSum, Liu &
Lapata, 2019, marks sentences in the same spirit). Reading the whole document around the mark, it can
weigh the sentence's content, its place and what the rest says. At summary time each sentence is marked
in turn and ranked by the selector's probability of ``summary`` (``tasks.summarize``).

Training rows (``docstring_selection``, a built-in dataset): the package docstring pairs
(``docstrings.load_package_docstrings``: the first paragraph of a docstring is its author's summary of
the rest), per document the oracle sentence (label ``summary``) and up to ``NEGATIVES_PER_DOCUMENT``
other sentences (label ``other``), each marked in the whole document. Only sentences that end within
``MAX_MARK_WORDS`` words of the start are used, so that the mark stays inside a 256-token window. The
standard-library pairs stay out: they are the benchmark's test set.
"""

import random

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from llm_memory.tasks.sentence_scorer import MAX_FIT_SENTENCES, oracle_sentence
from llm_memory.training.data import split_sentences

MARK_OPEN, MARK_CLOSE = "[[", "]]"
SELECTION_LABELS = ["other", "summary"]
SUMMARY_LABEL = SELECTION_LABELS.index("summary")
# Documents of 2 to MAX_FIT_SENTENCES sentences (as the sentence scorer is fitted on); a marked sentence
# ends within MAX_MARK_WORDS words of the start.
MAX_MARK_WORDS = 150
NEGATIVES_PER_DOCUMENT = 2

SELECTION_FEATURES = Features({"text": Value("string"), "label": ClassLabel(names=SELECTION_LABELS)})


def is_selector(config) -> bool:
    """Whether a model config is a selector's: a classifier with exactly the labels ``other``, ``summary``."""
    labels = getattr(config, "id2label", None) or {}
    return [labels[i] for i in sorted(labels)] == SELECTION_LABELS


def marked_document(document: str, spans: list[tuple[int, int]], index: int) -> str:
    """``document`` with sentence ``index`` (of ``spans``) between ``MARK_OPEN`` and ``MARK_CLOSE``."""
    start, end = spans[index]
    return f"{document[:start]}{MARK_OPEN} {document[start:end].strip()} {MARK_CLOSE}{document[end:]}"


def selection_rows(
    documents: list[str], summaries: list[str], rng: random.Random, negatives: int = NEGATIVES_PER_DOCUMENT
) -> dict[str, list]:
    """Rows ``text`` (a marked document) and ``label`` (``SUMMARY_LABEL`` for the oracle sentence), as the
    module docstring describes; documents whose oracle sentence ends past ``MAX_MARK_WORDS`` are left out."""
    from rouge_score import rouge_scorer  # only building the rows needs it (and nltk under it)

    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)
    rows: dict[str, list] = {"text": [], "label": []}
    for document, summary in zip(documents, summaries, strict=True):
        spans = split_sentences(document)
        if not 2 <= len(spans) <= MAX_FIT_SENTENCES:
            continue
        reachable = [i for i, (_, end) in enumerate(spans) if len(document[:end].split()) <= MAX_MARK_WORDS]
        best = oracle_sentence(document, spans, summary, scorer)
        if best is None or best not in reachable:
            continue
        others = [i for i in reachable if i != best]
        for index in [best, *rng.sample(others, min(negatives, len(others)))]:
            rows["text"].append(marked_document(document, spans, index))
            rows["label"].append(SUMMARY_LABEL if index == best else 1 - SUMMARY_LABEL)
    return rows


def load_docstring_selection(seed: int = 0) -> DatasetDict:
    """``train`` and ``validation`` selection rows from the package docstring pairs' own splits."""
    from llm_memory.training.docstrings import load_package_docstrings

    pairs = load_package_docstrings()
    splits = {}
    for name in ("train", "validation"):
        rows = selection_rows(
            pairs[name]["document"], pairs[name]["summary"], random.Random(f"{seed}-selection-{name}")
        )
        splits[name] = Dataset.from_dict(rows, features=SELECTION_FEATURES).shuffle(seed=seed)
    return DatasetDict(splits)
