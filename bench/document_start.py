"""Prompts read as the start of a document, against the bare prompt: early stops and glued sentences.

The embedded language model was trained on documents each followed by its eos token, so every
document it saw began right after one. ``llm_memory.tasks.generate`` puts that token
(``document_start``) in front of a prompt read from its start; the baseline, in the same run, is the
bare prompt. Each side continues the same prompts by 64 tokens through the demo's own decoding path,
sampled with the defaults and seeds 0-9: the 20 review openings of ``bench.generation_defaults`` and
the Generate tab's three examples. Reported per side:

- ``glued``: continuations with a sentence joined to the next without a space ("funny.The cast"), a
  form the training text almost never has (0.7 per 1,000 words of the reviews);
- ``glued_boundaries`` and ``spaced_boundaries``: sentence ends followed by a capital with no space,
  and with one, over all continuations;
- ``ended_at_eos`` and ``mean_words``: continuations that stopped at an eos before 64 tokens, and
  their mean length in words.

    python -m bench.document_start --json bench/results/document_start.json
"""

import argparse
import json
import re
from unittest import mock

import torch

from bench.generation_defaults import review_prompts
from llm_memory.demo.tabs import GENERATE_EXAMPLES
from llm_memory.serving.models import load_models
from llm_memory.serving.settings import ServeSettings
from llm_memory.tasks import generate as generate_module

SEEDS = range(10)
NEW_TOKENS = 64
GLUED = re.compile(r"[a-z][.!?][A-Z]")
SPACED = re.compile(r"[a-z][.!?]\s+[A-Z]")


def measure(models, prompts: list[str]) -> dict:
    updates = [
        generate_module.generate(models, prompt, strategy="sample", max_new_tokens=NEW_TOKENS, seed=seed)
        for prompt in prompts
        for seed in SEEDS
    ]
    texts = [update.text for update in updates]
    return {
        "continuations": len(texts),
        "ended_at_eos": sum(update.num_tokens < NEW_TOKENS for update in updates),
        "mean_words": round(sum(len(text.split()) for text in texts) / len(texts), 1),
        "glued": sum(bool(GLUED.search(text)) for text in texts),
        "glued_boundaries": sum(len(GLUED.findall(text)) for text in texts),
        "spaced_boundaries": sum(len(SPACED.findall(text)) for text in texts),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="checkpoints/memory-lm")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    models = load_models(args.model, settings=ServeSettings.from_env())
    prompts = review_prompts() + list(GENERATE_EXAMPLES)
    report = {"model": args.model, "prompts": len(prompts), "seeds": len(SEEDS), "new_tokens": NEW_TOKENS}
    with mock.patch.object(generate_module, "document_start", lambda tokenizer: []):
        report["bare prompt"] = measure(models, prompts)
    report["document start"] = measure(models, prompts)
    for side in ("bare prompt", "document start"):
        result = report[side]
        print(
            f"{side}: {result['glued']} of {result['continuations']} continuations glued "
            f"({result['glued_boundaries']} glued / {result['spaced_boundaries']} spaced sentence ends); "
            f"{result['ended_at_eos']} ended at eos; {result['mean_words']} words on average"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    models.batcher.close()
    return report


if __name__ == "__main__":
    main()
