"""The learned sentence scorer: fitted on document/summary pairs, saved with the language model, loaded
with it, and the Summarize tab's default where it exists."""

import json
import shutil
from types import SimpleNamespace

import pytest
import torch

from llm_memory import MemoryTransformerForCausalLM
from llm_memory.serving.loading import ModelLoadError
from llm_memory.serving.models import load_models
from llm_memory.tasks.checks import InputError
from llm_memory.tasks.sentence_scorer import (
    PLACE_FEATURES,
    SCORER_FILE,
    SentenceScorer,
    document_features,
    fit_sentence_scorer,
    main,
    sentence_features,
)
from llm_memory.tasks.summarize import available_methods, default_method, summarize

TOPICS = [
    "the parser",
    "a cache",
    "the lock",
    "this queue",
    "the socket",
    "a timer",
    "the buffer",
    "each row",
]
VERBS = ["reads", "drops", "keeps", "sends", "opens", "holds", "moves", "clears"]


def documents(count: int, offset: int = 0) -> tuple[list[str], list[str]]:
    """Four-sentence documents whose summary repeats the *second* sentence, never the first."""
    texts, summaries = [], []
    for i in range(offset, offset + count):
        sentences = [
            f"Note {i} opens here.",
            f"It {VERBS[i % 8]} {TOPICS[i % 8]} and {TOPICS[(i + 3) % 8]} at once.",
            f"See also item {i + 1}.",
            "Nothing else.",
        ]
        texts.append(" ".join(sentences))
        summaries.append(f"{VERBS[i % 8].capitalize()} {TOPICS[i % 8]} and {TOPICS[(i + 3) % 8]}.")
    return texts, summaries


@pytest.fixture(scope="module")
def lm(tiny_checkpoints):
    return load_models(tiny_checkpoints["model"])


@pytest.fixture(scope="module")
def scorer(lm):
    texts, summaries = documents(40)
    return fit_sentence_scorer(lm.lm, lm.lm_tokenizer, lm.window, texts, summaries)


def test_features_are_the_hidden_state_then_the_place(lm):
    document = "One here. Two there. Three at last."
    spans, features = document_features(lm.lm, lm.lm_tokenizer, lm.window, document)
    hidden = lm.lm.config.hidden_size
    assert features.shape == (3, hidden + len(PLACE_FEATURES))
    assert features[:, hidden + 2].tolist() == [1.0, 0.0, 0.0]  # "first"
    assert features[:, hidden + 1].tolist() == pytest.approx([0.0, 1 / 3, 2 / 3])  # relative position
    # The same sentence vectors, weighted by length, give the document's mean: a lone sentence is it.
    alone = sentence_features(features[:1, :hidden], [4])
    assert alone[0, hidden] == pytest.approx(1.0)


def test_a_fitted_scorer_learns_which_sentence_people_summarize(lm, scorer):
    # Held-out documents: the summary is always the second sentence, which lead never picks.
    texts, _ = documents(10, offset=100)
    picked = []
    for text in texts:
        spans, features = document_features(lm.lm, lm.lm_tokenizer, lm.window, text)
        scores = scorer.scores(features)
        picked.append(scores.index(max(scores)))
    assert picked == [1] * 10


def test_saved_with_the_model_it_becomes_the_default_method(lm, scorer, tiny_checkpoints, tmp_path):
    folder = tmp_path / "lm"
    shutil.copytree(tiny_checkpoints["model"], folder)
    assert load_models(str(folder)).sentence_scorer is None
    scorer.save(folder)
    models = load_models(str(folder))
    assert models.sentence_scorer == scorer
    assert default_method(models) == "learned" and available_methods(models)[0] == "learned"
    text = documents(1, offset=200)[0][0]
    result = summarize(models, text, 1)
    assert result.method == "learned" and result.picked == [1]
    # Without a scorer: lead, and the learned method says how to get one.
    assert default_method(lm) == "lead" and "learned" not in available_methods(lm)
    with pytest.raises(InputError, match="python -m llm_memory.tasks.sentence_scorer --model FOLDER"):
        summarize(lm, text, 1, method="learned")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda data: "not json", "cannot be read"),
        (lambda data: {**data, "format": "other"}, "is not a llm-memory sentence scorer file"),
        (lambda data: {**data, "coef": data["coef"][:-1]}, "coef must hold"),
        (lambda data: {**data, "scale": [0.0] * len(data["scale"])}, "scale must be positive"),
        (lambda data: {**data, "hidden_size": data["hidden_size"] * 2}, "must hold"),
    ],
)
def test_a_broken_scorer_file_stops_loading_with_what_to_do(
    scorer, tiny_checkpoints, tmp_path, damage, message
):
    folder = tmp_path / "lm"
    shutil.copytree(tiny_checkpoints["model"], folder)
    data = json.loads(scorer.save(folder).read_text())
    broken = damage(data)
    (folder / SCORER_FILE).write_text(broken if isinstance(broken, str) else json.dumps(broken))
    with pytest.raises(ModelLoadError, match=message) as error:
        load_models(str(folder))
    assert "python -m llm_memory.tasks.sentence_scorer --model FOLDER" in str(error.value)


def test_a_scorer_for_another_hidden_size_is_refused(scorer, tmp_path):
    path = scorer.save(tmp_path)
    other = SimpleNamespace(config=SimpleNamespace(hidden_size=7))
    with pytest.raises(
        ValueError, match=f"hidden states of size {scorer.hidden_size}, but the model's are 7"
    ):
        SentenceScorer.load(path, other)


def test_a_scorer_beside_retrained_weights_is_refused(scorer, tiny_checkpoints, tmp_path):
    folder = tmp_path / "lm"
    shutil.copytree(tiny_checkpoints["model"], folder)
    scorer.save(folder)
    model = MemoryTransformerForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        model.get_input_embeddings().weight[0, 0] += 1.0  # the same shapes, other weights
    model.save_pretrained(folder)
    with pytest.raises(ModelLoadError, match="fitted on another model's hidden states"):
        load_models(str(folder))


def test_pairs_without_a_shared_word_cannot_fit(lm):
    with pytest.raises(ValueError, match="give more pairs"):
        fit_sentence_scorer(lm.lm, lm.lm_tokenizer, lm.window, ["Alpha beta. Gamma delta."], ["Zeta."])


@pytest.mark.slow  # reads the package docstrings corpus
def test_the_command_fits_on_package_docstrings_and_reports_against_lead(tiny_checkpoints, tmp_path, capsys):
    assert (
        main(
            [
                "--model",
                tiny_checkpoints["model"],
                "--output",
                str(tmp_path),
                "--max_pairs",
                "30",
                "--validation_pairs",
                "10",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "learned ROUGE-1" in out and "lead ROUGE-1" in out
    fitted = json.loads((tmp_path / SCORER_FILE).read_text())["fitted"]
    assert fitted["data"] == "package_docstrings train, 30 pairs shuffled with seed 0"
    assert set(fitted["validation_rouge"]) == {"learned", "lead"}


def test_the_embedded_language_model_ships_a_scorer_that_beat_lead_on_validation():
    folder = "checkpoints/memory-lm"
    model = MemoryTransformerForCausalLM.from_pretrained(folder)  # the scorer matches its weights
    fitted = SentenceScorer.load(f"{folder}/{SCORER_FILE}", model).fitted
    assert fitted["model"] == folder and fitted["data"].startswith("package_docstrings train")
    learned, lead = fitted["validation_rouge"]["learned"], fitted["validation_rouge"]["lead"]
    assert learned["rouge1"] > lead["rouge1"] and learned["rougeL"] > lead["rougeL"]


def test_the_command_needs_a_folder_to_save_into(capsys):
    with pytest.raises(SystemExit):
        main(["--model", "someone/a-hub-model"])
    assert "is not a local folder; give --output FOLDER" in capsys.readouterr().err
