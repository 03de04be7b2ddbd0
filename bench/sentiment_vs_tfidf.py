"""Sentiment accuracy on the held-out IMDB test split: our classifier against TF-IDF + logistic regression.

Both are trained on the same training split of the built-in review corpus (seed 0) and tested on the
same 2,500 IMDB test reviews, in one run. Ours is read from a checkpoint folder (trained by
``python -m llm_memory.training --task classification``); the baseline is fitted here with scikit-learn.

    python -m bench.sentiment_vs_tfidf --model checkpoints/sentiment --json bench/results/sentiment_vs_tfidf.json
"""

import argparse
import json
import time

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import llm_memory  # noqa: F401  (registers the model with the Auto classes)
from llm_memory.memory.recurrence import windowed_forward
from llm_memory.training.reviews import load_movie_reviews


def tfidf_baseline(train, test) -> np.ndarray:
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=200_000)
    classifier = LogisticRegression(C=4.0, max_iter=2000)
    classifier.fit(vectorizer.fit_transform(train["text"]), train["label"])
    return classifier.predict(vectorizer.transform(test["text"]))


@torch.no_grad()
def ours(
    model_path: str, texts: list[str], max_length: int, batch_size: int, read: str = "auto", carry_kv: int = 0
) -> np.ndarray:
    """Our classifier's labels. ``read``: as the checkpoint's tokenizer truncates, like a pipeline
    (auto); the first ``max_length`` tokens of each review (head); the last (tail); or the whole review
    window by window with the LSTM state (and ``carry_kv`` keys and values) carried over, classified at
    its last token (windows)."""
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(model_path).eval()
    if read == "windows":
        predictions = []
        for text in texts:
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt", verbose=False)["input_ids"]
            *_, last = windowed_forward(model, ids, window=max_length, carry_kv=carry_kv)
            predictions.append(int(last.logits.argmax(-1)))
        return np.array(predictions)
    if read != "auto":
        tokenizer.truncation_side = "left" if read == "tail" else "right"
    predictions = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size],
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
            add_special_tokens=False,
        )
        predictions.append(model(**batch).logits.argmax(-1).numpy())
    return np.concatenate(predictions)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="checkpoints/sentiment")
    parser.add_argument(
        "--max_length", type=int, default=256, help="tokens read per review (the training length)"
    )
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument(
        "--read",
        choices=("auto", "head", "tail", "windows"),
        default="auto",
        help="what of each review ours reads: what its tokenizer keeps when it truncates (its "
        "truncation_side, as a pipeline reads), its first --max_length tokens, its last, or all of it "
        "in windows of --max_length with the LSTM state carried over",
    )
    parser.add_argument(
        "--carry_kv",
        type=int,
        default=0,
        help="with --read windows: keys/values carried into the next window",
    )
    parser.add_argument("--max_test", type=int, default=None, help="score only the first N test reviews")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    splits = load_movie_reviews(seed=0)
    test = splits["test"].filter(lambda row: row["source"] == "imdb")
    if args.read == "auto":
        side = AutoTokenizer.from_pretrained(args.model).truncation_side
        args.read = "tail" if side == "left" else "head"
    if args.max_test:
        test = test.select(range(min(args.max_test, len(test))))
    labels = np.array(test["label"])
    rows = []
    for name, run in (
        ("TF-IDF + logistic regression", lambda: tfidf_baseline(splits["train"], test)),
        (
            f"ours ({args.model}, {args.read} {args.max_length})",
            lambda: ours(
                args.model, test["text"], args.max_length, args.batch_size, args.read, args.carry_kv
            ),
        ),
    ):
        start = time.perf_counter()
        predicted = run()
        rows.append(
            {
                "model": name,
                "accuracy": float(accuracy_score(labels, predicted)),
                "macro_f1": float(f1_score(labels, predicted, average="macro")),
                "seconds": time.perf_counter() - start,
            }
        )
    print(f"IMDB test reviews: {len(test)}\n\n| model | accuracy | macro-F1 |\n|---|---|---|")
    for row in rows:
        print(f"| {row['model']} | {row['accuracy']:.4f} | {row['macro_f1']:.4f} |")
    baseline, model = rows[0]["accuracy"], rows[1]["accuracy"]
    met = model >= 0.90 and model > baseline
    print(
        f"\nTarget: >= 0.90 and above the baseline ({baseline:.4f}) -> {model:.4f}: {'met' if met else 'NOT met'}"
    )
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"test_reviews": len(test), "rows": rows, "target_met": met}, file, indent=2)


if __name__ == "__main__":
    main()
