"""The batcher's cache, first pass and shared prompt against their baselines, side by side on the default checkpoint.

The model is loaded once, as the app serves it (packed linear layers, one torch thread). Each round
runs both forms of each measure, the order alternating; figures are medians over rounds.

- decoding steps: 16 rows with a 128-token prompt (the long prompt of ``app_speed.py``, cut to leave
  room for 128 new tokens) take 100 greedy steps, with ``DynamicCache`` (keys and values concatenated
  on every step) and with the batcher's cache (written into tensors reserved for the batch);
- first pass over 16 requests with the same 128-token prompt: 16 rows read together, against the
  prompt read once and its cache copied out to 16 rows (what the batcher did for rows with the same
  context before it kept a shared prompt once, and still does for contexts shorter than
  ``SHARED_PREFIX_MIN_TOKENS``);
- a burst: the batcher decodes 16 sampled requests with that prompt (seeds 0-15, the app's default
  settings, up to 128 new tokens) as one batch, with the prompt's keys and values kept per row
  (``LLM_MEMORY_SHARED_PREFIX_MIN_TOKENS=0``) and once (``llm_memory/serving/shared_prefix.py``).

Parity: the greedy tokens of both caches, the largest difference between the two first passes'
logits, and the burst's 16 texts, token for token.

``--shared_prompts 8,40,48`` also times the burst with prompts of those lengths (the first tokens of
the same text), the prompt kept once from any length against per row: where keeping it once starts to
pay, which ``SHARED_PREFIX_MIN_TOKENS`` follows.

    python -m bench.batch_decoding [--model PATH] [--rounds 5] [--shared_prompts 8,40,48] [--json PATH]
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/model_speed.py

import json
import statistics
import time
from pathlib import Path

import torch
from transformers import DynamicCache

from bench._common import side_by_side_arguments
from llm_memory.serving.kv_cache import reserving_cache
from llm_memory.serving.models import load_models
from llm_memory.serving.rows import Batch, Row
from llm_memory.serving.settings import ServeSettings
from llm_memory.tasks.generate import check_generation_settings
from llm_memory.training.reviews import load_movie_reviews

ROWS = 16
PROMPT_TOKENS = 128
STEPS = 100


def decode(model, input_ids, cache) -> tuple[float, torch.Tensor]:
    """Milliseconds per step of ``STEPS`` greedy steps after a first pass, and the tokens."""
    attention_mask = torch.ones_like(input_ids)
    tokens = []
    with torch.no_grad():
        logits = model(
            input_ids, attention_mask=attention_mask, past_key_values=cache, logits_to_keep=1
        ).logits
        start = time.perf_counter()
        for _ in range(STEPS):
            step = logits[:, -1].argmax(-1, keepdim=True)
            tokens.append(step)
            attention_mask = torch.cat([attention_mask, torch.ones_like(step)], dim=1)
            logits = model(
                step, attention_mask=attention_mask, past_key_values=cache, logits_to_keep=1
            ).logits
        seconds = time.perf_counter() - start
    return seconds / STEPS * 1000, torch.cat(tokens, dim=1)


def first_pass(model, input_ids, shared: bool) -> tuple[float, torch.Tensor]:
    """Milliseconds of the first pass over the rows, and its last logits per row."""
    start = time.perf_counter()
    with torch.no_grad():
        if shared:  # the prompt once, then its keys, values and LSTM state copied out to every row
            cache = reserving_cache(model.config, PROMPT_TOKENS + STEPS)
            logits = model(input_ids[:1], past_key_values=cache, logits_to_keep=1).logits[:, -1]
            fan_out = torch.zeros(input_ids.shape[0], dtype=torch.long)
            logits = logits[fan_out]
            cache.reorder_cache(fan_out)
        else:
            cache = reserving_cache(model.config, PROMPT_TOKENS + STEPS)
            logits = model(input_ids, past_key_values=cache, logits_to_keep=1).logits[:, -1]
    return (time.perf_counter() - start) * 1000, logits


def burst(models, prompt: list[int], shared: bool) -> tuple[float, list[list[int]]]:
    """Milliseconds for the batcher to decode 16 sampled requests with ``prompt`` as one batch, the
    prompt's keys and values kept once (``shared``, however short it is) or per row, and each row's
    tokens."""
    batcher = models.batcher
    batcher.shared_prefix_min_tokens = 1 if shared else 0
    rows = [
        Row(prompt, check_generation_settings(models, max_new_tokens=STEPS, seed=seed))
        for seed in range(ROWS)
    ]
    start = time.perf_counter()
    batcher.generate(Batch(rows))
    return (time.perf_counter() - start) * 1000, [row.tokens for row in rows]


def bursts(models, prompt: list[int], rounds: int) -> tuple[float, float, bool, int]:
    """Median milliseconds of ``burst`` with the prompt kept per row and once, the order alternating,
    whether the two gave the same tokens, and how many tokens the rows made."""
    milliseconds, texts = {False: [], True: []}, {}
    for round_index in range(rounds):
        for shared in (round_index % 2 == 0, round_index % 2 != 0):
            seconds, texts[shared] = burst(models, prompt, shared)
            milliseconds[shared].append(seconds)
    return (
        statistics.median(milliseconds[False]),
        statistics.median(milliseconds[True]),
        texts[True] == texts[False],
        sum(map(len, texts[True])),
    )


def main():
    args = side_by_side_arguments(
        __doc__,
        lambda parser: parser.add_argument(
            "--shared_prompts", default="", help="comma-separated prompt lengths for more bursts"
        ),
    )
    models = load_models(args.model, settings=ServeSettings.from_env())
    model, tokenizer = models.lm, models.lm_tokenizer
    if not models.batcher.shared_prefix_min_tokens:
        raise SystemExit(
            "The batcher keeps no shared prompt once here (LLM_MEMORY_SHARED_PREFIX_MIN_TOKENS=0?)."
        )
    reviews = " ".join(load_movie_reviews()["test"]["text"][:20])
    prompt_ids = tokenizer(reviews, add_special_tokens=False, verbose=False)["input_ids"]
    prompt = prompt_ids[:PROMPT_TOKENS]
    input_ids = torch.tensor([prompt] * ROWS)

    caches = {
        "DynamicCache": lambda: DynamicCache(config=model.config),
        "reserved": lambda: reserving_cache(model.config, PROMPT_TOKENS + STEPS + 1),
    }
    step_ms = {name: [] for name in caches}
    pass_ms = {False: [], True: []}
    tokens, logits = {}, {}
    decode(model, input_ids, caches["reserved"]())  # warm-up
    for round_index in range(args.rounds):
        order = list(caches) if round_index % 2 == 0 else list(reversed(caches))
        for name in order:
            milliseconds, tokens[name] = decode(model, input_ids, caches[name]())
            step_ms[name].append(milliseconds)
        for shared in (round_index % 2 == 0, round_index % 2 != 0):
            milliseconds, logits[shared] = first_pass(model, input_ids, shared)
            pass_ms[shared].append(milliseconds)

    burst_per_row, burst_once, burst_same, burst_tokens = bursts(models, prompt, args.rounds)
    results = {
        "step_16_rows_dynamic_ms": statistics.median(step_ms["DynamicCache"]),
        "step_16_rows_reserved_ms": statistics.median(step_ms["reserved"]),
        "first_pass_16_rows_ms": statistics.median(pass_ms[False]),
        "first_pass_shared_ms": statistics.median(pass_ms[True]),
        "burst_per_row_ms": burst_per_row,
        "burst_shared_prefix_ms": burst_once,
        "same_tokens": bool(torch.equal(tokens["DynamicCache"], tokens["reserved"])),
        "first_pass_max_logit_difference": float((logits[True] - logits[False]).abs().max()),
        "burst_same_texts": burst_same,
        "burst_new_tokens": burst_tokens,
    }
    results["step_ratio"] = results["step_16_rows_reserved_ms"] / results["step_16_rows_dynamic_ms"]
    results["first_pass_ratio"] = results["first_pass_shared_ms"] / results["first_pass_16_rows_ms"]
    results["burst_ratio"] = results["burst_shared_prefix_ms"] / results["burst_per_row_ms"]
    print(f"model: {args.model}  ·  {ROWS} rows, {PROMPT_TOKENS}-token prompt  ·  medians of {args.rounds}\n")
    print("| measure | baseline | batcher | ratio |")
    print("|---|---|---|---|")
    print(
        f"| decoding step, {ROWS} rows, {PROMPT_TOKENS}-{PROMPT_TOKENS + STEPS} positions: DynamicCache / reserved (ms) "
        f"| {results['step_16_rows_dynamic_ms']:.2f} | {results['step_16_rows_reserved_ms']:.2f} "
        f"| {results['step_ratio']:.2f} |"
    )
    print(
        f"| first pass, {ROWS} requests with one prompt: {ROWS} rows / the prompt once (ms) "
        f"| {results['first_pass_16_rows_ms']:.1f} "
        f"| {results['first_pass_shared_ms']:.1f} | {results['first_pass_ratio']:.2f} |"
    )
    print(
        f"| {ROWS} sampled requests with one prompt, decoded as one batch: the prompt kept per row / once "
        f"(ms) | {results['burst_per_row_ms']:.0f} | {results['burst_shared_prefix_ms']:.0f} "
        f"| {results['burst_ratio']:.2f} |"
    )
    print(
        f"\nsame greedy tokens: {results['same_tokens']}; largest first-pass logit difference: "
        f"{results['first_pass_max_logit_difference']:.1e}; the burst's {results['burst_new_tokens']} "
        f"sampled tokens the same: {results['burst_same_texts']}"
    )
    lengths = [int(length) for length in args.shared_prompts.split(",") if length]
    if lengths:
        print(
            "\n| prompt tokens | per row (ms) | kept once (ms) | ratio | same tokens |\n|---|---|---|---|---|"
        )
    results["burst_by_prompt_tokens"] = {}
    for length in lengths:
        per_row, once, same, _ = bursts(models, prompt_ids[:length], args.rounds)
        results["burst_by_prompt_tokens"][length] = {
            "per_row_ms": per_row,
            "once_ms": once,
            "same_tokens": same,
        }
        print(f"| {length} | {per_row:.0f} | {once:.0f} | {once / per_row:.2f} | {same} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, **results}, indent=2))


if __name__ == "__main__":
    main()
