"""Validation perplexity: ours against GPT-2 of the same size, same tokenizer, data and token budget.

All models are trained in one run by the same Trainer settings (AdamW, schedule, batch, steps, seed) on
the same blocks of the review corpus' training split, and scored on the same validation blocks:
GPT-2 (``GPT2LMHeadModel``), ours with the LSTM off (GPT-2's math, a control) and ours with the LSTM on.

    python bench/perplexity_vs_gpt2.py --steps 300 --json bench/results/perplexity_vs_gpt2.json
"""

import argparse
import json
import math
import time

import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments, set_seed

from llm_memory import MemoryTransformerConfig, MemoryTransformerForCausalLM
from llm_memory.data import load_movie_reviews, prepare_lm_dataset


def build(kind: str, args, vocab_size: int):
    set_seed(args.seed)
    if kind == "gpt2":
        config = GPT2Config(
            vocab_size=vocab_size,
            n_embd=args.hidden_size,
            n_layer=args.layers,
            n_head=args.heads,
            n_inner=4 * args.hidden_size,
            n_positions=args.block_size,
            activation_function="gelu_new",
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        )
        return GPT2LMHeadModel(config)
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
    return MemoryTransformerForCausalLM(config)


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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
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

    rows = []
    for kind in ("gpt2", "ours (LSTM off)", "ours (LSTM on)"):
        model = build(kind, args, len(tokenizer))
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
            seed=args.seed,
            data_seed=args.seed,
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
        rows.append(
            {
                "model": kind,
                "parameters": params,
                "eval_loss": loss,
                "perplexity": math.exp(loss),
                "seconds": seconds,
            }
        )
        print(
            f"{kind:16s} params {params / 1e6:.2f}M  validation perplexity {math.exp(loss):8.2f}  ({seconds:.0f} s)"
        )

    gpt2 = rows[0]["perplexity"]
    print("\n| model | parameters | validation perplexity | ratio to GPT-2 |\n|---|---|---|---|")
    for row in rows:
        row["ratio_to_gpt2"] = row["perplexity"] / gpt2
        print(
            f"| {row['model']} | {row['parameters'] / 1e6:.2f}M | {row['perplexity']:.2f} | {row['ratio_to_gpt2']:.3f} |"
        )
    lstm_ratio = rows[2]["ratio_to_gpt2"]
    print(f"\nTarget: ours / GPT-2 <= 1.0 -> {lstm_ratio:.3f}: {'met' if lstm_ratio <= 1.0 else 'NOT met'}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"settings": vars(args), "budget_tokens": budget, "rows": rows}, file, indent=2)


if __name__ == "__main__":
    main()
