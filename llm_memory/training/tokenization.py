"""Byte-level BPE tokenizer, trained from scratch.

Follows GPT-2's byte-level BPE (Radford et al., 2019): text is split into UTF-8 bytes, each byte is
mapped to a printable character, and BPE merges are learned on top, so any string encodes without
unknown tokens and decodes back exactly. As in GPT-2, encoding adds no special tokens; callers place
``<|bos|>``, ``<|sep|>`` and ``<|eos|>`` themselves.

The tokenizer is a plain ``PreTrainedTokenizerFast``, so ``save_pretrained`` writes ``tokenizer.json``
and ``tokenizer_config.json`` and ``AutoTokenizer.from_pretrained`` loads it back with no custom code.
"""

from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

# The order fixes the ids 0..4, which the model config's pad/bos/eos/sep defaults rely on.
PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|eos|>"
UNK_TOKEN = "<|unk|>"
# Joins the parts of a task prompt, e.g. ``document <|sep|> summary``.
SEP_TOKEN = "<|sep|>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN, SEP_TOKEN)

# Every vocabulary holds the special tokens and one token per byte before any merge.
MIN_VOCAB_SIZE = len(SPECIAL_TOKENS) + len(pre_tokenizers.ByteLevel.alphabet())

# What the byte-level decoder puts in place of bytes that are not (yet) a whole UTF-8 character.
REPLACEMENT_CHAR = "\ufffd"


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 8192,
    min_frequency: int = 2,
    model_max_length: int = 256,
) -> PreTrainedTokenizerFast:
    """Learns a byte-level BPE of at most ``vocab_size`` tokens from ``texts``."""
    if isinstance(texts, str):
        raise ValueError("texts must be an iterable of strings, e.g. a list, not a single string.")
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: it must be at least {MIN_VOCAB_SIZE} "
            f"({len(SPECIAL_TOKENS)} special tokens + 256 byte tokens)."
        )

    num_texts = 0

    def non_empty_texts() -> Iterator[str]:
        # Counted while streaming so that a large corpus is never held in memory.
        nonlocal num_texts
        for text in texts:
            if text:
                num_texts += 1
                yield text

    backend = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    # No prefix space, so that decode(encode(text)) == text with nothing to strip.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),  # listed first, so they get ids 0..4
        # All 256 bytes, even those absent from the corpus, so no text ever needs <|unk|>.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(non_empty_texts(), trainer=trainer)
    if num_texts == 0:
        raise ValueError("texts contains no non-empty string; pass at least one text to train on.")

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        sep_token=SEP_TOKEN,
        model_max_length=model_max_length,
        padding_side="right",
    )


class Piece(NamedTuple):
    """Readable text of the tokens ``ids[start:end]``."""

    text: str
    start: int
    end: int


def readable_pieces(tokenizer: PreTrainedTokenizerFast, ids: Sequence[int]) -> list[Piece]:
    """Splits ``ids`` into consecutive pieces that each decode to whole characters.

    A byte-level token may hold only part of a character (one of the three UTF-8 bytes of 我, say);
    such a token is merged with the tokens after it until the bytes form whole characters. Special
    tokens show as their literal text. Bytes that never form a character (a window cut inside one)
    stay in their own piece and show as U+FFFD.
    """
    ids = [int(token_id) for token_id in ids]  # also accepts a tensor

    def decode(span: list[int]) -> str:
        return tokenizer.decode(span, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    # Every token alone in one call; only tokens that hold part of a character are decoded again.
    singles = tokenizer.batch_decode(
        [[token_id] for token_id in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False
    )
    pieces = []
    start = 0
    while start < len(ids):
        end = start + 1
        text = singles[start]
        while REPLACEMENT_CHAR in text and end < len(ids):
            # Joining the next token helps only if it completes a character, which shows as fewer
            # replacement characters than decoding the two parts apart. A stray byte or a whole U+FFFD
            # in the text never passes this test, so it cannot swallow the rest of the ids.
            longer = decode(ids[start : end + 1])
            apart = text.count(REPLACEMENT_CHAR) + singles[end].count(REPLACEMENT_CHAR)
            if longer.count(REPLACEMENT_CHAR) >= apart:
                break
            text, end = longer, end + 1
        pieces.append(Piece(text, start, end))
        start = end
    return pieces


def piece_texts(tokenizer: PreTrainedTokenizerFast, ids: Sequence[int]) -> list[str]:
    """The texts of ``readable_pieces``, for labels in a display."""
    return [piece.text for piece in readable_pieces(tokenizer, ids)]


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens; callers cut them to the window themselves."""
    return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
