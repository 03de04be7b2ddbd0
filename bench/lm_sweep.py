"""Small measured sweeps of the language model's recipe: learning rate, batch size and shape.

Each recipe is one short run of the training command (``python -m llm_memory.training``) from the same
preset, with the same token budget and seed; the table is the validation perplexity each reaches. A
short budget favours high learning rates, so the long run takes the winner's rate only where its lead
holds across budgets (docs/training.md records what was chosen and why).

    python -m bench.lm_sweep --tokens 1600000 --json bench/results/lm_sweep.json
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# name -> flags over the lm preset. Shapes stay within the 25 MB checkpoint limit in fp32.
RECIPES = {
    "lr 5e-4": ["--learning_rate", "5e-4"],
    "lr 1e-3": ["--learning_rate", "1e-3"],
    "lr 2e-3": ["--learning_rate", "2e-3"],
    "lr 4e-3": ["--learning_rate", "4e-3"],
    "lr 1e-3, batch 32": ["--learning_rate", "1e-3", "--per_device_train_batch_size", "32"],
    "lr 1e-3, 6 blocks of 224": [
        "--learning_rate", "1e-3",
        "--config_overrides", "hidden_size=224,num_hidden_layers=6,intermediate_size=896",
    ],
}  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="lm")
    parser.add_argument("--tokens", type=int, default=1_600_000, help="Training tokens per recipe.")
    parser.add_argument(
        "--recipes", default=";".join(RECIPES), help="Names from RECIPES, separated by semicolons."
    )
    parser.add_argument(
        "--dataset_name",
        default="movie_reviews",
        help="Passed to the training command (the sweeps ran on the reviews).",
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    results = []
    for name in args.recipes.split(";"):
        flags = RECIPES[name]
        batch = (
            int(flags[flags.index("--per_device_train_batch_size") + 1])
            if "--per_device_train_batch_size" in flags
            else 16
        )
        steps = args.tokens // (batch * 256)
        with tempfile.TemporaryDirectory() as out:
            command = [
                sys.executable, "-m", "llm_memory.training", "--preset", args.preset, "--output_dir", out,
                "--max_steps", str(steps), "--warmup_steps", str(max(steps // 20, 1)), "--eval_strategy", "no",
                "--save_strategy", "no", "--logging_steps", str(max(steps // 10, 1)), "--disable_tqdm", "true",
                "--dataset_name", args.dataset_name, *flags,
            ]  # fmt: skip
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            seconds = time.perf_counter() - start
            metrics = json.loads(Path(out, "all_results.json").read_text())
        row = {
            "recipe": name,
            "steps": steps,
            "tokens": steps * batch * 256,
            "eval_loss": round(metrics["eval_loss"], 4),
            "eval_perplexity": round(metrics["eval_perplexity"], 1),
            "train_loss": round(metrics["train_loss"], 4),
            "minutes": round(seconds / 60, 1),
            "flags": flags,
        }
        results.append(row)
        print(json.dumps(row), flush=True)
    print("\n| recipe | steps | validation perplexity | minutes |\n|---|---|---|---|")
    for row in results:
        print(f"| {row['recipe']} | {row['steps']} | {row['eval_perplexity']} | {row['minutes']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"preset": args.preset, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
