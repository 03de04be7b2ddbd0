"""Decoding defaults against loops: repetition penalty and no-repeat n-grams, each measured.

Each checkpoint continues 20 fixed review openings (the first 8 words of the first 20 IMDB reviews of
the test split, never trained on) by 64 tokens, through the demo's own decoding path
(``llm_memory.tasks.generate``), greedy and sampled (seeds 0-2), under four settings: nothing, the
repetition penalty alone, the no-repeat rule alone, and both (the defaults). Reported per setting:

- ``repeats``: the share of continuations that repeat a 4-gram of words within themselves;
- ``distinct-2``: distinct word bigrams over all bigrams, pooled over the continuations (higher is
  more varied);
- ``words``: the mean length of a continuation in words.

    python -m bench.generation_defaults --models old=OLD_FOLDER new=checkpoints/memory-lm --json bench/results/generation_defaults.json
"""

import argparse
import json
import statistics
from pathlib import Path

import torch

from llm_memory.serving.models import load_models
from llm_memory.serving.settings import ServeSettings
from llm_memory.tasks.generate import generate
from llm_memory.training.reviews import load_movie_reviews

NUM_PROMPTS = 20
PROMPT_WORDS = 8
NEW_TOKENS = 64
SEEDS = (0, 1, 2)
SETTINGS = {
    "none": dict(repetition_penalty=1.0, no_repeat_ngram_size=0),
    "penalty 1.1": dict(repetition_penalty=1.1, no_repeat_ngram_size=0),
    "no-repeat 4": dict(repetition_penalty=1.0, no_repeat_ngram_size=4),
    "both (default)": dict(repetition_penalty=1.1, no_repeat_ngram_size=4),
}


def review_prompts() -> list[str]:
    """The first PROMPT_WORDS words of the first NUM_PROMPTS IMDB reviews of the test split."""
    test = load_movie_reviews()["test"]
    texts = [row["text"] for row in test if row["source"] == "imdb"][:NUM_PROMPTS]
    return [" ".join(text.split()[:PROMPT_WORDS]) for text in texts]


def repeats_a_4gram(words: list[str]) -> bool:
    ngrams = [tuple(words[i : i + 4]) for i in range(len(words) - 3)]
    return len(ngrams) != len(set(ngrams))


def measure(models, prompts, strategy: str, settings: dict) -> dict:
    texts = []
    for prompt in prompts:
        for seed in SEEDS if strategy == "sample" else (0,):
            update = generate(
                models, prompt, strategy=strategy, max_new_tokens=NEW_TOKENS, seed=seed, **settings
            )
            texts.append(update.text)
    words = [text.lower().split() for text in texts]
    bigrams = [tuple(w[i : i + 2]) for w in words for i in range(len(w) - 1)]
    return {
        "repeats": round(sum(map(repeats_a_4gram, words)) / len(words), 3),
        "distinct-2": round(len(set(bigrams)) / max(len(bigrams), 1), 3),
        "words": round(statistics.fmean(len(w) for w in words), 1),
        "example": texts[0],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", required=True, help="NAME=FOLDER of each language model.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    prompts = review_prompts()
    results = {}
    print("| model | strategy | setting | 4-gram repeats | distinct-2 | words |\n|---|---|---|---|---|---|")
    for entry in args.models:
        name, _, folder = entry.partition("=")
        models = load_models(folder, classifier_path=None, settings=ServeSettings.from_env())
        for strategy in ("greedy", "sample"):
            for setting, values in SETTINGS.items():
                row = measure(models, prompts, strategy, values)
                results.setdefault(name, {}).setdefault(strategy, {})[setting] = row
                print(
                    f"| {name} | {strategy} | {setting} | {row['repeats']:.2f} | {row['distinct-2']:.3f} | "
                    f"{row['words']} |",
                    flush=True,
                )
    if args.json:
        payload = {"prompts": prompts, "new_tokens": NEW_TOKENS, "seeds": SEEDS, "results": results}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
