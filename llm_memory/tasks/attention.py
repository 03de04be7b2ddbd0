"""Attention: the language model's attention over a text, per layer and head, at the level of readable pieces.

A piece is a run of tokens that decodes to whole characters (``readable_pieces``), so a Chinese
character or an emoji split over several byte tokens is one row and one column. Returns arrays; the
demo draws them (``llm_memory.demo.figures``, after BertViz's two views).

Shapes: L layers, nh heads, T tokens, P readable pieces.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from llm_memory.serving.models import Models
from llm_memory.tasks.checks import InputError, check_number, clean_text
from llm_memory.training.tokenization import encode, readable_pieces


@dataclass
class AttentionResult:
    pieces: list[str]
    weights: np.ndarray  # (L, nh, P, P): rows are queries, columns keys; each row sums to 1
    layer: int
    head: int | None  # None when the heads are averaged
    token_index: int  # the query piece whose attention is highlighted (non-negative)
    truncated_tokens: int  # cut from the end of the text to fit the window
    highlights: list[tuple[str, float]]  # the query piece's attention over the pieces, scaled into [0, 1]

    @property
    def selected(self) -> np.ndarray:
        """The (P, P) matrix shown: one head, or the layer's mean over heads."""
        layer = self.weights[self.layer]
        return layer.mean(0) if self.head is None else layer[self.head]

    @property
    def title(self) -> str:
        """What ``selected`` shows: the layer, and its head or the mean of its heads."""
        return f"layer {self.layer}, " + ("mean of all heads" if self.head is None else f"head {self.head}")


def piece_attention(token_weights: np.ndarray, pieces: Sequence) -> np.ndarray:
    """(..., T, T) token attention to (..., P, P) piece attention.

    A piece's attention as a query is the mean of its tokens' rows (so a row still sums to 1); the
    attention it receives as a key is the sum over its tokens' columns.
    """
    num_tokens = token_weights.shape[-1]
    membership = np.zeros((len(pieces), num_tokens), dtype=np.float32)  # (P, T)
    for p, piece in enumerate(pieces):
        membership[p, piece.start : piece.end] = 1.0
    mean_rows = membership / membership.sum(-1, keepdims=True)
    return mean_rows @ token_weights @ membership.T


def highlights(pieces: Sequence[str], row: np.ndarray) -> list[tuple[str, float]]:
    """(piece, weight scaled to [0, 1] by the row's largest) for ``gr.HighlightedText``.

    Scaled because a causal row spreads over few keys or sinks most weight on the first one: the raw
    weights of the others would all look white.
    """
    peak = float(np.max(row)) if len(row) else 0.0
    scale = 1.0 / peak if peak > 0 else 0.0
    return [(piece, round(float(weight) * scale, 4)) for piece, weight in zip(pieces, row, strict=True)]


def attention(
    models: Models,
    text: str,
    layer: int = 0,
    head: int = 0,
    token_index: int = -1,
    average_heads: bool = False,
) -> AttentionResult:
    """The language model's attention over ``text`` at the level of readable pieces.

    Returns every layer's and head's weights, the layer and head chosen (or the mean of the layer's
    heads with ``average_heads``), and the attention from the piece at ``token_index`` (negative counts
    from the end) over the text. Text past the window is cut.
    """
    text = clean_text(text, max_chars=models.settings.max_input_chars)
    model, tokenizer = models.lm, models.lm_tokenizer
    layer = check_number("layer", layer, 0, models.num_layers - 1)
    head = check_number("head", head, 0, models.num_heads - 1)
    if not isinstance(average_heads, bool):
        raise InputError(f"average_heads must be true or false, got {average_heads!r}.")
    ids = encode(tokenizer, text)
    truncated = max(0, len(ids) - models.window)
    ids = ids[: models.window]
    pieces = readable_pieces(tokenizer, ids)
    token_index = check_number("token_index", token_index, -len(pieces), len(pieces) - 1) % len(pieces)
    with torch.no_grad():
        output = model(torch.tensor([ids]), output_attentions=True, use_cache=False)
    token_weights = torch.stack(output.attentions)[:, 0].float().numpy()  # (L, nh, T, T)
    weights = piece_attention(token_weights, pieces)
    texts = [piece.text for piece in pieces]
    selected = weights[layer].mean(0) if average_heads else weights[layer, head]
    return AttentionResult(
        pieces=texts,
        weights=weights,
        layer=layer,
        head=None if average_heads else head,
        token_index=token_index,
        truncated_tokens=truncated,
        highlights=highlights(texts, selected[token_index]),
    )
