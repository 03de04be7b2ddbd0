"""Byte-level BPE: exact round trips, fixed special-token ids, save/load parity, readable pieces."""

import json

import pytest
from transformers import AutoTokenizer

from llm_memory.training.tokenization import (
    BOS_TOKEN,
    EOS_TOKEN,
    MIN_VOCAB_SIZE,
    PAD_TOKEN,
    REPLACEMENT_CHAR,
    SEP_TOKEN,
    SPECIAL_TOKENS,
    UNK_TOKEN,
    Piece,
    piece_texts,
    readable_pieces,
    train_tokenizer,
)

SAMPLES = {
    "english": 'The film\'s plot, honestly? Weak.\n\n  Two spaces, a tab\tand 3.14 -- "quotes" (done).',
    "chinese": "我喜欢编程",
    "emoji": "👩‍💻 codes 🎉; flags 🇫🇷🇯🇵, skin tone 👍🏽, family 👨‍👩‍👧‍👦 😀",
    "mixed": "Review: 我喜欢编程 👩‍💻 — naïve café, ünïcödé, Ελληνικά, русский, עברית!\r\n",
    "empty": "",
    "whitespace": " \n\t  ",
    "replacement_char": "a \ufffd b",
}


def encode(tokenizer, text):
    return tokenizer(text)["input_ids"]


@pytest.mark.parametrize("text", SAMPLES.values(), ids=SAMPLES.keys())
def test_round_trip_is_exact(tokenizer, text):
    ids = encode(tokenizer, text)
    assert tokenizer.decode(ids) == text
    # Byte fallback means nothing is ever unknown.
    assert tokenizer.unk_token_id not in ids


def test_special_tokens_have_fixed_ids(tokenizer):
    assert tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [0, 1, 2, 3, 4]
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == (PAD_TOKEN, 0)
    assert (tokenizer.bos_token, tokenizer.bos_token_id) == (BOS_TOKEN, 1)
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == (EOS_TOKEN, 2)
    assert (tokenizer.unk_token, tokenizer.unk_token_id) == (UNK_TOKEN, 3)
    assert (tokenizer.sep_token, tokenizer.sep_token_id) == (SEP_TOKEN, 4)
    assert tokenizer.padding_side == "right"
    assert tokenizer.model_max_length == 256


def test_no_special_tokens_are_added_and_literal_ones_are_kept(tokenizer):
    assert encode(tokenizer, "a") == tokenizer.convert_tokens_to_ids(["a"])
    text = f"{BOS_TOKEN}a long document{SEP_TOKEN}its summary{EOS_TOKEN}"
    ids = encode(tokenizer, text)
    assert ids[0] == tokenizer.bos_token_id
    assert ids[-1] == tokenizer.eos_token_id
    assert ids.count(tokenizer.sep_token_id) == 1
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a long documentits summary"


def test_padding_goes_right_with_pad_id(tokenizer):
    batch = tokenizer(["a", "a b c"], padding=True)
    short, long = batch["input_ids"]
    assert len(short) == len(long)
    assert short[1:] == [tokenizer.pad_token_id] * (len(short) - 1)
    assert batch["attention_mask"][0] == [1] + [0] * (len(short) - 1)
    assert "token_type_ids" not in batch


@pytest.mark.parametrize("vocab_size", [MIN_VOCAB_SIZE + 1, MIN_VOCAB_SIZE + 40, 10_000])
def test_vocab_size_is_respected(vocab_size):
    tokenizer = train_tokenizer(list(SAMPLES.values()) * 3, vocab_size=vocab_size)
    assert MIN_VOCAB_SIZE < len(tokenizer) <= vocab_size
    assert sorted(tokenizer.get_vocab().values()) == list(range(len(tokenizer)))


def test_save_and_auto_load_give_the_same_tokenizer(tokenizer, tokenizer_dir):
    loaded = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert loaded.all_special_tokens == tokenizer.all_special_tokens
    for name in ("pad", "bos", "eos", "unk", "sep"):
        assert getattr(loaded, f"{name}_token_id") == getattr(tokenizer, f"{name}_token_id")
    assert (loaded.padding_side, loaded.model_max_length) == ("right", 256)
    for text in SAMPLES.values():
        ids = encode(tokenizer, text)
        assert encode(loaded, text) == ids
        assert loaded.decode(ids) == text
    # Plain tokenizer.json + config: loadable without any code from this package.
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "TokenizersBackend"
    assert (tokenizer_dir / "tokenizer.json").is_file()


def assert_pieces_are_whole(tokenizer, ids, pieces):
    # Contiguous spans from the first id to the last.
    assert [piece.start for piece in pieces] == [0] + [piece.end for piece in pieces[:-1]]
    assert pieces[-1].end == len(ids)
    for piece in pieces:
        assert piece.start < piece.end
        assert REPLACEMENT_CHAR not in piece.text, piece
        assert piece.text == tokenizer.decode(ids[piece.start : piece.end])
    assert "".join(piece.text for piece in pieces) == tokenizer.decode(ids)


@pytest.mark.parametrize("key", ["chinese", "emoji", "mixed", "english"])
def test_readable_pieces_are_whole_characters(tokenizer, key):
    ids = encode(tokenizer, SAMPLES[key])
    pieces = readable_pieces(tokenizer, ids)
    assert_pieces_are_whole(tokenizer, ids, pieces)
    assert piece_texts(tokenizer, ids) == [piece.text for piece in pieces]
    if key != "english":
        # Otherwise the sample would not exercise the merging at all.
        assert any(REPLACEMENT_CHAR in tokenizer.decode([token_id]) for token_id in ids)
        assert len(pieces) < len(ids)


def test_readable_pieces_join_tokens_across_a_character_boundary(tokenizer):
    # The test tokenizer learns a token holding 我 and the first byte of 喜.
    ids = encode(tokenizer, "我喜欢编程")
    first = readable_pieces(tokenizer, ids)[0]
    assert tokenizer.decode(ids[:1]) == "我" + REPLACEMENT_CHAR
    assert first == Piece("我喜", 0, first.end)


def test_readable_pieces_show_special_tokens_and_plain_words(tokenizer):
    ids = encode(tokenizer, f"{BOS_TOKEN}good film{SEP_TOKEN}")
    texts = piece_texts(tokenizer, ids)
    assert texts[0] == BOS_TOKEN
    assert texts[-1] == SEP_TOKEN
    assert len(texts) == len(ids)  # ASCII never needs merging
    assert "".join(texts) == f"{BOS_TOKEN}good film{SEP_TOKEN}"


def test_readable_pieces_keep_a_cut_character_apart(tokenizer):
    # A window that starts inside 👩: its trailing bytes can never become whole, so they must not
    # swallow what follows.
    ids = encode(tokenizer, "👩 ok 我")
    assert REPLACEMENT_CHAR in tokenizer.decode(ids[:1])
    cut = ids[1:]
    pieces = readable_pieces(tokenizer, cut)
    assert "".join(piece.text for piece in pieces) == tokenizer.decode(cut)
    broken = [piece for piece in pieces if REPLACEMENT_CHAR in piece.text]
    assert broken and all(set(piece.text) == {REPLACEMENT_CHAR} for piece in broken)
    assert "".join(piece.text for piece in pieces if piece not in broken) == " ok 我"
    assert pieces[-1].text.endswith("我")


def test_readable_pieces_of_nothing(tokenizer):
    assert readable_pieces(tokenizer, []) == []


def test_literal_replacement_char_is_one_piece(tokenizer):
    ids = encode(tokenizer, SAMPLES["replacement_char"])
    texts = piece_texts(tokenizer, ids)
    assert "".join(texts) == SAMPLES["replacement_char"]
    assert REPLACEMENT_CHAR in texts


@pytest.mark.parametrize("vocab_size", [0, 100, MIN_VOCAB_SIZE - 1])
def test_too_small_vocab_is_rejected(vocab_size):
    with pytest.raises(ValueError, match=f"vocab_size={vocab_size} is too small"):
        train_tokenizer(["some text"], vocab_size=vocab_size)


@pytest.mark.parametrize("texts", [[], ["", ""], iter([])], ids=["empty", "blank", "empty_iterator"])
def test_no_text_is_rejected(texts):
    with pytest.raises(ValueError, match="no non-empty string"):
        train_tokenizer(texts, vocab_size=MIN_VOCAB_SIZE)


def test_single_string_is_rejected():
    with pytest.raises(ValueError, match="not a single string"):
        train_tokenizer("one long text", vocab_size=MIN_VOCAB_SIZE)


def test_smallest_vocab_is_bytes_only_and_still_exact():
    tokenizer = train_tokenizer(["tiny corpus"], vocab_size=MIN_VOCAB_SIZE, min_frequency=1)
    assert len(tokenizer) == MIN_VOCAB_SIZE
    text = SAMPLES["mixed"]
    ids = encode(tokenizer, text)
    assert len(ids) == len(text.encode("utf-8"))
    assert tokenizer.decode(ids) == text
    assert "".join(piece_texts(tokenizer, ids)) == text
