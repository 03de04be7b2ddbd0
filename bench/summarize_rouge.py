"""ROUGE of the extractive summarizer against lead and random baselines, on standard-library docstrings.

    python -m bench.summarize_rouge [--model PATH] [--summarizer PATH] [--num_sentences 1] [--max_pairs N] [--json PATH]

Why these pairs: a docstring's first paragraph is a summary written by a person for the rest of it, the
pairs are real text rather than synthetic, and they ship with every Python, so the benchmark runs
offline and anyone can rerun it on the same data (``llm_memory.training.docstrings.load_docstring_pairs``).

Each document is summarized by k sentences picked by each of the Summarize tab's methods
(``llm_memory.tasks.summarize.SUMMARY_METHODS``): ``learned``, the sentence scorer saved with the language
model (fitted on package docstrings' training pairs, ``llm_memory.tasks.sentence_scorer``);
``summarizer``, the picks of the summarization-tuned checkpoint: a selector's (``training.selection``),
or the sentences closest to an abstractive summarizer's abstract; ``lead``, the
first sentences (lead-k, the usual strong baseline: docstrings often open with their point); ``centroid`` and ``attention``, those the language model ranks highest
(mean contextual embedding closest to the document's; most attention received); and by k random
sentences (seeded). With an abstractive summarizer (``--summarizer``, default ``checkpoints/summarizer``),
also by its generated abstract. Each method is also compared with lead on the same pairs (the mean of the
per-pair differences and its standard error). The table gives the mean ROUGE-1, ROUGE-2 and ROUGE-L F1 (Lin, 2004; stemmed)
of each against the reference.

The summarizer is trained on installed packages' docstrings (``package_docstrings``), never on these:
they are that corpus's test split. ``--split validation`` scores that corpus's validation pairs instead,
the ones to choose settings on, so that the standard-library figures stay held out.
"""

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import torch
from rouge_score import rouge_scorer

from bench._common import ROOT
from llm_memory.serving.models import load_models
from llm_memory.serving.settings import ServeSettings
from llm_memory.tasks.checks import InputError, clean_text
from llm_memory.tasks.summarize import available_methods, is_abstractive, summarize
from llm_memory.training.data import split_sentences
from llm_memory.training.docstrings import load_docstring_pairs, load_package_docstrings

METRICS = ("rouge1", "rouge2", "rougeL")


def pick(document: str, spans: list[tuple[int, int]], indices: list[int]) -> str:
    return " ".join(document[start:end] for start, end in (spans[i] for i in sorted(indices)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    embedded = ServeSettings.from_env(checkpoints_dir=ROOT / "checkpoints")  # LLM_MEMORY_MODEL, ... win
    parser.add_argument("--model", default=embedded.model)
    parser.add_argument("--summarizer", default=embedded.summarizer)
    parser.add_argument(
        "--num_sentences", type=int, default=1, help="k: the references are mostly one sentence."
    )
    parser.add_argument(
        "--max_pairs", type=int, default=None, help="Only the first N pairs (all by default)."
    )
    parser.add_argument(
        "--split",
        choices=("test", "validation"),
        default="test",
        help="test: the standard-library pairs (never trained on); validation: the package_docstrings "
        "validation pairs, to choose settings on.",
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random baseline.")
    parser.add_argument(
        "--threads", type=int, default=1, help="Torch threads (1 is fastest on a small, busy CPU)."
    )
    parser.add_argument("--json", help="Also write the results to this file.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    models = load_models(args.model, summarizer_path=args.summarizer, settings=ServeSettings.from_env())
    if args.split == "test":
        pairs = load_docstring_pairs(max_pairs=args.max_pairs)
    else:
        pairs = load_package_docstrings()["validation"]
        pairs = pairs.select(range(min(args.max_pairs or len(pairs), len(pairs))))
    scorer = rouge_scorer.RougeScorer(list(METRICS), use_stemmer=True)
    rng = random.Random(args.seed)
    methods = available_methods(models)
    systems = ["random", *methods] + (["abstractive"] if is_abstractive(models) else [])
    scores = {system: {metric: [] for metric in METRICS} for system in systems}
    skipped = 0
    start = time.perf_counter()
    for document, reference in zip(pairs["document"], pairs["summary"], strict=True):
        try:
            document = clean_text(document, max_chars=models.settings.max_input_chars)
        except InputError:
            skipped += 1  # over the demo's length limit
            continue
        spans = split_sentences(document)
        k = min(args.num_sentences, len(spans))
        summaries = {"random": pick(document, spans, rng.sample(range(len(spans)), k))}
        for method in methods:
            result = summarize(models, document, k, method, abstractive=method == methods[0])
            summaries[method] = result.extract
            if result.abstract is not None:
                summaries["abstractive"] = result.abstract
        for system, summary in summaries.items():
            for metric, score in scorer.score(reference, summary).items():
                scores[system][metric].append(score.fmeasure)
    seconds = time.perf_counter() - start

    count = len(scores["random"]["rouge1"])
    print(
        f"{count} docstring pairs of the {args.split} split ({skipped} skipped as too long) · k = {args.num_sentences} sentence(s) · "
        f"model {args.model} · {seconds:.0f} s\n"
    )
    print("| summary     | ROUGE-1 | ROUGE-2 | ROUGE-L |")
    print("|-------------|---------|---------|---------|")
    table = {}
    for system in systems:
        table[system] = {metric: statistics.fmean(scores[system][metric]) for metric in METRICS}
        values = " | ".join(f"{100 * table[system][metric]:7.2f}" for metric in METRICS)
        print(f"| {system:<11} | {values} |")
    # Each method against lead-k on the same pairs: the mean of the per-pair differences and its standard
    # error, so that a lead within noise is told from a real one.
    against_lead = {}
    for system in systems:
        if system == "lead":
            continue
        against_lead[system] = {}
        for metric in METRICS:
            differences = [a - b for a, b in zip(scores[system][metric], scores["lead"][metric], strict=True)]
            error = statistics.stdev(differences) / len(differences) ** 0.5 if len(differences) > 1 else 0.0
            against_lead[system][metric] = {"mean": statistics.fmean(differences), "standard_error": error}
    print("\nAgainst lead, the same pairs (mean difference ± standard error, ROUGE-1 / ROUGE-L):")
    for system, row in against_lead.items():
        print(
            f"  {system:<11} "
            + " / ".join(
                f"{100 * row[m]['mean']:+.2f} ± {100 * row[m]['standard_error']:.2f}"
                for m in ("rouge1", "rougeL")
            )
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "split": args.split,
                    "pairs": count,
                    "k": args.num_sentences,
                    "model": Path(args.model).name,
                    "summarizer": Path(args.summarizer).name if args.summarizer else None,
                    "f1": table,
                    "against_lead": against_lead,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
