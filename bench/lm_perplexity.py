"""Perplexity of language-model checkpoints on held-out text, side by side in one run.

Every model is scored on the same blocks: the IMDB reviews of the review corpus' test split (2,500
reviews, never trained on by any embedded checkpoint made since the splits were fixed) and the
held-out general-English documents of the pretraining mix (``test_english``: Wikipedia articles and
news stories), tokenized with each model's own tokenizer, joined and cut into blocks of the model's
window, as in training. Perplexity is exp of the mean token loss over all blocks.

    python -m bench.lm_perplexity --models old=OLD_FOLDER new=checkpoints/memory-lm --json bench/results/lm_perplexity.json
"""

import argparse
import json
import math
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llm_memory.training.data import prepare_lm_dataset
from llm_memory.training.data_mix import load_lm_mix


@torch.no_grad()
def perplexity(model, blocks, batch_size: int) -> tuple[float, int]:
    total, count = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        ids = torch.tensor(blocks[start : start + batch_size]["input_ids"])
        logits = model(input_ids=ids).logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"
        )
        total += loss.item()
        count += ids[:, 1:].numel()
    return math.exp(total / count), count


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", required=True, help="NAME=FOLDER of each language model.")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    mix = load_lm_mix()
    texts = {
        "imdb test": mix["test"].filter(lambda row: row["source"] == "imdb"),
        "English test": mix["test_english"],
    }
    results = {}
    for entry in args.models:
        name, _, folder = entry.partition("=")
        model = AutoModelForCausalLM.from_pretrained(folder).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        window = model.config.max_position_embeddings
        row = {"folder": folder, "parameters": model.num_parameters()}
        for split, raw in texts.items():
            blocks = prepare_lm_dataset(raw, tokenizer, window)
            start = time.perf_counter()
            value, tokens = perplexity(model, blocks, args.batch_size)
            row[split] = {
                "perplexity": round(value, 2),
                "tokens": tokens,
                "seconds": round(time.perf_counter() - start),
            }
        results[name] = row
        print(json.dumps({name: row}), flush=True)
    names = list(results)
    print("\n| model | IMDB test perplexity | English test perplexity |\n|---|---|---|")
    for name in names:
        print(
            f"| {name} | {results[name]['imdb test']['perplexity']} | {results[name]['English test']['perplexity']} |"
        )
    if len(names) > 1:
        first, last = results[names[0]], results[names[-1]]
        for split in texts:
            ratio = last[split]["perplexity"] / first[split]["perplexity"]
            print(f"{split}: {names[-1]} / {names[0]} = {ratio:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
