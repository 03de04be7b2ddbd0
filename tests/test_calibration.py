"""Temperature scaling: the fit, the error it lowers, and a temperature saved with the model that
``from_pretrained`` and ``pipeline()`` apply."""

import pytest
import torch
from transformers import AutoModelForSequenceClassification, pipeline

from llm_memory import MemoryTransformerConfig, MemoryTransformerForSequenceClassification
from llm_memory.training import calibration


def over_confident(n=4000, temperature=3.0, seed=0):
    """Logits whose softmax at ``temperature`` is calibrated, shown at temperature 1 (over-confident)."""
    generator = torch.Generator().manual_seed(seed)
    calibrated = torch.randn(n, 2, generator=generator) * 1.5
    labels = torch.multinomial(calibrated.softmax(-1), 1, generator=generator)[:, 0]
    return calibrated * temperature, labels


def test_the_fitted_temperature_recovers_the_over_confidence():
    logits, labels = over_confident(temperature=3.0)
    assert calibration.fit_temperature(logits, labels) == pytest.approx(3.0, rel=0.1)
    before = calibration.expected_calibration_error(logits.softmax(-1), labels)
    after = calibration.expected_calibration_error((logits / 3.0).softmax(-1), labels)
    assert before > 0.08 and after < 0.03


def test_ece_of_a_confident_right_and_a_confident_wrong_answer():
    probabilities = torch.tensor([[0.9, 0.1], [0.9, 0.1]])
    # Confidence 0.9 in one bin with accuracy 0.5: the gap is 0.4.
    assert calibration.expected_calibration_error(probabilities, torch.tensor([0, 1])) == pytest.approx(0.4)
    assert calibration.expected_calibration_error(torch.tensor([[1.0, 0.0]]), torch.tensor([0])) == 0.0


def test_a_non_positive_temperature_is_refused():
    with pytest.raises(ValueError, match="classifier_temperature"):
        MemoryTransformerConfig(classifier_temperature=0.0)


def test_the_saved_temperature_divides_the_logits_in_pipelines(tokenizer, tmp_path):
    config = MemoryTransformerConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    torch.manual_seed(0)
    model = MemoryTransformerForSequenceClassification(config).eval()
    with torch.no_grad():
        model.score.weight.mul_(50)  # confident, so that a temperature visibly changes the scores
    texts = ["A warm and funny film.", "Dull, long and badly acted.", "Not bad at all."]
    result = calibration.calibrate(model, tokenizer, texts, [1, 0, 1])
    assert result["temperature"] == pytest.approx(model.config.classifier_temperature, rel=1e-3)
    assert result["calibrated"]["nll"] <= result["uncalibrated"]["nll"]

    model.config.classifier_temperature = 2.0
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.classifier_temperature == 2.0
    ids = tokenizer(texts[0], return_tensors="pt")
    with torch.no_grad():
        scaled = loaded(**ids).logits
        loaded.config.classifier_temperature = 1.0
        raw = loaded(**ids).logits
    torch.testing.assert_close(scaled, raw / 2.0)

    scores = pipeline("text-classification", model=str(tmp_path), top_k=None)([texts[0]])[0]
    expected = (raw / 2.0).softmax(-1)[0]
    by_label = {entry["label"]: entry["score"] for entry in scores}
    assert by_label["negative"] == pytest.approx(expected[0].item(), abs=1e-5)
    assert by_label["positive"] == pytest.approx(expected[1].item(), abs=1e-5)
