"""Generate: a continuation of a prompt, streamed as it is decoded, greedy, sampled or by beam search.

Sampled and greedy requests go to the models' ``Batcher`` (``llm_memory.serving``), which decodes the
requests that arrive together as one batch; each row keeps its own settings and seed, so a seeded
request gives the same text alone or batched. Beam search goes through ``GenerationMixin.generate``.
The defaults and ranges of every setting are those of ``llm_memory.generation_settings``.
"""

import math
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from llm_memory.generation_settings import STRATEGIES, GenerationSettings
from llm_memory.serving.loading import eos_token_ids, plain_generation_config
from llm_memory.serving.models import Models
from llm_memory.tasks.checks import RANGES, check_choice, check_number, clean_text
from llm_memory.training.tokenization import REPLACEMENT_CHAR, encode

# A request that sees no token for this long fails instead of waiting forever.
GENERATION_TIMEOUT_S = 300.0


def check_generation_settings(models: Models, **values) -> GenerationSettings:
    """The settings with every value checked against its range (max_new_tokens also against the window),
    and a seed of -1 replaced by a fresh one."""
    settings = GenerationSettings(**values)
    checked = {"strategy": check_choice("strategy", settings.strategy, STRATEGIES)}
    for name in (
        "max_new_tokens",
        "temperature",
        "top_k",
        "top_p",
        "repetition_penalty",
        "no_repeat_ngram_size",
        "num_beams",
        "seed",
    ):
        high = models.max_new_tokens if name == "max_new_tokens" else None
        checked[name] = check_number(name, getattr(settings, name), high=high)
    if checked["seed"] < 0:
        checked["seed"] = secrets.randbelow(RANGES["seed"][1] + 1)
    return GenerationSettings(**checked)


@dataclass(frozen=True)
class GenerationUpdate:
    """The state of a generation: the text so far (prompt excluded) and its speed."""

    text: str
    num_tokens: int
    seconds: float  # since the request was made, prompt processing included
    done: bool
    prompt_tokens: int
    dropped_prompt_tokens: int  # cut from the start of the prompt to fit the window
    seed: int | None = None  # the sampling seed used (None for greedy and beam search)

    @property
    def tokens_per_second(self) -> float:
        return self.num_tokens / self.seconds if self.seconds > 0 else 0.0


def decode_complete(tokenizer, ids: list[int]) -> str:
    """The text of ``ids`` up to its last whole character: a multi-byte character shows once complete."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return text.rstrip(REPLACEMENT_CHAR)


def document_start(tokenizer) -> list[int]:
    """The tokens that begin a document for this tokenizer's model: those the tokenizer puts in front of
    a text itself (a bos token, where its models are trained so), else its eos token, which this
    project's language-model training puts between documents (``llm_memory.training.data``), as GPT-2's
    <|endoftext|> does; empty if it has neither."""
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    special = tokenizer("x", add_special_tokens=True)["input_ids"]
    for start in range(len(special) - len(plain) + 1):
        if plain and special[start : start + len(plain)] == plain:
            if start:
                return list(special[:start])
            break
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


def prompt_ids(tokenizer, prompt: str, keep: int) -> tuple[list[int], int, int]:
    """(ids, dropped, prompt_tokens): the prompt's token ids cut to its last ``keep`` tokens, behind
    ``document_start`` when the whole prompt fits with it (a prompt read from its start is the start
    of a document; a cut one is a document's middle). A bare short prompt reads to the embedded model
    like a whole one-line review: a third of sampled continuations stopped at an eos before 64 tokens,
    against 6% behind the document start (bench/document_start.py)."""
    ids = encode(tokenizer, prompt)
    dropped = max(0, len(ids) - keep)
    if dropped:
        return ids[dropped:], dropped, keep
    start = document_start(tokenizer)
    if len(start) + len(ids) > keep:
        return ids, 0, len(ids)
    return start + ids, 0, len(ids)


def generate_stream(
    models: Models, prompt: str, *, min_interval_s: float = 0.0, **settings
) -> Iterator[GenerationUpdate]:
    """Continues ``prompt``, yielding the generated text so far after every new token, or at most
    every ``min_interval_s`` (the first token and the end come at once; tokens in between are
    decoded only when shown: a page needs ~10 updates a second, not one per token).

    ``settings`` are fields of ``GenerationSettings``; those not given take its defaults, and
    ``max_new_tokens`` the model's ``default_max_new_tokens`` (DEFAULT_MAX_NEW_TOKENS, less in a smaller
    window). ``strategy`` is ``greedy``, ``sample`` (temperature, top_k, top_p; ``seed`` -1 draws a fresh
    seed, reported in each update) or ``beam`` (``num_beams`` beams; yields only the final text).
    ``repetition_penalty`` and ``no_repeat_ngram_size`` apply to all three. A prompt longer than the
    window less ``max_new_tokens`` loses its start. Closing the iterator (a stop button) ends the
    request's decoding.
    """
    start = time.perf_counter()
    prompt = clean_text(prompt, "prompt", models.settings.max_input_chars)
    if settings.get("max_new_tokens") is None:
        settings["max_new_tokens"] = models.default_max_new_tokens
    settings = check_generation_settings(models, **settings)
    used_seed = settings.seed if settings.strategy == "sample" else None
    tokenizer = models.lm_tokenizer
    ids, dropped, num_prompt_tokens = prompt_ids(tokenizer, prompt, models.window - settings.max_new_tokens)

    def update(tokens: list[int], done: bool) -> GenerationUpdate:
        text = (
            tokenizer.decode(tokens, skip_special_tokens=True) if done else decode_complete(tokenizer, tokens)
        )
        seconds = time.perf_counter() - start
        return GenerationUpdate(text, len(tokens), seconds, done, num_prompt_tokens, dropped, used_seed)

    if settings.strategy == "beam":
        yield update(beam_search(models, ids, settings), done=True)
        return

    row = models.batcher.submit(ids, settings)
    try:
        shown, next_show = None, 0.0
        while True:
            # Until the next update is due only the end can cut the wait short; then the next token does.
            if (due := next_show - time.perf_counter()) > 0:
                row.done.wait(min(due, GENERATION_TIMEOUT_S))
            if not row.changed.wait(GENERATION_TIMEOUT_S):
                raise RuntimeError(f"No token came for {GENERATION_TIMEOUT_S:.0f} s; generation stopped.")
            row.changed.clear()
            if row.done.is_set():
                if row.error is not None:
                    raise RuntimeError(f"Generation failed: {row.error}") from row.error
                yield update(list(row.tokens), done=True)
                return
            current = update(list(row.tokens), done=False)
            if current.text != shown:
                shown = current.text
                next_show = time.perf_counter() + min_interval_s
                yield current
    finally:
        row.cancel()


def beam_search(models: Models, ids: list[int], settings: GenerationSettings) -> list[int]:
    """The new tokens of a beam search through ``GenerationMixin.generate``, without eos and pads."""
    model, tokenizer = models.lm, models.lm_tokenizer
    config = plain_generation_config(
        model,
        tokenizer,
        max_new_tokens=settings.max_new_tokens,
        do_sample=False,
        num_beams=settings.num_beams,
        early_stopping=True,
    )
    config.repetition_penalty = settings.repetition_penalty
    config.no_repeat_ngram_size = settings.no_repeat_ngram_size
    with torch.no_grad():
        output = model.generate(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            generation_config=config,
        )
    tokens = output[0, len(ids) :].tolist()
    eos = eos_token_ids(model, tokenizer)
    return [token for token in tokens if token not in eos and token != tokenizer.pad_token_id]


def generate(models: Models, prompt: str, **settings) -> GenerationUpdate:
    """The last update of ``generate_stream``: the whole generated text."""
    final = None
    # Only the end is wanted: no text in between is decoded.
    for final in generate_stream(models, prompt, **settings, min_interval_s=math.inf):  # noqa: B007
        pass
    return final
