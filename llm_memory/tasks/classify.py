"""Classify: label probabilities of a text and each readable piece's signed attribution to the top label.

Attributions are gradient x input on the input embeddings (Shrikumar et al., 2016), summed over the
tokens of each readable piece; requests that arrive together share one pass (``ClassifyBatcher``).
"""

from dataclasses import dataclass

from transformers import PreTrainedModel

from llm_memory.serving.loading import context_window
from llm_memory.serving.models import Models
from llm_memory.tasks.checks import clean_text
from llm_memory.training.data import truncate, truncation_side
from llm_memory.training.tokenization import encode, readable_pieces


@dataclass
class ClassifyResult:
    probabilities: dict[str, float]
    label: str
    # (piece, gradient x input summed over the piece's tokens): positive pushes towards ``label``.
    attributions: list[tuple[str, float]]
    truncated_tokens: int  # cut from the text to fit the window
    truncated_side: str = "right"  # the end they were cut from: the tokenizer's truncation side

    def highlights(self) -> list[tuple[str, float]]:
        """Attributions scaled into [-1, 1] by the largest magnitude, for ``gr.HighlightedText``."""
        peak = max((abs(score) for _, score in self.attributions), default=0.0) or 1.0
        return [(piece, round(score / peak, 4)) for piece, score in self.attributions]


def label_names(model: PreTrainedModel) -> list[str]:
    id2label = model.config.id2label or {}
    return [str(id2label.get(i, f"LABEL_{i}")) for i in range(model.config.num_labels)]


def classify(models: Models, text: str) -> ClassifyResult:
    """Label probabilities for ``text`` and each readable piece's signed attribution to the top label.

    The classifier reads one window of tokens: the first, or the last when its tokenizer truncates on
    the left (as the embedded one, trained on the ends of reviews, does); the rest is reported in
    ``truncated_tokens``.
    """
    if models.classifier is None:
        raise RuntimeError("No classifier is loaded; load one with load_models(..., classifier_path=...).")
    text = clean_text(text, max_chars=models.settings.max_input_chars)
    model, tokenizer = models.classifier, models.classifier_tokenizer
    ids = encode(tokenizer, text)
    window = context_window(model, tokenizer)
    truncated = max(0, len(ids) - window)
    ids = truncate(ids, window, tokenizer)
    pieces = readable_pieces(tokenizer, ids)  # before the pass: done while others' texts are classified
    probabilities, target, token_scores = models.classify_batcher.run(ids)
    labels = label_names(model)
    scores = token_scores.tolist()
    attributions = [(piece.text, sum(scores[piece.start : piece.end])) for piece in pieces]
    return ClassifyResult(
        dict(zip(labels, probabilities, strict=True)),
        labels[target],
        attributions,
        truncated,
        truncation_side(tokenizer),
    )
