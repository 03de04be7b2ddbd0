"""Does the sentiment classifier travel? Ours against TF-IDF + logistic regression on held-out proxies.

Each classifier folder and a TF-IDF + logistic regression baseline (fitted here on the training split
of ``--baseline_data``: by default the sentiment mix the new classifier is trained on, whole reviews,
review ends and critic sentences) are scored in one run on texts no model was trained on:

- ``imdb test``: the 2,500 IMDB reviews of the test split, read as each tokenizer truncates them;
- ``imdb test ends``: the last sentences of those reviews (one-line reviews);
- ``critic sentences``: the 852 Rotten Tomatoes sentences of the test split;
- ``contrast``: 60 hand-written sentences whose sense turns on negation or contrast
  (``bench/data/contrast_sentences.tsv``, written for this benchmark and never trained on).

Reported per set: accuracy, and the expected calibration error (ECE, 15 bins) of the probabilities
that the model reports (for ours, as ``pipeline()`` gives them, the saved temperature applied).

    python -m bench.sentiment_generalization --models old=OLD_FOLDER new=checkpoints/sentiment --json bench/results/sentiment_generalization.json
"""

import argparse
import csv
import json
import random
from pathlib import Path

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from llm_memory.training import calibration
from llm_memory.training.data_mix import load_sentiment_mix, review_end
from llm_memory.training.reviews import load_movie_reviews

CONTRAST_FILE = Path(__file__).parent / "data" / "contrast_sentences.tsv"
LABELS = ("negative", "positive")


def test_sets() -> dict[str, tuple[list[str], np.ndarray]]:
    test = load_movie_reviews()["test"]
    imdb = [
        (t, y) for t, y, s in zip(test["text"], test["label"], test["source"], strict=True) if s == "imdb"
    ]
    critic = [
        (t, y) for t, y, s in zip(test["text"], test["label"], test["source"], strict=True) if s != "imdb"
    ]
    rng = random.Random(0)
    ends = [(end, y) for t, y in imdb if (end := review_end(t, rng)) is not None]
    with CONTRAST_FILE.open(newline="", encoding="utf-8") as file:
        contrast = [(row["text"], LABELS.index(row["label"])) for row in csv.DictReader(file, delimiter="\t")]
    sets = {"imdb test": imdb, "imdb test ends": ends, "critic sentences": critic, "contrast": contrast}
    return {name: ([t for t, _ in rows], np.array([y for _, y in rows])) for name, rows in sets.items()}


def scores(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    accuracy = float((probabilities.argmax(-1) == labels).mean())
    ece = calibration.expected_calibration_error(torch.tensor(probabilities), torch.tensor(labels))
    return {"accuracy": round(accuracy, 4), "ece": round(ece, 4), "n": len(labels)}


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", required=True, help="NAME=FOLDER of each classifier.")
    parser.add_argument(
        "--baseline_data", choices=("sentiment_mix", "sentiment_pairs_mix", "movie_reviews"),
        default="sentiment_mix",
        help="What TF-IDF + LR is fitted on: the mixed-length sentiment mix (with its sentence pairs), or "
        "the reviews as they are.",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sets = test_sets()
    train = (
        load_movie_reviews()["train"]
        if args.baseline_data == "movie_reviews"
        else load_sentiment_mix(pairs=args.baseline_data == "sentiment_pairs_mix")["train"]
    )

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=200_000)
    baseline = LogisticRegression(C=4.0, max_iter=2000).fit(
        vectorizer.fit_transform(train["text"]), train["label"]
    )
    results = {"TF-IDF + LR": {}}
    for name, (texts, labels) in sets.items():
        results["TF-IDF + LR"][name] = scores(baseline.predict_proba(vectorizer.transform(texts)), labels)

    for entry in args.models:
        model_name, _, folder = entry.partition("=")
        model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        results[model_name] = {}
        for name, (texts, labels) in sets.items():
            logits = calibration.predict_logits(model, tokenizer, texts)
            results[model_name][name] = scores(logits.softmax(-1).numpy(), labels)
        print(json.dumps({model_name: results[model_name]}), flush=True)

    print("\n| classifier | " + " | ".join(sets) + " |\n|---|" + "---|" * len(sets))
    for model_name, row in results.items():
        cells = " | ".join(f"{row[name]['accuracy']:.3f} (ECE {row[name]['ece']:.3f})" for name in sets)
        print(f"| {model_name} | {cells} |")
    if args.json:
        payload = {
            "baseline_data": args.baseline_data,
            "sizes": {n: len(s[1]) for n, s in sets.items()},
            "results": results,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
