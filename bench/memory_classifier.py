"""Whole reviews read with memory against the last window alone: the LSTM state on a real task.

Each classifier reads the 2,500 IMDB test reviews of the built-in corpus two ways, in one run:

- ``last window``: the review's last ``window`` tokens (256 for the embedded models), as a pipeline
  with the checkpoint's left truncation reads it;
- ``whole, memory``: the whole review (up to ``--max_windows`` windows), window by window from its
  start, the LSTM state carried from each window into the next (``memory.windowed_classification_logits``).

The two readings see the same last window; whatever the second gains comes through the carried state.
Accuracy is also given on the reviews longer than one window, where the readings differ, and the gain
of the whole reading review by review, with its paired standard error. ``--window`` reads every model
with a smaller window than its own (a memory classifier trained at 128 is saved with 128).

    python -m bench.memory_classifier --models v2=checkpoints/sentiment --json bench/results/memory_classifier.json
    python -m bench.memory_classifier --models v2=checkpoints/sentiment memory=runs/sentiment-memory \
        --window 128 --json bench/results/memory_classifier_128.json
"""

import argparse
import json
import time

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import llm_memory  # noqa: F401  (registers the model with the Auto classes)
from llm_memory.memory.recurrence import shrink_window
from llm_memory.training.calibration import predict_logits
from llm_memory.training.reviews import load_movie_reviews


def read(model, tokenizer, texts: list[str], windows: int, batch_size: int) -> np.ndarray:
    """Predicted labels, the texts batched by length (less padding), returned in the input order."""
    order = np.argsort([len(text) for text in texts], kind="stable")
    logits = predict_logits(model, tokenizer, [texts[i] for i in order], batch_size, windows)
    predicted = np.empty(len(texts), dtype=np.int64)
    predicted[order] = logits.argmax(-1).numpy()
    return predicted


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", nargs="+", default=["sentiment=checkpoints/sentiment"], help="NAME=FOLDER ..."
    )
    parser.add_argument("--max_windows", type=int, default=16, help="windows read at most per review")
    parser.add_argument(
        "--window",
        type=int,
        default=None,
        help="read every model with this window (at most its own; default: each model's own window)",
    )
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_test", type=int, default=None, help="score only the first N test reviews")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="where the models run"
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    test = load_movie_reviews()["test"].filter(lambda row: row["source"] == "imdb")
    if args.max_test:
        test = test.select(range(min(args.max_test, len(test))))
    texts, labels = list(test["text"]), np.array(test["label"])
    results = {}
    for spec in args.models:
        name, folder = spec.split("=", 1)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        tokenizer.truncation_side = "left"  # both readings keep the review's end
        model = AutoModelForSequenceClassification.from_pretrained(folder).to(args.device).eval()
        if args.window is not None:
            shrink_window(model, args.window, tokenizer)
        window = model.config.max_position_embeddings
        lengths = np.array(
            [len(ids) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]
        )
        long = lengths > window
        rows, correct = {}, {}
        for reading, windows in (("last window", 1), ("whole, memory", args.max_windows)):
            start = time.perf_counter()
            hits = (read(model, tokenizer, texts, windows, args.batch_size) == labels).astype(np.float64)
            correct[reading] = hits
            rows[reading] = {
                "accuracy": round(float(hits.mean()), 4),
                "accuracy_longer_than_window": round(float(hits[long].mean()), 4),
                "seconds": round(time.perf_counter() - start, 1),
            }
        # Review by review, whole against last window: the gain and its standard error (paired).
        gain = correct["whole, memory"] - correct["last window"]
        results[name] = {
            "folder": folder,
            "window": window,
            "longer_than_window": int(long.sum()),
            "readings": rows,
            "gain_points": round(100 * float(gain.mean()), 2),
            "gain_standard_error_points": round(100 * float(gain.std(ddof=1) / np.sqrt(len(gain))), 2),
        }

    print(f"IMDB test reviews: {len(texts)}\n")
    for name, result in results.items():
        print(
            f"{name} (window {result['window']}): whole with memory - last window = "
            f"{result['gain_points']:+.2f} ± {result['gain_standard_error_points']:.2f} points"
        )
    print("| model | reading | accuracy | on reviews longer than the window |\n|---|---|---|---|")
    for name, result in results.items():
        for reading, row in result["readings"].items():
            print(
                f"| {name} | {reading} | {row['accuracy']:.4f} | "
                f"{row['accuracy_longer_than_window']:.4f} (n={result['longer_than_window']}) |"
            )
    if args.json:
        with open(args.json, "w") as file:
            json.dump(
                {
                    "test_reviews": len(texts),
                    "max_windows": args.max_windows,
                    "window": args.window,
                    "device": args.device,
                    "models": results,
                },
                file,
                indent=2,
            )


if __name__ == "__main__":
    main()
