"""The pretraining mix: its sources, fixed splits, the held-out English text and the rebuild command."""

import json

import pytest

from llm_memory.training import data, data_mix, sources
from llm_memory.training.reviews import load_movie_reviews


@pytest.fixture(scope="module")
def mix():
    return data_mix.load_lm_mix()


def test_the_mix_trains_on_reviews_and_english_text_and_keeps_the_review_splits(mix):
    reviews = load_movie_reviews()
    sources = set(mix["train"]["source"])
    assert sources == {"imdb", "rotten_tomatoes", "wikipedia", "news"}
    assert mix["validation"]["text"] == reviews["validation"]["text"]
    assert mix["test"]["text"] == reviews["test"]["text"]
    assert set(mix["test_english"]["source"]) == {"wikipedia", "news"}
    train_texts = set(mix["train"]["text"])
    assert not train_texts & set(mix["test"]["text"])  # no test review is trained on
    assert not train_texts & set(mix["test_english"]["text"])
    english = [
        t for t, s in zip(mix["train"]["text"], mix["train"]["source"], strict=True) if s == "wikipedia"
    ]
    assert len(english) > 50 and all(len(text.split()) >= data_mix.MIN_ARTICLE_WORDS for text in english)
    # About a tenth of the English documents are held out.
    held_out = len(mix["test_english"])
    assert (
        0.08 < held_out / (held_out + sum(s in ("wikipedia", "news") for s in mix["train"]["source"])) < 0.12
    )


def test_the_mix_is_the_same_in_every_call_and_does_not_follow_the_training_seed():
    first = sources.load_text_dataset(dataset_name="lm_mix", seed=1)
    second = sources.load_text_dataset(dataset_name="builtin:lm_mix", seed=2)
    assert first["train"]["text"] == second["train"]["text"]
    assert (
        sources.load_text_dataset("movie_reviews", seed=5)["test"]["text"]
        == load_movie_reviews()["test"]["text"]
    )


def test_wikitext_markup_is_removed():
    raw = "'''Achilles''' (; ) was a ''hero''.\n\n== Etymology ==\nHis   name\n\n\n\nis old."
    assert data_mix.clean_wikitext(raw) == "Achilles was a hero.\n\nEtymology\nHis name\n\nis old."


def test_the_rebuild_command_writes_every_split_and_a_manifest(tmp_path, mix, capsys):
    assert data_mix.main(["--output_dir", str(tmp_path)]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["packages"]) == {"movie-reviews", "gensim"}
    for split in ("train", "validation", "test", "test_english"):
        lines = (tmp_path / f"{split}.jsonl").read_text(encoding="utf-8").rstrip("\n").split("\n")
        assert len(lines) == len(mix[split])
        assert sum(c["rows"] for c in manifest["splits"][split].values()) == len(mix[split])
    assert json.loads(lines[0])["text"] == mix["test_english"][0]["text"]
    assert "train: imdb" in capsys.readouterr().out


def test_a_missing_gensim_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_gensim(name, *args, **kwargs):
        if name == "gensim" or name.startswith("gensim."):
            raise ImportError("No module named 'gensim'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gensim)
    with pytest.raises(data.DataError, match="pip install gensim"):
        data_mix.load_news()


def test_the_sentiment_mix_reads_reviews_whole_by_their_ends_and_critic_sentences():
    mix = data_mix.load_sentiment_mix()
    reviews = load_movie_reviews()
    assert set(mix) == {"train", "validation"}
    train = mix["train"]
    assert set(train["kind"]) == {"review", "review end", "critic sentence"}
    assert train.features["label"].names == ["negative", "positive"]
    whole = {t: y for t, y in zip(reviews["train"]["text"], reviews["train"]["label"], strict=True)}
    ends = [
        (t, y)
        for t, y, k in zip(train["text"], train["label"], train["kind"], strict=True)
        if k == "review end"
    ]
    assert len(ends) > 0.9 * sum(s == "imdb" for s in reviews["train"]["source"])
    # Each end is the tail of a training review with the same label.
    by_tail = {}
    for review, label in whole.items():
        by_tail.setdefault(review[-15:], []).append((review, label))
    for text, label in ends[:200]:
        assert (label, True) in {(y, review.endswith(text)) for review, y in by_tail[text[-15:]]}
        assert len(text.split()) >= data_mix.MIN_END_WORDS
    assert not set(train["text"]) & set(reviews["test"]["text"])
    assert data_mix.load_sentiment_mix()["train"]["text"] == train["text"]  # the same every time


def test_sentence_pairs_take_the_label_of_the_clause_a_contrast_favours():
    import random

    negative = ["The plot is a mess.", "Dull and far too long."]
    positive = ["The acting is superb.", "A warm and funny film!"]
    rows = data_mix.sentence_pairs(negative + positive, [0, 0, 1, 1], random.Random(0), 300)
    assert len(rows) == 300
    assert {kind for _, _, kind in rows} == {"contrast pair", "joined pair"}
    clauses = {
        0: {"the plot is a mess", "dull and far too long"},
        1: {"the acting is superb", "a warm and funny film"},
    }
    for text, label, kind in rows:
        assert text.endswith(".") and text[0].isupper()
        if text.startswith("Although "):
            first, second = text.removeprefix("Although ").removesuffix(".").split(", ", 1)
        else:
            first, joiner, second = text.removesuffix(".").partition(
                ", but " if kind == "contrast pair" else ", and "
            )
            assert joiner
        first, second = first.lower(), second.lower()
        first_label = 0 if first in clauses[0] else 1
        assert first in clauses[first_label] and second in clauses[label]
        assert (label == first_label) == (kind == "joined pair")
    # Each label and kind is well represented: the contrast word alone does not decide the label.
    contrast = [label for _, label, kind in rows if kind == "contrast pair"]
    joined = [label for _, label, kind in rows if kind == "joined pair"]
    assert 0.3 < sum(contrast) / len(contrast) < 0.7 and 0.3 < sum(joined) / len(joined) < 0.7
    assert len(joined) > 50
    # A sentence too long for a clause is not used; a label with no sentences gives no pairs.
    assert data_mix.sentence_pairs(["word " * 30, "Fine."], [0, 1], random.Random(0), 5) == []


def test_the_sentiment_pairs_mix_adds_pairs_of_each_splits_own_critic_sentences():
    plain, paired = data_mix.load_sentiment_mix(), data_mix.load_sentiment_mix(pairs=True)
    for name in ("train", "validation"):
        kinds = paired[name]["kind"]
        pairs = [t for t, k in zip(paired[name]["text"], kinds, strict=True) if k.endswith("pair")]
        critic = [
            t for t, k in zip(plain[name]["text"], plain[name]["kind"], strict=True) if k == "critic sentence"
        ]
        assert len(paired[name]) == len(plain[name]) + len(pairs)
        assert len(pairs) == round(data_mix.PAIRS_PER_SENTENCE * len(critic))
        # Every clause is a critic sentence of the same split (the validation pairs never reuse training text).
        clauses = {data_mix._clause(t).lower() for t in critic}
        for text in pairs[:100]:
            body = text.removeprefix("Although ").removesuffix(".").lower()
            assert any(body.startswith(c) for c in clauses) and any(body.endswith(c) for c in clauses), text
    assert data_mix.load_sentiment_mix(pairs=True)["train"]["text"] == paired["train"]["text"]


def test_a_review_end_is_its_last_sentences():
    import random

    text = "It starts well. Then it drags on. The ending is a triumph and I loved it."
    ends = {data_mix.review_end(text, random.Random(seed)) for seed in range(20)}
    assert ends <= {
        "The ending is a triumph and I loved it.",
        "Then it drags on. The ending is a triumph and I loved it.",
    }
    assert data_mix.review_end("One sentence only.", random.Random(0)) is None
