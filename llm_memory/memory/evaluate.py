"""Reading a memory probe window by window and scoring its answer, in each way of carrying memory.

Follows the BABILong evaluation (Kuratov et al., 2024): a fact hidden in distractor text, recalled at a
distance. Three ways to read past the attention window:

- ``attention``: window by window, nothing carried; a fact outside the question's window is lost.
- ``lstm``: the LSTM (h, c) state carried from window to window (segment recurrence).
- ``lstm+kv``: the state plus the last ``window // 2`` keys and values (Transformer-XL's cache).

An answer counts when every answer token is the argmax at its position, teacher forced: the same
test as greedy decoding when the answer is right, and cheaper.
"""

import re
from dataclasses import dataclass

import torch

from llm_memory.memory import probes
from llm_memory.memory.probes import Probe
from llm_memory.memory.recurrence import window_size, windowed_forward

VARIANTS = ("attention", "lstm", "lstm+kv")


class BenchError(ValueError):
    """Bad benchmark input; the message says what to fix."""


def variant_settings(variant: str, window: int, carry_kv: int | None = None) -> dict:
    """``windowed_forward`` keywords of a variant; ``carry_kv`` overrides lstm+kv's ``window // 2``."""
    if variant == "attention":
        return {"carry_state": False, "carry_kv": 0}
    if variant == "lstm":
        return {"carry_state": True, "carry_kv": 0}
    if variant == "lstm+kv":
        return {"carry_state": True, "carry_kv": window // 2 if carry_kv is None else carry_kv}
    raise BenchError(f"Unknown variant {variant!r}; choose from {', '.join(VARIANTS)}.")


def reach_start(position: int, window: int, carry_kv: int) -> int:
    """First token that attention at ``position`` can see when windows hold ``window - carry_kv`` new
    tokens each and also the ``carry_kv`` tokens before them."""
    window_start = position // (window - carry_kv) * (window - carry_kv)
    return max(0, window_start - carry_kv)


@dataclass
class ProbeRun:
    predicted_ids: list[int]  # argmax at each answer position, teacher forced
    correct: bool
    token_accuracy: float
    fact_in_reach: bool  # whole fact visible to attention from the last prompt token
    window_start: int  # first new token of the window holding the last prompt token
    attentions: tuple | None  # that window's attentions, when asked for: per layer (1, nh, T, S)


@torch.no_grad()
def run_probe(
    model,
    probe: Probe,
    window: int | None = None,
    carry_kv: int = 0,
    carry_state: bool = True,
    output_attentions: bool = False,
) -> ProbeRun:
    """Reads prompt and answer window by window and checks the argmax at every answer position."""
    window = window or window_size(model)
    ids = torch.tensor([probe.input_ids + probe.answer_ids], device=model.device)
    first = len(probe.input_ids) - 1  # the logits here predict the first answer token
    last = first + len(probe.answer_ids)
    step = window - carry_kv
    skip = 0
    if carry_kv == 0 and not (carry_state and model.config.use_lstm):
        # Nothing crosses a window boundary, so earlier windows cannot change these logits: skip them.
        skip = first // step * step
    predicted, attentions = [], None
    for out in windowed_forward(
        model,
        ids[:, skip:],
        window=window,
        carry_kv=carry_kv,
        carry_state=carry_state,
        output_attentions=output_attentions,
    ):
        start, end = out.start + skip, out.end + skip
        low, high = max(start, first), min(end, last)
        if low < high:
            predicted += out.logits[0, low - start : high - start].argmax(-1).tolist()
        if output_attentions and start <= first < end:
            attentions = out.attentions
    hits = [p == a for p, a in zip(predicted, probe.answer_ids, strict=True)]
    return ProbeRun(
        predicted_ids=predicted,
        correct=all(hits),
        token_accuracy=sum(hits) / len(hits),
        fact_in_reach=probe.fact_token_span[0] >= reach_start(first, window, carry_kv),
        window_start=first // step * step,
        attentions=attentions,
    )


def evaluate(model, eval_probes: list[Probe], window: int, carry_kv: int, carry_state: bool) -> dict:
    runs = [run_probe(model, probe, window, carry_kv, carry_state) for probe in eval_probes]
    n = len(runs)
    return {
        "accuracy": sum(run.correct for run in runs) / n,
        "token_accuracy": sum(run.token_accuracy for run in runs) / n,
        "fact_in_reach": sum(run.fact_in_reach for run in runs) / n,
        "samples": n,
    }


def window_guess(eval_probes: list[Probe], tokenizer, window: int) -> float:
    """Expected exact match of a reader that sees only the question's window (attention alone) and picks
    uniformly among the answers of the right form written there: the places named in it for qa1 and
    qa2, the numbers for passkey and kv; with none there, it guesses at chance. Beyond the window this
    is what attention alone can reach by guessing from context, the baseline the curves are read against."""
    if not eval_probes:
        raise ValueError("window_guess needs at least one probe.")
    total = 0.0
    for probe in eval_probes:
        first = len(probe.input_ids) - 1
        seen = tokenizer.decode(probe.input_ids[reach_start(first, window, 0) : probe.question_start])
        answer = probe.answer.strip()
        if probe.task in ("qa1", "qa2"):
            candidates = {place for place in probes.QA1_LOCATIONS if re.search(rf"\b{place}\b", seen)}
        else:
            candidates = set(re.findall(rf"\b\d{{{len(answer)}}}\b", seen))
        if candidates:
            total += (answer in candidates) / len(candidates)
        else:
            total += probes.chance_level(probe.task)["exact"]
    return total / len(eval_probes)
