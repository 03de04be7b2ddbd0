"""Validation perplexity: ours against GPT-2 of the same size, same tokenizer, data and token budget.

All models are trained in one run by the same Trainer settings (AdamW, schedule, batch, steps, seed) on
the same blocks of the review corpus' training split, and scored on the same validation blocks:
GPT-2 (``GPT2LMHeadModel``), ours with the LSTM off (GPT-2's math, a control) and ours with the LSTM on.

With ``--seeds 0,1,2`` the three are trained once per seed (initialization and data order), and the
target is judged on the ratio of the mean perplexities: at this budget one seed's perplexity moves by
up to 18% from another's, more than the models differ.

    python -m bench.perplexity_vs_gpt2 --steps 150 --threads 1 --seeds 0,1,2 --json bench/results/perplexity_vs_gpt2.json
"""

import argparse
import json
import math
import statistics
import time

import torch
from transformers import AutoTokenizer, Trainer, TrainingArguments, set_seed

from bench._common import gpt2_like
from llm_memory import MemoryTransformerConfig, MemoryTransformerForCausalLM
from llm_memory.training.data import prepare_lm_dataset
from llm_memory.training.reviews import load_movie_reviews

MODELS = ("gpt2", "ours (LSTM off)", "ours (LSTM on)")


def build(kind: str, args, vocab_size: int, seed: int):
    set_seed(seed)
    config = MemoryTransformerConfig(
        vocab_size=vocab_size,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=4 * args.hidden_size,
        max_position_embeddings=args.block_size,
        use_lstm=kind == "ours (LSTM on)",
        hidden_dropout=0.1,
        attention_dropout=0.1,
    )
    return gpt2_like(config) if kind == "gpt2" else MemoryTransformerForCausalLM(config)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tokenizer", default="checkpoints/memory-lm", help="folder with the tokenizer to share"
    )
    parser.add_argument("--hidden_size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--block_size", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--max_train_texts", type=int, default=8000)
    parser.add_argument("--max_eval_texts", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0, help="the seed of a one-seed run")
    parser.add_argument(
        "--seeds", default=None, help="comma-separated seeds, e.g. 0,1,2: each model trained once per seed"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    try:
        seeds = [int(seed) for seed in args.seeds.split(",")] if args.seeds else [args.seed]
    except ValueError:
        parser.error(f"--seeds takes comma-separated integers such as 0,1,2, not {args.seeds!r}")
    if args.threads:
        torch.set_num_threads(args.threads)

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    raw = load_movie_reviews(seed=0)
    raw["train"] = raw["train"].select(range(min(args.max_train_texts, len(raw["train"]))))
    raw["validation"] = raw["validation"].select(range(min(args.max_eval_texts, len(raw["validation"]))))
    blocks = prepare_lm_dataset(raw, tokenizer, args.block_size)
    budget = args.steps * args.batch_size * args.block_size
    print(
        f"{len(blocks['train'])} training blocks, {len(blocks['validation'])} validation blocks of "
        f"{args.block_size} tokens; budget {budget:,} tokens per model; {torch.get_num_threads()} threads"
    )

    rows = [train_and_score(kind, args, seed, blocks, len(tokenizer)) for seed in seeds for kind in MODELS]
    summary = []
    print("\n| model | parameters | seed | validation perplexity | ratio to GPT-2 |\n|---|---|---|---|---|")
    for row in rows:
        gpt2 = next(r for r in rows if r["seed"] == row["seed"] and r["model"] == "gpt2")
        row["ratio_to_gpt2"] = row["perplexity"] / gpt2["perplexity"]
        print(
            f"| {row['model']} | {row['parameters'] / 1e6:.2f}M | {row['seed']} | {row['perplexity']:.2f} "
            f"| {row['ratio_to_gpt2']:.3f} |"
        )
    if len(seeds) > 1:
        print(f"\nMean over seeds {seeds}:\n\n| model | mean perplexity | ratio of means |\n|---|---|---|")
    for kind in MODELS:
        mean = statistics.mean(r["perplexity"] for r in rows if r["model"] == kind)
        summary.append({"model": kind, "mean_perplexity": mean})
    for entry in summary:
        entry["ratio_of_means"] = entry["mean_perplexity"] / summary[0]["mean_perplexity"]
        if len(seeds) > 1:
            print(f"| {entry['model']} | {entry['mean_perplexity']:.2f} | {entry['ratio_of_means']:.3f} |")
    ratio = summary[2]["ratio_of_means"]
    print(f"\nTarget: ours / GPT-2 <= 1.0 -> {ratio:.3f}: {'met' if ratio <= 1.0 else 'NOT met'}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(
                {
                    "settings": vars(args),
                    "seeds": seeds,
                    "budget_tokens": budget,
                    "rows": rows,
                    "summary": summary,
                },
                file,
                indent=2,
            )


def train_and_score(kind: str, args, seed: int, blocks, vocab_size: int) -> dict:
    """Trains one model with one seed on the shared blocks; its validation loss and perplexity."""
    model = build(kind, args, vocab_size, seed)
    training_args = TrainingArguments(
        output_dir=f"/tmp/perplexity-bench/{kind.replace(' ', '_')}",
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, args.steps // 20),
        weight_decay=0.1,
        logging_steps=max(1, args.steps // 10),
        save_strategy="no",
        report_to=[],
        seed=seed,
        data_seed=seed,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model, args=training_args, train_dataset=blocks["train"], eval_dataset=blocks["validation"]
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    loss = trainer.evaluate()["eval_loss"]
    params = sum(p.numel() for p in model.parameters())
    print(
        f"seed {seed}  {kind:16s} params {params / 1e6:.2f}M  validation perplexity {math.exp(loss):8.2f}  "
        f"({seconds:.0f} s)",
        flush=True,
    )
    return {
        "model": kind,
        "seed": seed,
        "parameters": params,
        "eval_loss": loss,
        "perplexity": math.exp(loss),
        "seconds": seconds,
    }


if __name__ == "__main__":
    main()
