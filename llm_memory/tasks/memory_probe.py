"""The Memory tab's task: build one memory probe, read it as a memory variant does, and say where attention looks.

A probe (``llm_memory.memory.probes``) hides a fact at a chosen distance in review text; this reads it
window by window (``llm_memory.memory.evaluate``) and reports the model's answer and the share of
attention that the question pays to the fact in each layer (only possible when the fact is inside the
question's window). Plain data, for the demo, the tests and any caller.
"""

import math
from collections.abc import Sequence

from llm_memory.memory.evaluate import VARIANTS, run_probe, variant_settings
from llm_memory.memory.probes import Distractors, Probe, make_probe
from llm_memory.memory.recurrence import window_size

DEFAULT_DISTANCE = 128
# The farthest a probe of the tab may hide its fact: 64 windows of the embedded memory model (64 tokens)
# and the benchmark's longest distance; reading it window by window takes a few seconds on a CPU.
MAX_DISTANCE = 4096
MAX_SEED = 2**31 - 1


def check_integer(name: str, value, low: int, high: int) -> int:
    """``value`` as an int in [low, high], or a ValueError that names the range (NaN, inf, text too)."""
    allowed = f"{name} must be an integer from {low} to {high}"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{allowed}, got {value!r}.")
    if value != int(value) or not low <= value <= high:
        raise ValueError(f"{allowed}, got {value}.")
    return int(value)


BEYOND_WINDOW = "beyond the window: attention cannot see it"


def fact_attention(probe: Probe, attentions: tuple, window_start: int) -> dict | None:
    """Share of attention mass from the question's tokens onto the fact's tokens, per layer.

    ``attentions`` are those of the window whose new tokens start at ``window_start`` and which holds
    the prompt's last token; each is (1, nh, T, S), the S keys being carried tokens then the T new ones.
    Returns None when no fact token is among the keys. ``uniform`` is the share that attention spread
    evenly over the visible keys would give, for comparison.
    """
    new_tokens, keys = attentions[0].shape[-2:]
    first_key = window_start - (keys - new_tokens)  # position of key 0 in the whole sequence
    prompt_end = len(probe.input_ids)
    queries = list(range(max(probe.question_start, window_start), min(prompt_end, window_start + new_tokens)))
    fact = list(range(max(probe.fact_token_span[0], first_key), probe.fact_token_span[1]))
    if not fact or not queries:
        return None
    query_index = [q - window_start for q in queries]
    key_index = [k - first_key for k in fact]
    per_layer = [
        float(layer[0][:, query_index][:, :, key_index].sum(-1).mean()) for layer in attentions
    ]  # mean over heads and question tokens
    uniform = sum(len(fact) / (q - first_key + 1) for q in queries) / len(queries)
    return {
        "per_layer": per_layer,
        "uniform": uniform,
        "fact_tokens_seen": len(fact),
        "fact_tokens": probe.fact_token_span[1] - probe.fact_token_span[0],
    }


def run_memory_probe(
    model,
    tokenizer,
    task: str = "passkey",
    distance: int = DEFAULT_DISTANCE,
    seed: int = 0,
    variant: str = "lstm",
    distractor_texts: Sequence[str] | Distractors | None = None,
    align: bool = True,
) -> dict:
    """Builds one probe, reads it window by window as ``variant`` does, and reports the answer and the
    attention the question pays to the fact. With ``align`` the probe fills whole windows, as in the
    benchmark, so the fact is inside the question's window when it lies within the last window."""
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; choose from {', '.join(VARIANTS)}.")
    distance = check_integer("distance", distance, 1, MAX_DISTANCE)
    seed = check_integer("seed", seed, 0, MAX_SEED)
    window = window_size(model)
    probe = make_probe(task, distance, tokenizer, seed, distractor_texts, align_to=window if align else None)
    settings = variant_settings(variant, window)
    run = run_probe(model, probe, window, output_attentions=True, **settings)
    attention = fact_attention(probe, run.attentions, run.window_start)
    if attention is None:
        seen = BEYOND_WINDOW + (
            "; only the carried LSTM state can bring it to the question."
            if settings["carry_state"] and model.config.use_lstm
            else "."
        )
    elif attention["fact_tokens_seen"] < attention["fact_tokens"]:
        seen = f"the fact is partly inside the window ({attention['fact_tokens_seen']} of its tokens)."
    else:
        seen = "the fact is inside the question's window: attention can see it."
    return {
        "task": task,
        "variant": variant,
        "distance": probe.distance,
        "window": window,
        "carry_kv": settings["carry_kv"],
        "prompt": probe.text,
        "fact": tokenizer.decode(probe.input_ids[slice(*probe.fact_token_span)]),
        "answer": probe.answer,
        "predicted": tokenizer.decode(run.predicted_ids),
        "correct": run.correct,
        "token_accuracy": run.token_accuracy,
        "fact_in_reach": attention is not None,
        "use_lstm": bool(model.config.use_lstm),
        "attention": attention,
        "message": seen,
        "probe": probe,
    }
