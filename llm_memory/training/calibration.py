"""Calibrated classifier probabilities: temperature scaling fitted on validation data, and its measure.

A classifier trained to low loss is often over-confident: its 0.99 is right far less than 99% of the
time. Temperature scaling (Guo et al., 2017) divides the logits by one number T fitted to minimize the
negative log-likelihood of held-out data; the predicted label never changes, only how sure it is. T is
saved in the config (``classifier_temperature``) and the model divides its logits by it, so
``pipeline("text-classification")``, the demo and any ``from_pretrained`` user get calibrated
probabilities. ECE (expected calibration error) is the measure: the mean gap between confidence and
accuracy over equal-width confidence bins, weighted by the share of texts in each.

    python -m llm_memory.training.calibration --model checkpoints/sentiment   # fits on the review validation split
"""

import argparse
import json
import math
from collections.abc import Sequence

import torch

from llm_memory.memory.recurrence import windowed_classification_logits
from llm_memory.training.reviews import load_movie_reviews

ECE_BINS = 15
# T is searched in [e^-3, e^3]; a model needing more is broken, not over-confident.
LOG_TEMPERATURE_BOUND = 3.0


def expected_calibration_error(
    probabilities: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS
) -> float:
    """Top-label ECE of (N, C) probabilities against (N,) labels, with ``bins`` equal-width bins."""
    confidence, predicted = probabilities.max(-1)
    correct = (predicted == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    error = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            error += in_bin.float().mean().item() * abs(
                correct[in_bin].mean().item() - confidence[in_bin].mean().item()
            )
    return error


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T > 0 that minimizes the cross entropy of ``logits / T`` (a 1-D search on log T)."""
    logits, labels = logits.double(), labels.long()

    def loss(log_t: float) -> float:
        return torch.nn.functional.cross_entropy(logits / math.exp(log_t), labels).item()

    # Golden-section search: the loss is unimodal in log T for a fixed set of logits.
    low, high = -LOG_TEMPERATURE_BOUND, LOG_TEMPERATURE_BOUND
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    loss_a, loss_b = loss(a), loss(b)
    for _ in range(80):
        if loss_a < loss_b:
            high, b, loss_b = b, a, loss_a
            a = high - ratio * (high - low)
            loss_a = loss(a)
        else:
            low, a, loss_a = a, b, loss_b
            b = low + ratio * (high - low)
            loss_b = loss(b)
    return math.exp((low + high) / 2)


@torch.no_grad()
def predict_logits(
    model, tokenizer, texts: Sequence[str], batch_size: int = 32, memory_windows: int = 1
) -> torch.Tensor:
    """(N, C) logits as the model reports them (its current temperature applied), each text read as the
    tokenizer truncates it to the model's window, as a pipeline with ``truncation=True`` does; with
    ``memory_windows`` > 1, up to that many windows, read one by one with the LSTM state carried."""
    window = model.config.max_position_embeddings
    model.eval()
    padding_side = "left" if memory_windows > 1 else tokenizer.padding_side
    outputs = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            list(texts[start : start + batch_size]),
            truncation=True,
            max_length=window * memory_windows,
            padding=True,
            padding_side=padding_side,
            return_tensors="pt",
        ).to(model.device)
        if memory_windows > 1:
            logits = windowed_classification_logits(
                model, batch["input_ids"], batch["attention_mask"], window
            )
        else:
            logits = model(**batch).logits
        outputs.append(logits.float().cpu())
    return torch.cat(outputs)


def calibrate(
    model,
    tokenizer,
    texts: Sequence[str],
    labels: Sequence[int],
    batch_size: int = 32,
    memory_windows: int = 1,
) -> dict:
    """Fits the temperature on (texts, labels), sets it in ``model.config`` and returns the figures
    before and after: temperature, ECE, negative log-likelihood and accuracy (which does not change).
    ``memory_windows``: the texts are read as ``predict_logits`` reads them."""
    current = model.config.classifier_temperature
    raw = predict_logits(model, tokenizer, texts, batch_size, memory_windows) * current
    labels = torch.tensor(list(labels))
    temperature = fit_temperature(raw, labels)
    model.config.classifier_temperature = temperature

    def figures(t: float) -> dict:
        scaled = raw / t
        return {
            "ece": round(expected_calibration_error(scaled.softmax(-1), labels), 4),
            "nll": round(torch.nn.functional.cross_entropy(scaled, labels).item(), 4),
        }

    return {
        "temperature": round(temperature, 4),
        "accuracy": round((raw.argmax(-1) == labels).float().mean().item(), 4),
        "uncalibrated": figures(1.0),
        "calibrated": figures(temperature),
        "examples": len(texts),
    }


def main(argv=None) -> int:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    parser = argparse.ArgumentParser(description="Fit a classifier's temperature on validation data.")
    parser.add_argument("--model", required=True, help="A classifier folder; its config.json is updated.")
    parser.add_argument("--max_examples", type=int, default=None)
    args = parser.parse_args(argv)
    model = AutoModelForSequenceClassification.from_pretrained(args.model)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    validation = load_movie_reviews()["validation"]
    if args.max_examples:
        validation = validation.select(range(min(args.max_examples, len(validation))))
    result = calibrate(model, tokenizer, validation["text"], validation["label"])
    model.config.save_pretrained(args.model)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
