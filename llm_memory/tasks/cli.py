"""The demo's tasks from the command line: ``python -m llm_memory.tasks generate|classify|summarize|attention TEXT``.

The models default to the embedded ``checkpoints/`` of the working directory (a checkout's root), or
the ``LLM_MEMORY_MODEL``, ``LLM_MEMORY_CLASSIFIER`` and ``LLM_MEMORY_SUMMARIZER`` variables.
"""

import argparse
from collections.abc import Sequence

from llm_memory.generation_settings import GENERATION_DEFAULTS, STRATEGIES
from llm_memory.serving.loading import ModelLoadError
from llm_memory.serving.models import load_models
from llm_memory.serving.settings import ServeSettings
from llm_memory.tasks.attention import attention
from llm_memory.tasks.checks import InputError
from llm_memory.tasks.classify import classify
from llm_memory.tasks.generate import generate_stream
from llm_memory.tasks.summarize import summarize

# Relative to the working directory: the embedded checkpoints of a checkout.
DEFAULT_MODEL = "checkpoints/memory-lm"
DEFAULT_CLASSIFIER = "checkpoints/sentiment"


def main(argv: Sequence[str] | None = None):
    settings = ServeSettings.from_env()
    parser = argparse.ArgumentParser(
        prog="python -m llm_memory.tasks", description="Run one demo task from the command line."
    )
    parser.add_argument("task", choices=["generate", "classify", "summarize", "attention"])
    parser.add_argument("text")
    parser.add_argument("--model", default=settings.model or DEFAULT_MODEL)
    parser.add_argument("--classifier", default=settings.classifier or DEFAULT_CLASSIFIER)
    parser.add_argument("--summarizer", default=settings.summarizer)
    parser.add_argument("--strategy", default=GENERATION_DEFAULTS.strategy, choices=STRATEGIES)
    parser.add_argument("--max_new_tokens", type=int, default=None)
    parser.add_argument(
        "--seed", type=int, default=GENERATION_DEFAULTS.seed, help="-1 (the default) draws a fresh seed"
    )
    parser.add_argument("--num_sentences", type=int, default=3)
    parser.add_argument("--layer", type=int, default=0)
    parser.add_argument("--head", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        models = load_models(args.model, args.classifier, args.summarizer, settings=settings)
        if args.task == "generate":
            printed = ""
            for update in generate_stream(
                models, args.text, strategy=args.strategy, max_new_tokens=args.max_new_tokens, seed=args.seed
            ):
                print(update.text[len(printed) :], end="", flush=True)
                printed = update.text
            seed = "" if update.seed is None else f", seed {update.seed}"
            print(f"\n[{update.num_tokens} tokens, {update.tokens_per_second:.1f} tokens/s{seed}]")
        elif args.task == "classify":
            result = classify(models, args.text)
            print(result.label, {label: round(p, 4) for label, p in result.probabilities.items()})
            print(" ".join(f"{piece!r}:{score:+.3f}" for piece, score in result.attributions))
        elif args.task == "summarize":
            result = summarize(models, args.text, args.num_sentences)
            print(result.summary)
        else:
            result = attention(models, args.text, args.layer, args.head)
            for piece, weight in result.highlights:
                print(f"{piece!r}\t{weight:.3f}")
    except (InputError, ModelLoadError) as err:
        parser.exit(2, f"error: {err}\n")
