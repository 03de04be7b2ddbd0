"""oneDNN-packed linear layers (``llm_memory.serving.packed_linear``) against PyTorch's ``nn.Linear``, side by side.

The default checkpoint is loaded twice in one process: as ``from_pretrained`` gives it (``nn.Linear``:
MKL's sgemm) and as the app serves it (``pack_linears``: the packed kernel on the layers and from the
rows where it won when timed at loading; the column "packed"). The two take turns in every round, the order
alternating, on one torch thread as the app runs; figures are medians over rounds and each ratio is
the median of the per-round ratios.

- one request: mean seconds of the Generate tab's request ("The movie was", 128 new tokens) over
  seeds 0-15, sent one at a time through ``llm_memory.tasks.generate``;
- 16 at once: the same 16 requests sent together (decoded as one batch);
- prompt pass: one forward pass over 16 prompts of 200 tokens;
- attention view: ``llm_memory.tasks.attention`` on 256 tokens and the demo's two figures of it;
- decoding step: one token for 1 row and for 16 rows, the cache holding 80 to 128 tokens.

Parity: the 16 sampled texts of both are compared token for token, and the largest logit difference
on a 256-token text is reported.

    python -m bench.packed_linear [--model PATH] [--rounds 5] [--json bench/results/packed_linear.json]
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/model_speed.py

import json
import statistics
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, DynamicCache

from bench._common import (
    SHORT_PROMPT,
    all_at_once_in_process,
    one_at_a_time_in_process,
    side_by_side_arguments,
)
from llm_memory.demo.figures import attention_figures
from llm_memory.serving.models import Models, load_models
from llm_memory.serving.packed_linear import PackedLinear
from llm_memory.serving.settings import ServeSettings
from llm_memory.tasks.attention import attention
from llm_memory.training.reviews import load_movie_reviews

NEW_TOKENS = 128  # per request


def timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main():
    args = side_by_side_arguments(__doc__)
    settings = ServeSettings.from_env()
    packed = load_models(args.model, settings=settings)
    plain_lm = AutoModelForCausalLM.from_pretrained(args.model).eval().requires_grad_(False)
    plain = Models(plain_lm, packed.lm_tokenizer, settings=settings)
    contenders = {"nn.Linear": plain, "packed": packed}
    assert not packed_count(plain_lm), "the nn.Linear copy is plain"
    print(f"as served: {packed_count(packed.lm)} packed linear layers (the rest plain)")

    tokenizer = packed.lm_tokenizer
    ids = tokenizer(
        " ".join(load_movie_reviews()["test"]["text"][:20]), add_special_tokens=False, verbose=False
    )["input_ids"]
    window_text = tokenizer.decode(ids[:256])
    prompts = torch.tensor([ids[i : i + 200] for i in range(0, 16 * 50, 50)])  # (16, 200)

    def prompt_pass(models):
        with torch.no_grad():
            models.lm(prompts)

    def decode_step(models, rows: int, steps: int = 48) -> float:
        """Mean seconds of a decoding step of ``rows`` rows, the cache holding 80 to 128 tokens."""
        cache = DynamicCache(config=models.lm.config)
        with torch.no_grad():
            models.lm(prompts[:rows, :80], past_key_values=cache, use_cache=True)
            step_ids = prompts[:rows, 80:81]
            start = time.perf_counter()
            for _ in range(steps):
                models.lm(step_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
            return (time.perf_counter() - start) / steps

    measures = {
        "one_request_s": lambda models: one_at_a_time_in_process(models, SHORT_PROMPT, NEW_TOKENS)[0],
        "sixteen_at_once_s": lambda models: all_at_once_in_process(models, SHORT_PROMPT, NEW_TOKENS)[0],
        "prompt_pass_16x200_s": lambda models: timed(lambda: prompt_pass(models)),
        # The task and the demo's figures of it: what the attention view did before it was split.
        "attention_256_s": lambda models: timed(lambda: attention_figures(attention(models, window_text))),
        "decode_step_1_row_s": lambda models: decode_step(models, 1),
        "decode_step_16_rows_s": lambda models: decode_step(models, 16),
    }
    for models in contenders.values():  # warm-up
        for measure in measures.values():
            measure(models)
    seconds = {name: {key: [] for key in measures} for name in contenders}
    for round_index in range(args.rounds):
        order = list(contenders) if round_index % 2 == 0 else list(reversed(contenders))
        for key, measure in measures.items():
            for name in order:
                seconds[name][key].append(measure(contenders[name]))

    texts = {
        name: one_at_a_time_in_process(models, SHORT_PROMPT, NEW_TOKENS)[1]
        for name, models in contenders.items()
    }
    batched_texts = all_at_once_in_process(packed, SHORT_PROMPT, NEW_TOKENS)[1]
    window_ids = torch.tensor([ids[:256]])
    with torch.no_grad():
        logit_difference = (packed.lm(window_ids).logits - plain_lm(window_ids).logits).abs().max().item()

    results = {"model": args.model, "rounds": args.rounds, "threads": 1}
    print(f"model: {args.model} · one torch thread · medians of {args.rounds} rounds\n")
    print(f"| {'measure':<28} | {'nn.Linear':>10} | {'packed':>10} | {'packed / nn.Linear':>18} |")
    print(f"|{'-' * 30}|{'-' * 12}|{'-' * 12}|{'-' * 20}|")
    for key in measures:
        ratios = [p / q for p, q in zip(seconds["packed"][key], seconds["nn.Linear"][key], strict=True)]
        row = {name: statistics.median(seconds[name][key]) for name in contenders}
        row["ratio"] = statistics.median(ratios)
        results[key] = row
        plain_ms, packed_ms = 1000 * row["nn.Linear"], 1000 * row["packed"]
        print(f"| {key:<28} | {plain_ms:>7.1f} ms | {packed_ms:>7.1f} ms | {row['ratio']:>18.2f} |")
    for name in contenders:
        one = results["one_request_s"][name]
        results[f"sixteen_over_one_{name}"] = results["sixteen_at_once_s"][name] / one
        step = results["decode_step_1_row_s"][name]
        results[f"step_16_over_1_{name}"] = results["decode_step_16_rows_s"][name] / step
    results["same_texts_alone"] = texts["packed"] == texts["nn.Linear"]
    results["same_texts_batched"] = batched_texts == texts["nn.Linear"]
    results["max_logit_difference"] = logit_difference
    print(
        f"\n16 at once / one: nn.Linear {results['sixteen_over_one_nn.Linear']:.2f}x, "
        f"packed {results['sixteen_over_one_packed']:.2f}x · a step of 16 rows / a step of one: "
        f"nn.Linear {results['step_16_over_1_nn.Linear']:.2f}x, packed {results['step_16_over_1_packed']:.2f}x"
    )
    print(
        f"same 16 texts alone: {results['same_texts_alone']} · batched: {results['same_texts_batched']} · "
        f"largest logit difference on 256 tokens: {logit_difference:.1e}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def packed_count(model) -> int:
    return sum(isinstance(module, PackedLinear) for module in model.modules())


if __name__ == "__main__":
    main()
