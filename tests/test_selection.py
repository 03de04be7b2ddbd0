"""The summarization-tuned sentence selector: its training rows, and its use as the summarizer."""

import random

import pytest
import torch

from llm_memory import MemoryTransformerForSequenceClassification
from llm_memory.serving.models import load_models
from llm_memory.tasks.summarize import is_abstractive, selector_salience, summarize
from llm_memory.training import selection, sources
from llm_memory.training.calibration import predict_logits
from llm_memory.training.data import split_sentences
from tests.conftest import make_tiny_config

SELECTOR_LABELS = {"id2label": {0: "other", 1: "summary"}, "label2id": {"other": 0, "summary": 1}}


def test_a_marked_document_holds_the_sentence_between_the_marks_in_place():
    document = "First one here. The second sentence.  Third!"
    spans = split_sentences(document)
    marked = selection.marked_document(document, spans, 1)
    assert marked == "First one here. [[ The second sentence. ]]  Third!"
    assert marked.replace("[[ ", "").replace(" ]]", "") == document


def test_selection_rows_label_the_oracle_sentence_and_sample_others_within_reach():
    documents = [
        "The cat sat. Values are summed here. Nothing else matters. Another line.",
        "Alpha beta. Gamma delta.",  # shares no word with its summary: left out
        " ".join(f"Filler sentence {i}." for i in range(80))
        + " Values are summed here.",  # oracle out of reach
        "Only one sentence here.",  # one sentence: nothing to choose
    ]
    summaries = ["Sum the values.", "Zeta.", "Sum the values.", "One sentence."]
    rows = selection.selection_rows(documents, summaries, random.Random(0), negatives=2)
    assert len(rows["text"]) == 3 and rows["label"] == [selection.SUMMARY_LABEL, 0, 0]
    assert "[[ Values are summed here. ]]" in rows["text"][0]
    assert len(set(rows["text"])) == 3 and all(text.count("[[") == 1 for text in rows["text"])
    assert selection.SELECTION_LABELS[selection.SUMMARY_LABEL] == "summary"


def test_docstring_selection_is_a_built_in_dataset_with_a_card():
    assert "docstring_selection" in sources.BUILTIN_DATASETS
    card = sources.describe_dataset("docstring_selection")
    assert card["dataset_type"] == "docstring_selection" and "marked" in card["dataset_name"]


def test_a_selector_config_is_told_by_its_labels(tiny_config):
    assert selection.is_selector(tiny_config(num_labels=2, **SELECTOR_LABELS))
    assert not selection.is_selector(tiny_config(num_labels=2, id2label={0: "neg", 1: "pos"}))
    assert not selection.is_selector(tiny_config())


@pytest.fixture(scope="module")
def models_with_selector(tiny_checkpoints, tokenizer, tmp_path_factory):
    torch.manual_seed(3)
    config = make_tiny_config(vocab_size=len(tokenizer), num_labels=2, pad_token_id=0, **SELECTOR_LABELS)
    folder = tmp_path_factory.mktemp("selector") / "selector"
    MemoryTransformerForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return load_models(tiny_checkpoints["model"], tiny_checkpoints["classifier"], str(folder))


def test_a_selector_loads_as_the_summarizer_and_picks_by_its_probability(models_with_selector):
    models = models_with_selector
    assert isinstance(models.summarizer, MemoryTransformerForSequenceClassification)
    assert not is_abstractive(models)
    assert models.summarizer_tokenizer.truncation_side == "right"  # the marks are near the start
    document = "The cache holds recent pages. It is bounded. Old pages are dropped first. Reads are fast."
    result = summarize(models, document, num_sentences=2, method="summarizer")  # abstractive asked: none
    assert result.abstract is None
    spans = split_sentences(document)
    texts = [selection.marked_document(document, spans, i) for i in range(len(spans))]
    with torch.no_grad():
        expected = torch.log_softmax(
            predict_logits(models.summarizer, models.summarizer_tokenizer, texts), -1
        )
    assert result.scores == pytest.approx(expected[:, selection.SUMMARY_LABEL].tolist(), abs=1e-5)
    best = sorted(range(len(spans)), key=lambda i: (-result.scores[i], i))[:2]
    assert result.picked == sorted(best)


def test_sentences_whose_mark_is_past_the_selectors_window_rank_last(models_with_selector):
    models = models_with_selector
    document = " ".join(f"Sentence {i} says something about caches." for i in range(40))
    spans = split_sentences(document)
    scores = selector_salience(models, document, spans)
    fits = [s > -1e5 for s in scores]
    assert fits[0] and not fits[-1]
    assert fits == sorted(fits, reverse=True)  # a prefix of the sentences fits the window
    late = [s for s in scores if s <= -1e5]
    assert late == sorted(late, reverse=True)  # the earlier of those first
    assert min(s for s in scores if s > -1e5) > max(late)
