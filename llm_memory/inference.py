"""The demo's tasks as plain functions: generate, classify, summarize and inspect attention.

The Gradio app, the tests, the benchmarks and the command line all call these; nothing here knows about a
UI. Every function takes the ``Models`` loaded once by ``load_models``, checks its inputs (raising
``InputError``, whose message says what is allowed) and returns plain data.

- Sampled and greedy generation: requests that arrive together are decoded as one left-padded batch,
  as text-generation servers do, by a loop over the model's forward pass and its cache (a row that
  ends leaves the batch at once). Each row keeps its own settings and seed: the sampler draws each
  row's token with that row's temperature, top-k, top-p, repetition penalty and random generator, so
  a seeded request gives the same text alone or batched. Rows that begin with the same prompt keep
  its keys and values once (``shared_prefix``). Beam search goes through ``GenerationMixin.generate``.
- The models' linear layers run on oneDNN's fp32 kernels when gradients are off (``packed_linear``).
- Attributions are gradient x input on the input embeddings (Shrikumar et al., 2016), summed over the
  tokens of each readable piece.
- The extractive summary ranks sentences by the cosine of their mean contextual embedding to the
  document's centroid (centroid summarization, Radev et al., 2004), or by the attention they receive;
  an abstractive summary is generated when a checkpoint tuned on ``document <|sep|> summary`` is loaded.

Shapes: L layers, nh heads, T tokens, P readable pieces, H hidden size.
"""

import argparse
import inspect
import math
import os
import re
import secrets
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DynamicCache,
    GenerationConfig,
    PreTrainedModel,
)
from transformers.cache_utils import (
    DynamicLayer,
    LinearAttentionAndFullAttentionLayer,
    LinearAttentionCacheLayerMixin,
)

from . import attention_view, shared_prefix
from .data import split_sentences, summary_prompt, truncate, truncation_side
from .generation_settings import (
    DEFAULT_MAX_NEW_TOKENS,
    GENERATION_DEFAULTS,
    GENERATION_RANGES,
    STRATEGIES,
    GenerationSettings,
)
from .packed_linear import pack_linears
from .tokenization import REPLACEMENT_CHAR, readable_pieces
from .weights import LOAD_ERRORS, check_finite, describe_load_error

if TYPE_CHECKING:
    from .decoder_process import DecoderProcess

# Longer text is refused rather than cut: 20,000 characters is ~25 pages, far past every model's window.
MAX_INPUT_CHARS = int(os.environ.get("LLM_MEMORY_MAX_CHARS", "20000"))
# The embedded checkpoints of a repository checkout, the command line's defaults.
CHECKPOINTS_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
# The attention window of a model whose config does not say.
FALLBACK_WINDOW = 1024

# How each summary method ranks sentences (``sentence_salience``): the first sentences first (lead),
# the sentences closest to a summarizer's abstract, and the language model's own view (centroid,
# attention).
SUMMARY_METHODS = ("lead", "summarizer", "centroid", "attention")
# The method with the best ROUGE on the docstring benchmark (bench/summarize_rouge.py): lead-1 (19.7
# ROUGE-1), ahead of the summarizer (19.3 with summarizer v1), attention (18.0) and centroid (14.8),
# which is random (15.0).
DEFAULT_SUMMARY_METHOD = "lead"
# (low, high) of each parameter, inclusive: the decoding settings' (llm_memory/generation_settings.py)
# and the summary's.
RANGES = {**GENERATION_RANGES, "num_sentences": (1, 10)}
INTEGER_PARAMETERS = {
    "max_new_tokens",
    "top_k",
    "no_repeat_ngram_size",
    "num_beams",
    "seed",
    "num_sentences",
    "layer",
    "head",
    "token_index",
}
# Tokens the abstractive summary may use; docstring summaries are one or two sentences.
SUMMARY_MAX_NEW_TOKENS = 64

# While the server is busy, requests arriving within this window of the first are decoded in the same
# batch. 16 users clicking at once reach the batcher over ~0.1 s (Gradio's queue takes them one by one).
BATCH_WINDOW_S = float(os.environ.get("LLM_MEMORY_BATCH_WINDOW_MS", "100")) / 1000
# ... but the window closes early once no request has come for this long: a burst sent at once is in
# after a few milliseconds, and waiting out the whole window would only delay it. Traced over HTTP, 16
# requests sent at once reached the batcher at most ~5 ms apart. With 8 ms, the 16-row batch began
# 20-25 ms sooner than with 25 ms and no burst of 10 split; with 4 ms, one burst of 5 split. A request
# that comes later still joins the running batch (``rebatch_max_tokens``).
BATCH_QUIET_S = float(os.environ.get("LLM_MEMORY_BATCH_QUIET_MS", "8")) / 1000
# Rows per batch: a batch of 16 short prompts costs about twice one row on this project's CPU.
MAX_BATCH_SIZE = int(os.environ.get("LLM_MEMORY_MAX_BATCH", "16"))
# A classify request that finds none waiting waits this long at most for others to share its pass.
CLASSIFY_WINDOW_S = 0.03
# Batches decoded at once, each on its own thread (torch itself then uses one thread per batch). At
# least two, so that a new request can start while a long one runs.
GENERATION_WORKERS = int(
    os.environ.get("LLM_MEMORY_GENERATION_WORKERS", str(max(2, min(4, os.cpu_count() or 2))))
)
# A running batch with room takes in new requests while it has made at most this many tokens: its rows
# then read their prompt and tokens so far again, which costs little while they are short.
REBATCH_MAX_TOKENS = int(os.environ.get("LLM_MEMORY_REBATCH_MAX_TOKENS", "64"))
# Rows whose contexts begin with at least this many of the same tokens keep that part's keys and values
# once (``shared_prefix``). Shorter, the default model's rows read it as fast each on their own: 16
# sampled requests with one prompt of 8 or 16 tokens decoded in 1.03-1.06x the time with it kept once,
# of 32 or 40 in 0.97-1.03x, of 48 to 64 in 0.93-0.97x, of 128 in 0.86-0.89x (two runs of
# bench/batch_decoding.py --shared_prompts 8,16,32,40,48,64). 0 turns it off.
SHARED_PREFIX_MIN_TOKENS = int(os.environ.get("LLM_MEMORY_SHARED_PREFIX_MIN_TOKENS", "48"))
# A request that sees no token for this long fails instead of waiting forever.
GENERATION_TIMEOUT_S = 300.0


class InputError(ValueError):
    """A bad request (empty text, a parameter out of range); the message says what is allowed."""


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded; ``role`` says which one (model, classifier or summarizer)."""

    def __init__(self, message: str, role: str):
        super().__init__(message)
        self.role = role


# ---------------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------------


def clean_text(text, what: str = "text") -> str:
    """``text`` without control characters (tabs and newlines stay); refuses empty or overlong text."""
    if not isinstance(text, str):
        raise InputError(f"The {what} must be a string, got {type(text).__name__}.")
    if len(text) > MAX_INPUT_CHARS:
        raise InputError(
            f"The {what} is {len(text):,} characters long; the limit is {MAX_INPUT_CHARS:,} characters. "
            "Shorten it and try again."
        )
    text = text.replace("\r\n", "\n")
    # Cc are the C0/C1 controls (NUL, BEL, ESC...), Cs lone surrogates that no encoder accepts. Format
    # characters (Cf) stay: the zero-width joiner holds emoji such as 👩‍💻 together.
    cleaned = "".join(ch for ch in text if ch in "\t\n" or unicodedata.category(ch) not in ("Cc", "Cs"))
    if not cleaned.strip():
        raise InputError(f"The {what} is empty; type some text first.")
    return cleaned


def count_removed_characters(text: str) -> int:
    """How many characters ``clean_text`` drops, so that a UI can say so."""
    cleaned = clean_text(text)  # first: it refuses what is not a string
    return len(text.replace("\r\n", "\n")) - len(cleaned)


def check_number(name: str, value, low=None, high=None) -> int | float:
    """``value`` as a number within ``RANGES[name]`` (or [low, high]); an InputError names the range."""
    default_low, default_high = RANGES.get(name, (None, None))
    low = default_low if low is None else low
    high = default_high if high is None else high
    integer = name in INTEGER_PARAMETERS
    allowed = f"{'an integer' if integer else 'a number'} from {low} to {high}"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{name} must be {allowed}, got {value!r}.")
    if integer:
        if value != int(value):
            raise InputError(f"{name} must be {allowed}, got {value!r}.")
        value = int(value)
    if not low <= value <= high:
        raise InputError(f"{name} must be {allowed}, got {value}.")
    return value


def check_choice(name: str, value, choices: Sequence[str]) -> str:
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(choices)}; got {value!r}.")
    return value


# ---------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _load(path: str, auto_class, role: str):
    """(model, tokenizer) from a local folder or a Hub id, in eval mode with gradients off."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        if os.path.exists(path):
            raise ModelLoadError(f"The {role} path {path!r} is a file; it must be a model folder.", role)
        if os.path.isabs(path) or path.startswith(".") or not _HUB_ID.match(path):
            raise ModelLoadError(f"The {role} folder {path!r} does not exist.", role)
    elif not os.path.isfile(os.path.join(path, "config.json")):
        raise ModelLoadError(
            f"The {role} folder {path!r} holds no config.json, so no saved model (is it still training?).",
            role,
        )
    try:
        model = auto_class.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        check_finite(model, path)
    except LOAD_ERRORS as err:
        where = "folder" if os.path.isdir(path) else "folder or Hub model id"
        raise ModelLoadError(
            f"Could not load the {role} from the {where} {path!r}: {describe_load_error(path, err)}", role
        ) from err
    if tokenizer.pad_token_id is None:  # GPT-2-style tokenizers: pad with eos, as generate() does
        tokenizer.pad_token = tokenizer.eos_token
    model.eval().requires_grad_(False)
    pack_linears(model)  # oneDNN's fp32 kernels: the same results, faster on the CPU (packed_linear.py)
    return model, tokenizer


def context_window(model: PreTrainedModel, tokenizer) -> int:
    """Tokens one forward pass may hold: the model's positions, else the tokenizer's limit."""
    window = getattr(model.config, "max_position_embeddings", None) or tokenizer.model_max_length
    return int(min(window, FALLBACK_WINDOW))


def is_summarizer(model: PreTrainedModel) -> bool:
    """A checkpoint tuned for ``document <|sep|> summary`` says so in ``config.task_specific_params``."""
    return "summarization" in (getattr(model.config, "task_specific_params", None) or {})


@dataclass
class Models:
    """Everything the tasks need, loaded once: the language model, the classifier, an optional summarizer."""

    lm: PreTrainedModel
    lm_tokenizer: object
    classifier: PreTrainedModel | None = None
    classifier_tokenizer: object = None
    summarizer: PreTrainedModel | None = None
    summarizer_tokenizer: object = None
    sources: dict[str, str] = field(default_factory=dict)
    # Decodes sampled and greedy requests: in this process, or a DecoderProcess (decoder_process.py).
    batcher: "GenerationBatcher | DecoderProcess" = field(init=False, repr=False)
    # Classifies requests that arrive together in one batch.
    classify_batcher: "ClassifyBatcher | None" = field(init=False, repr=False)

    def __post_init__(self):
        self.batcher = GenerationBatcher(self.lm, self.lm_tokenizer)
        self.classify_batcher = (
            ClassifyBatcher(self.classifier, self.classifier_tokenizer)
            if self.classifier is not None
            else None
        )

    @property
    def window(self) -> int:
        return context_window(self.lm, self.lm_tokenizer)

    @property
    def max_new_tokens(self) -> int:
        """The largest max_new_tokens: the range's top, leaving at least one prompt token in the window."""
        return min(RANGES["max_new_tokens"][1], self.window - 1)

    @property
    def default_max_new_tokens(self) -> int:
        return min(DEFAULT_MAX_NEW_TOKENS, self.max_new_tokens)

    @property
    def num_layers(self) -> int:
        return self.lm.config.num_hidden_layers

    @property
    def num_heads(self) -> int:
        return self.lm.config.num_attention_heads


def load_models(
    model_path: str,
    classifier_path: str | None = None,
    summarizer_path: str | None = None,
    decoder_process: bool = False,
) -> Models:
    """Loads the language model, the classifier and an optional summarizer (local folders or Hub ids).

    A language model whose config marks it as summarization-tuned also serves as the summarizer.
    Without a classifier, everything but ``classify`` works. With ``decoder_process``, sampled and
    greedy generation is decoded in a child process that loads the language model too (a server's
    own threads then do not slow it; see decoder_process.py), started first so that both load at
    once. Raises ModelLoadError naming the model that failed.
    """
    decoder = None
    if decoder_process:
        from .decoder_process import DecoderProcess  # it imports this module

        decoder = DecoderProcess(model_path, torch.get_num_threads())
    try:
        models = _load_models(model_path, classifier_path, summarizer_path)
        if decoder is not None:
            decoder.wait_ready()
            models.batcher = decoder
    except BaseException:
        if decoder is not None:
            decoder.close()
        raise
    return models


def source_name(path: str) -> str:
    """How a page names a model: a Hub id as it is, a local folder by its own name only (the server's
    paths are nobody else's business)."""
    path = os.fspath(path)
    return os.path.basename(os.path.normpath(path)) if os.path.isdir(path) else path


def _load_models(model_path: str, classifier_path: str | None, summarizer_path: str | None) -> Models:
    lm, lm_tokenizer = _load(model_path, AutoModelForCausalLM, "model")
    sources = {"model": source_name(model_path)}
    classifier, classifier_tokenizer = None, None
    if classifier_path:
        classifier, classifier_tokenizer = _load(
            classifier_path, AutoModelForSequenceClassification, "classifier"
        )
        sources["classifier"] = source_name(classifier_path)
    summarizer, summarizer_tokenizer = None, None
    if summarizer_path:
        summarizer, summarizer_tokenizer = _load(summarizer_path, AutoModelForCausalLM, "summarizer")
        sources["summarizer"] = source_name(summarizer_path)
    elif is_summarizer(lm):
        summarizer, summarizer_tokenizer = lm, lm_tokenizer
        sources["summarizer"] = source_name(model_path)
    return Models(
        lm, lm_tokenizer, classifier, classifier_tokenizer, summarizer, summarizer_tokenizer, sources
    )


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens; callers cut them to the window themselves."""
    return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]


# ---------------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------------


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


class _Row:
    """One request inside a batch: its prompt, settings and random generator, and what it produced.

    The decoding thread appends to ``tokens`` and sets ``changed``; the reader wakes on ``changed`` only
    when it wants to show something, so 16 readers do not each wake for every token of a batch."""

    def __init__(self, prompt_ids: list[int], settings: GenerationSettings):
        self.prompt_ids = prompt_ids
        self.settings = settings
        seed = settings.seed if settings.seed >= 0 else secrets.randbelow(2**31)
        self.generator = torch.Generator().manual_seed(seed)
        self.tokens: list[int] = []
        self.changed = threading.Event()  # a token came, or the row ended
        self.done = threading.Event()  # the row ended: finished, or failed with ``error``
        self.error: BaseException | None = None
        self.cancelled = threading.Event()
        self.finished = False

    def add(self, token: int):
        self.tokens.append(token)
        self.changed.set()

    def cancel(self):
        """Asks the decoding to end this row (a closed stream, a stop button)."""
        self.cancelled.set()

    def finish(self):
        if not self.finished:
            self.finished = True
            self.done.set()
            self.changed.set()

    def fail(self, error: BaseException):
        if not self.finished:
            self.error = error
            self.finish()


@dataclass(frozen=True)
class WordForms:
    """What the no-repeat rule compares: each token's form, and which tokens are only whitespace.

    A form is the token's text lowercased, without the whitespace before it, so " The", "The" and
    " the" are one form, and whitespace-only tokens ("\n") are left out of n-grams: ". The film is"
    and ".\nthe film is" are the same 4-gram. Without this, a greedy continuation repeats phrases
    after a line break or a capital (bench/generation_defaults.py).
    """

    ids: torch.LongTensor  # (V,) the form of each token id
    space: torch.BoolTensor  # (V,) True for tokens that are only whitespace

    @classmethod
    def of(cls, tokenizer, vocab_size: int) -> "WordForms":
        texts = [tokenizer.decode([i]) if i < len(tokenizer) else f"<{i}>" for i in range(vocab_size)]
        forms: dict[str, int] = {}
        # A token that is part of a character's bytes decodes alone to U+FFFD: each keeps a form of its
        # own, or all such tokens would be one form and a few CJK characters would ban the rest.
        keys = [
            f"<{i}>" if "\ufffd" in text else text.lstrip().lower() or text for i, text in enumerate(texts)
        ]
        ids = [forms.setdefault(key, len(forms)) for key in keys]
        return cls(torch.tensor(ids), torch.tensor([not text.strip() for text in texts]))


def repeated_ngram_mask(
    input_ids: torch.LongTensor,
    size: int,
    starts: torch.Tensor,
    vocab_size: int,
    forms: WordForms | None = None,
) -> torch.BoolTensor:
    """(B, vocab) True for each token that would end an n-gram of ``size`` already in its row.

    The rule of Transformers' NoRepeatNGramLogitsProcessor, on tensors instead of a Python dict per
    row (that processor walks every row's tokens on every step: ~1 ms for 16 rows of 200 tokens, a
    fifth of a batched decoding step here). Rows are left-padded; n-grams that start in a row's
    padding (before ``starts``) do not count. A test checks it against the processor. With ``forms``,
    n-grams are compared by word form (see ``WordForms``) and every token of a banned form is banned.
    """
    batch, length = input_ids.shape
    positions = torch.arange(length)
    keep = positions >= starts[:, None]
    if forms is not None:
        keep &= ~forms.space[input_ids]
        input_ids = forms.ids[input_ids]
    # Each row's kept tokens moved to the front, in order (a stable sort on "left out").
    count = keep.sum(-1)  # (B,)
    compact = input_ids.gather(1, torch.argsort((~keep).to(torch.int8), dim=-1, stable=True))
    banned_ids = torch.zeros(
        batch, vocab_size if forms is None else int(forms.ids.max()) + 1, dtype=torch.bool
    )
    if length >= size:
        ngrams = compact.unfold(1, size, 1)  # (B, L - n + 1, n)
        # The last n - 1 kept tokens of each row (rows with fewer match nothing, below).
        prefix = compact.gather(1, (count[:, None] - size + 1 + torch.arange(size - 1)).clamp(min=0))
        match = (ngrams[:, :, :-1] == prefix[:, None, :]).all(-1)
        match &= torch.arange(ngrams.shape[1]) + size <= count[:, None]  # n-grams that are complete
        rows, columns = match.nonzero(as_tuple=True)
        banned_ids[rows, ngrams[rows, columns, -1]] = True
    return banned_ids if forms is None else banned_ids[:, forms.ids]


class _RowSampler:
    """Picks each row's next token with that row's settings and random generator.

    Every row of a batch has its own temperature, top-k, top-p, penalty and seed, and every step is
    row-wise, so a row's choice does not depend on the other rows. ``select`` keeps only some rows, for
    a batch whose other rows have ended.
    """

    def __init__(self, rows: list[_Row], pad_lengths: list[int], forms: WordForms | None = None):
        self.rows = rows
        self.forms = forms
        self.pad_lengths = torch.tensor(pad_lengths)
        settings = [row.settings for row in rows]
        self.greedy = torch.tensor([s.strategy == "greedy" for s in settings])
        self.temperature = torch.tensor([[s.temperature] for s in settings], dtype=torch.float32)
        self.top_k = torch.tensor([[s.top_k] for s in settings])
        self.top_p = torch.tensor([[s.top_p] for s in settings], dtype=torch.float32)
        self.penalty = torch.tensor([[s.repetition_penalty] for s in settings], dtype=torch.float32)
        self.no_repeat = torch.tensor([s.no_repeat_ngram_size for s in settings])

    def select(self, index: torch.Tensor):
        self.rows = [self.rows[i] for i in index.tolist()]
        for name in ("pad_lengths", "greedy", "temperature", "top_k", "top_p", "penalty", "no_repeat"):
            setattr(self, name, getattr(self, name)[index])

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.LongTensor:
        """Each row's next token, (B,), from its ids so far (left-padded) and its next-token logits."""
        vocab_size = scores.shape[-1]
        # Repetition penalty as Transformers' RepetitionPenaltyLogitsProcessor (Keskar et al., 2019), but
        # not on pads: a pad position points at the row's first real token, which is penalized anyway.
        positions = torch.arange(input_ids.shape[1])
        first_real = input_ids.gather(1, self.pad_lengths[:, None])
        seen = torch.where(positions < self.pad_lengths[:, None], first_real, input_ids)
        seen_scores = scores.gather(1, seen)
        penalized = torch.where(seen_scores < 0, seen_scores * self.penalty, seen_scores / self.penalty)
        scores = scores.scatter(1, seen, penalized)
        for size in self.no_repeat.unique().tolist():
            if size > 0:
                rows = self.no_repeat == size
                banned = repeated_ngram_mask(
                    input_ids[rows], size, self.pad_lengths[rows], vocab_size, self.forms
                )
                scores[rows] = scores[rows].masked_fill(banned, -math.inf)

        any_greedy = bool(self.greedy.any())
        if any_greedy and bool(self.greedy.all()):
            return scores.argmax(-1)

        # Temperature, top-k, then top-p on what top-k kept, in the order of Transformers' warpers.
        # Only the largest top_k candidates are sorted: a full sort of the vocabulary costs as much as
        # the model's decoding step. A temperature keeps the order, so it divides only the candidates.
        top_k = torch.where(self.top_k > 0, self.top_k, vocab_size)
        num_candidates = int(top_k.max())
        sorted_logits, order = scores.topk(num_candidates, dim=-1)  # (B, K)
        sorted_logits = sorted_logits / self.temperature
        sorted_logits = sorted_logits.masked_fill(torch.arange(num_candidates) >= top_k, -math.inf)
        probs = torch.softmax(sorted_logits, dim=-1)
        # The smallest prefix whose mass reaches top_p; the first token always stays.
        probs = probs.masked_fill(probs.cumsum(-1) - probs >= self.top_p, 0.0)
        cdf = probs.cumsum(-1)
        # Inverse-CDF sampling with one uniform draw from each row's own generator.
        uniform = torch.cat([torch.rand(1, generator=row.generator) for row in self.rows])
        index = torch.searchsorted(cdf, (uniform * cdf[:, -1])[:, None]).clamp(max=num_candidates - 1)
        sampled = order.gather(1, index)[:, 0]
        return torch.where(self.greedy, scores.argmax(-1), sampled) if any_greedy else sampled


def _reserved_update(layer, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
    """``DynamicLayer.update`` with the keys and values written into tensors with room for the batch's
    last position, and read as views of them. ``DynamicLayer`` concatenates on every step, copying the
    whole cache per token (bench/batch_decoding.py: a step of 16 rows at 128-228 positions takes
    0.84-0.91x the time without the copy). After rows leave (``reorder_cache`` makes compact tensors)
    the next step reserves again."""
    if not layer.is_initialized:
        layer.lazy_initialization(key_states, value_states)
    length = layer.keys.shape[-2] if layer.keys.numel() else 0
    end = length + key_states.shape[-2]
    reserved = getattr(layer, "reserved", None)
    if reserved is None or layer.keys.data_ptr() != reserved[0].data_ptr() or end > reserved[0].shape[-2]:
        size = max(end, layer.positions)
        keys = key_states.new_empty((*key_states.shape[:2], size, key_states.shape[-1]))  # (B, nh, S, hd)
        values = value_states.new_empty((*value_states.shape[:2], size, value_states.shape[-1]))
        if length:
            keys[:, :, :length], values[:, :, :length] = layer.keys, layer.values
        reserved = layer.reserved = (keys, values)
    keys, values = reserved
    keys[:, :, length:end], values[:, :, length:end] = key_states, value_states
    layer.keys, layer.values = keys[:, :, :end], values[:, :, :end]
    return layer.keys, layer.values


class _ReservedLayer(DynamicLayer):
    positions = 0  # to reserve; set for each batch
    update = _reserved_update


class _ReservedHybridLayer(LinearAttentionAndFullAttentionLayer):
    positions = 0
    update = _reserved_update


_RESERVED_LAYERS = {DynamicLayer: _ReservedLayer, LinearAttentionAndFullAttentionLayer: _ReservedHybridLayer}


def _reserving_cache(config, positions: int) -> DynamicCache:
    """``DynamicCache(config=config)`` whose full-attention layers reserve ``positions`` (the others,
    e.g. sliding windows, stay as they are)."""
    cache = DynamicCache(config=config)
    for layer in cache.layers:
        if (reserved := _RESERVED_LAYERS.get(type(layer))) is not None:
            layer.__class__ = reserved  # the same state; only update() differs
            layer.positions = positions
    return cache


@dataclass(eq=False)
class _Batch:
    """Rows being decoded together. ``rebatch`` asks the batch to stop after its current token so that
    its unfinished rows can continue in one batch with requests that arrived since."""

    rows: list[_Row]
    rebatch: threading.Event = field(default_factory=threading.Event)


def _eos_token_ids(model: PreTrainedModel, tokenizer) -> set[int]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos if isinstance(eos, list) else [eos] if eos is not None else [])


def _plain_generation_config(model, tokenizer, **values) -> GenerationConfig:
    """A config with every default-on processor turned off, whatever the checkpoint's own config says."""
    eos = sorted(_eos_token_ids(model, tokenizer)) or None
    return GenerationConfig(
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        **values,
    )


class GenerationBatcher:
    """Decodes generation requests that arrive together as one batch, and lets new requests join it.

    A collector thread waits for requests. One that finds the server idle starts at once; one that
    finds others running or waiting is a sign of a burst, so the collector first gathers what arrives
    until no request has come for ``quiet_s``, at most ``window_s``. If a running batch has room and
    none of its rows has more than ``rebatch_max_tokens`` tokens yet, it is asked to stop after its
    current token, before the gathering: rows are left-padded to the batch's longest context, so a row
    that ran on alone meanwhile would lengthen every step of the burst. Its unfinished rows then
    continue (their tokens so far read as prompt, their random generators where they were) in one
    batch with the new requests, up to ``max_batch_size`` rows. So a burst of users who reach the
    server one by one is decoded as one batch, not as a queue of small ones, at the cost of reading
    the first rows' prompts again and a pause of the first rows while the burst arrives. Otherwise the
    new requests form their own batch once one of ``num_workers`` is free. Rows that end leave their
    batch at once (see ``generate``).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer,
        max_batch_size: int = MAX_BATCH_SIZE,
        window_s: float = BATCH_WINDOW_S,
        quiet_s: float = BATCH_QUIET_S,
        num_workers: int = GENERATION_WORKERS,
        rebatch_max_tokens: int = REBATCH_MAX_TOKENS,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.forms = WordForms.of(tokenizer, model.config.vocab_size)
        self.max_batch_size = max_batch_size
        self.window_s = window_s
        self.quiet_s = quiet_s
        self.num_workers = num_workers
        self.rebatch_max_tokens = rebatch_max_tokens
        self._state = threading.Condition()  # guards the two lists below
        self.waiting: list[_Row] = []  # rows not being decoded: new requests, and rows back from a rebatch
        self.running: list[_Batch] = []
        self.eos_token_ids = _eos_token_ids(model, tokenizer)
        # Each row's positions count its own tokens only, as generate() gives them: a left-padded row
        # then reads as it would alone, and a batch may span more columns than the window.
        self.takes_position_ids = "position_ids" in inspect.signature(model.forward).parameters
        # Shared tokens read once need positions given per row, and every layer attending to the whole
        # context (a sliding window would drop part of the shared tokens).
        self.shared_prefix_min_tokens = (
            SHARED_PREFIX_MIN_TOKENS
            if self.takes_position_ids
            and all(type(layer) in _RESERVED_LAYERS for layer in DynamicCache(config=model.config).layers)
            and shared_prefix.install(model)
            else 0
        )
        self._collector: threading.Thread | None = None
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # of the last batches run, for tests and benchmarks
        self.rebatches = 0  # batches stopped to take in new requests

    def submit(self, prompt_ids: list[int], settings: GenerationSettings) -> _Row:
        return self.submit_row(_Row(prompt_ids, settings))

    def submit_row(self, row: _Row) -> _Row:
        with self._state:
            if self._collector is None:
                self._collector = threading.Thread(
                    target=self._collect, name="generation-batcher", daemon=True
                )
                self._collector.start()
            self.waiting.append(row)
            self._state.notify_all()
        return row

    def _collect(self):
        while True:
            with self._state:
                self._state.wait_for(lambda: self.waiting)
                busy = bool(self.running) or len(self.waiting) > 1
            stopped = False
            if busy:  # a burst: let the rest of it arrive
                # A batch that will take the new rows in stops now, not after the gathering: every row of
                # a batch is padded to its longest context, and a row that ran on alone meanwhile would
                # lengthen every step of the whole burst by the tokens it made.
                stopped = self._stop_a_batch_to_join()
                self._gather()
            with self._state:
                self._drop_cancelled()
                if not stopped:
                    self._stop_a_batch_to_join()
                self._state.wait_for(
                    lambda: (
                        len(self.running) < self.num_workers
                        and not any(batch.rebatch.is_set() for batch in self.running)
                    )
                )
                self._drop_cancelled()
                if not self.waiting:
                    continue
                batch = _Batch(self._next_batch())
                self.running.append(batch)
            threading.Thread(target=self._run, args=(batch,), daemon=True).start()

    def _gather(self):
        """Waits while requests keep arriving: until none came for ``quiet_s``, at most ``window_s``."""
        deadline = time.perf_counter() + self.window_s
        with self._state:
            while (left := deadline - time.perf_counter()) > 0:
                count = len(self.waiting)
                if not self._state.wait_for(lambda n=count: len(self.waiting) != n, min(self.quiet_s, left)):
                    return

    def _stop_a_batch_to_join(self) -> bool:
        """Asks the youngest running batch with room for the waiting rows to stop after its current
        token; its rows then come back first, and decode on in one batch with the new ones. Whether
        one was asked."""
        with self._state:
            joinable = [batch for batch in self.running if self._can_join(batch)]
            if not self.waiting or not joinable:
                return False
            joinable[-1].rebatch.set()
            self.rebatches += 1
            return True

    def _can_join(self, batch: _Batch) -> bool:
        rows = [row for row in batch.rows if not row.finished]
        return (
            bool(rows)
            and len(rows) + len(self.waiting) <= self.max_batch_size
            and max(len(row.tokens) for row in rows) <= self.rebatch_max_tokens
        )

    def _next_batch(self) -> list[_Row]:
        """The waiting rows that go first, in order, as many as one batch takes; the rest wait."""
        batch, self.waiting = self.waiting[: self.max_batch_size], self.waiting[self.max_batch_size :]
        return batch

    def _drop_cancelled(self):
        for row in self.waiting:
            if row.cancelled.is_set():
                row.finish()
        self.waiting = [row for row in self.waiting if not row.finished]

    def _run(self, batch: _Batch):
        try:
            self.batch_sizes.append(len(batch.rows))
            self.generate(batch)
        except Exception as err:  # the requests must hear of any failure, or they would wait forever
            for row in batch.rows:
                row.fail(err)
        finally:
            with self._state:
                if batch.rebatch.is_set():
                    # Stopped for new requests: the unfinished rows go first in the next batch.
                    self.waiting = [row for row in batch.rows if not row.finished] + self.waiting
                else:
                    for row in batch.rows:
                        row.finish()
                self.running.remove(batch)
                self._state.notify_all()

    def generate(self, batch: _Batch):
        """Decodes the rows as one left-padded batch, a token per step for every row still going. A row
        that ends (eos, its limit, a cancel) leaves the batch at once, its keys, values and LSTM state
        with it, so a step costs only the rows still going: a burst of sampled requests ends at
        different lengths, and generate() would keep computing every row until the longest is done.
        A row continues after the tokens it already has; tokens reach each row as they come.

        Rows whose contexts begin alike (users who sent the same prompt, an example's) read that
        shared part once, as one row, and keep its keys and values once (``shared_prefix``): each row
        then holds only its own tokens after it, and its LSTM state starts from the shared part's.
        Otherwise rows with the same context share the first pass: it reads each distinct context
        once, then the keys, values and LSTM state are copied out to the rows. Either way the rows go
        on with their own settings and seeds."""
        pad_token_id = self.tokenizer.pad_token_id
        contexts = [row.prompt_ids + row.tokens for row in batch.rows]
        steps = max(row.settings.max_new_tokens - len(row.tokens) for row in batch.rows)
        # Every row's tokens, left-padded: what the sampler reads (the repetition penalty).
        input_ids, attention_mask = _left_padded(contexts, pad_token_id)
        sampler = _RowSampler(
            list(batch.rows), [input_ids.shape[1] - len(context) for context in contexts], self.forms
        )
        shared = self._shared_length(contexts)
        offset, attention_kwargs, fan_out = 0, {}, None
        if shared:
            # The model sees each row's own tokens (after the shared ones), at positions after them.
            step_ids, attention_mask = _left_padded([context[shared:] for context in contexts], pad_token_id)
            prefix, cache = self._read_shared(contexts[0][:shared], len(contexts), step_ids.shape[1] + steps)
            offset, attention_kwargs = shared, {"shared_prefix": prefix}
        else:
            distinct: dict[tuple[int, ...], int] = {}
            reader = [distinct.setdefault(tuple(context), len(distinct)) for context in contexts]
            if len(distinct) < len(reader):  # the first step reads each distinct context once
                input_ids, attention_mask = _left_padded(list(distinct), pad_token_id)
                fan_out = torch.tensor(reader)
            cache = _reserving_cache(self.model.config, input_ids.shape[1] + steps)
            step_ids = input_ids  # the first step reads the whole contexts
        with torch.no_grad():
            while True:
                positions = {}
                if self.takes_position_ids:
                    real = attention_mask.cumsum(-1) - 1
                    positions["position_ids"] = (real[:, -step_ids.shape[1] :] + offset).clamp(min=0)
                logits = self.model(
                    step_ids,
                    attention_mask=attention_mask,
                    past_key_values=cache,
                    use_cache=True,
                    logits_to_keep=1,
                    **positions,
                    **attention_kwargs,
                ).logits[:, -1]
                if fan_out is not None:  # after the first pass: a row each again
                    logits, input_ids, attention_mask = (
                        logits[fan_out],
                        input_ids[fan_out],
                        attention_mask[fan_out],
                    )
                    cache.reorder_cache(fan_out)
                    fan_out = None
                tokens = sampler(input_ids, logits.float())
                going = []
                for i, (row, token) in enumerate(zip(sampler.rows, tokens.tolist(), strict=True)):
                    if token in self.eos_token_ids or row.cancelled.is_set():
                        row.finish()
                        continue
                    row.add(token)
                    if len(row.tokens) >= row.settings.max_new_tokens:
                        row.finish()
                    else:
                        going.append(i)
                self.step_done()
                if not going or batch.rebatch.is_set():
                    return
                step_ids = tokens[:, None]
                input_ids = torch.cat([input_ids, step_ids], dim=1)
                attention_mask = torch.cat([attention_mask, torch.ones_like(step_ids)], dim=1)
                if len(going) < len(sampler.rows):
                    index = torch.tensor(going)
                    step_ids, input_ids, attention_mask = (
                        step_ids[index],
                        input_ids[index],
                        attention_mask[index],
                    )
                    # Keys and values of every layer, and the LSTM state; shared ones stay as they are.
                    cache.reorder_cache(index)
                    sampler.select(index)

    def step_done(self):
        """Called after each decoding step, once its tokens are in their rows: a subclass that passes
        the tokens on sends a step's tokens together (``decoder_process``)."""

    def _shared_length(self, contexts: list[list[int]]) -> int:
        """How many first tokens the rows' contexts share, to be read once: at most all but each
        row's last token (whose logits the rows need), and 0 for one row or too few tokens."""
        if len(contexts) < 2 or not self.shared_prefix_min_tokens:
            return 0
        # commonprefix compares any sequences item by item, token lists as well as paths.
        shared = min(len(os.path.commonprefix(contexts)), min(map(len, contexts)) - 1)
        return shared if shared >= self.shared_prefix_min_tokens else 0

    def _read_shared(self, prefix_ids: list[int], rows: int, positions: int):
        """Reads the shared tokens once. Returns their keys and values by layer, (1, nh, P, hd) each,
        and a cache for the rows' own tokens (``positions`` of them reserved) whose LSTM state is the
        one after the shared tokens, a copy per row."""
        prefix_cache = _reserving_cache(self.model.config, len(prefix_ids))
        with torch.no_grad():  # this thread's own grad mode is on
            self.model(
                torch.tensor([prefix_ids]), past_key_values=prefix_cache, use_cache=True, logits_to_keep=1
            )
        prefix = {index: (layer.keys, layer.values) for index, layer in enumerate(prefix_cache.layers)}
        cache = _reserving_cache(self.model.config, positions)
        for source, layer in zip(prefix_cache.layers, cache.layers, strict=True):
            if isinstance(source, LinearAttentionCacheLayerMixin):
                for state_index, initialized in source.is_recurrent_states_initialized.items():
                    if initialized:
                        state = source.recurrent_states[state_index]  # (1, ...), batch first
                        state = state.expand(rows, *state.shape[1:]).contiguous()
                        layer.update_recurrent_state(state, state_idx=state_index)
        return prefix, cache


def _left_padded(sequences, pad_token_id: int) -> tuple[torch.LongTensor, torch.LongTensor]:
    """The token lists as one left-padded batch, (B, longest), and its attention mask."""
    length = max(map(len, sequences))
    input_ids = torch.full((len(sequences), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for i, sequence in enumerate(sequences):
        input_ids[i, length - len(sequence) :] = torch.tensor(sequence, dtype=torch.long)
        attention_mask[i, length - len(sequence) :] = 1
    return input_ids, attention_mask


def _decode_complete(tokenizer, ids: list[int]) -> str:
    """The text of ``ids`` up to its last whole character: a multi-byte character shows once complete."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return text.rstrip(REPLACEMENT_CHAR)


def generate_stream(
    models: Models,
    prompt: str,
    strategy: str = GENERATION_DEFAULTS.strategy,
    max_new_tokens: int | None = None,
    temperature: float = GENERATION_DEFAULTS.temperature,
    top_k: int = GENERATION_DEFAULTS.top_k,
    top_p: float = GENERATION_DEFAULTS.top_p,
    repetition_penalty: float = GENERATION_DEFAULTS.repetition_penalty,
    no_repeat_ngram_size: int = GENERATION_DEFAULTS.no_repeat_ngram_size,
    num_beams: int = GENERATION_DEFAULTS.num_beams,
    seed: int = GENERATION_DEFAULTS.seed,
    min_interval_s: float = 0.0,
) -> Iterator[GenerationUpdate]:
    """Continues ``prompt``, yielding the generated text so far after every new token, or at most
    every ``min_interval_s`` (the first token and the end come at once; tokens in between are
    decoded only when shown: a page needs ~10 updates a second, not one per token).

    ``strategy`` is ``greedy``, ``sample`` (temperature, top_k, top_p; ``seed`` -1 draws a fresh seed,
    reported in each update) or ``beam`` (``num_beams`` beams; yields only the final text).
    ``repetition_penalty`` and ``no_repeat_ngram_size`` apply to all three. ``max_new_tokens`` defaults to DEFAULT_MAX_NEW_TOKENS (less in a smaller window). A
    prompt longer than the window less ``max_new_tokens`` loses its start. Closing the iterator (a
    stop button) ends the request's decoding.
    """
    start = time.perf_counter()
    prompt = clean_text(prompt, "prompt")
    if max_new_tokens is None:
        max_new_tokens = models.default_max_new_tokens
    settings = check_generation_settings(
        models,
        strategy=strategy,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        no_repeat_ngram_size=no_repeat_ngram_size,
        num_beams=num_beams,
        seed=seed,
    )
    used_seed = settings.seed if settings.strategy == "sample" else None
    tokenizer = models.lm_tokenizer
    ids = encode(tokenizer, prompt)
    keep = models.window - settings.max_new_tokens
    dropped = max(0, len(ids) - keep)
    ids = ids[dropped:]

    def update(tokens: list[int], done: bool) -> GenerationUpdate:
        text = (
            tokenizer.decode(tokens, skip_special_tokens=True)
            if done
            else _decode_complete(tokenizer, tokens)
        )
        seconds = time.perf_counter() - start
        return GenerationUpdate(text, len(tokens), seconds, done, len(ids), dropped, used_seed)

    if settings.strategy == "beam":
        yield update(_beam_search(models, ids, settings), done=True)
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


def _beam_search(models: Models, ids: list[int], settings: GenerationSettings) -> list[int]:
    model, tokenizer = models.lm, models.lm_tokenizer
    config = _plain_generation_config(
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
    eos = _eos_token_ids(model, tokenizer)
    return [token for token in tokens if token not in eos and token != tokenizer.pad_token_id]


def generate(models: Models, prompt: str, **settings) -> GenerationUpdate:
    """The last update of ``generate_stream``: the whole generated text."""
    final = None
    # Only the end is wanted: no text in between is decoded.
    for final in generate_stream(models, prompt, **settings, min_interval_s=math.inf):  # noqa: B007
        pass
    return final


# ---------------------------------------------------------------------------------------------------
# Classification with attributions
# ---------------------------------------------------------------------------------------------------


@dataclass
class ClassifyResult:
    probabilities: dict[str, float]
    label: str
    # (piece, gradient x input summed over the piece's tokens): positive pushes towards ``label``.
    attributions: list[tuple[str, float]]
    truncated_tokens: int  # cut from the text to fit the window
    truncated_side: str = "right"  # the end they were cut from: the tokenizer's truncation side

    def highlights(self) -> list[tuple[str, float]]:
        """Attributions scaled into [-1, 1] by the largest magnitude, for ``gr.HighlightedText``."""
        peak = max((abs(score) for _, score in self.attributions), default=0.0) or 1.0
        return [(piece, round(score / peak, 4)) for piece, score in self.attributions]


def _label_names(model: PreTrainedModel) -> list[str]:
    id2label = model.config.id2label or {}
    return [str(id2label.get(i, f"LABEL_{i}")) for i in range(model.config.num_labels)]


def classify(models: Models, text: str) -> ClassifyResult:
    """Label probabilities for ``text`` and each readable piece's signed attribution to the top label.

    The classifier reads one window of tokens: the first, or the last when its tokenizer truncates on
    the left (as the embedded one, trained on the ends of reviews, does); the rest is reported in
    ``truncated_tokens``.
    """
    if models.classifier is None:
        raise RuntimeError("No classifier is loaded; load one with load_models(..., classifier_path=...).")
    text = clean_text(text)
    model, tokenizer = models.classifier, models.classifier_tokenizer
    ids = encode(tokenizer, text)
    window = context_window(model, tokenizer)
    truncated = max(0, len(ids) - window)
    ids = truncate(ids, window, tokenizer)
    probabilities, target, token_scores = models.classify_batcher.run(ids)
    labels = _label_names(model)
    attributions = [
        (piece.text, float(token_scores[piece.start : piece.end].sum()))
        for piece in readable_pieces(tokenizer, ids)
    ]
    return ClassifyResult(
        dict(zip(labels, probabilities, strict=True)),
        labels[target],
        attributions,
        truncated,
        truncation_side(tokenizer),
    )


def classify_ids(model, tokenizer, rows: list[list[int]]) -> list[tuple[list[float], int, torch.Tensor]]:
    """Each row's label probabilities, top label and per-token gradient x input, in one right-padded
    batch. The gradient of the sum of the rows' top logits is each row's own gradient: rows do not
    interact (pads are masked from attention and skipped by the LSTM), so every result equals the row's
    alone."""
    width = max(len(ids) for ids in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in rows])  # (B, T)
    attention_mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in rows])
    with torch.enable_grad():
        embeddings = model.get_input_embeddings()(input_ids).detach().requires_grad_(True)  # (B, T, H)
        logits = model(
            inputs_embeds=embeddings, attention_mask=attention_mask, use_cache=False
        ).logits  # (B, C)
        targets = logits.argmax(-1)
        (gradient,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), embeddings)
    token_scores = (gradient * embeddings).sum(-1).detach()  # (B, T)
    probabilities = torch.softmax(logits.detach().float(), dim=-1)
    return [
        (probabilities[row].tolist(), int(targets[row]), token_scores[row, : len(ids)])
        for row, ids in enumerate(rows)
    ]


class _Pending:
    def __init__(self, ids: list[int]):
        self.ids = ids
        self.done = threading.Event()
        self.result = None
        self.error: BaseException | None = None


class ClassifyBatcher:
    """Classifies requests that arrive together as one batch (``classify_ids``).

    The first request to arrive leads: it waits while others keep coming (until none has come for
    ``quiet_s``, at most ``window_s``), classifies up to ``max_batch_size`` of them in one pass, hands
    each its result, and goes on until its own result is in; then a waiting request leads. Requests that
    find a leader wait for it. So 16 users who click at once share one forward and backward pass instead
    of queueing for 16, and under steady load no request waits on passes after its own.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer,
        max_batch_size: int = MAX_BATCH_SIZE,
        window_s: float = CLASSIFY_WINDOW_S,
        quiet_s: float = BATCH_QUIET_S,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.max_batch_size, self.window_s, self.quiet_s = max_batch_size, window_s, quiet_s
        self._cond = threading.Condition()  # guards the fields below; notified after each pass
        self._waiting: list[_Pending] = []
        self._leading = False
        self._arrived = 0.0  # when the last request came

    def run(self, ids: list[int]) -> tuple[list[float], int, torch.Tensor]:
        pending = _Pending(ids)
        with self._cond:
            self._waiting.append(pending)
            self._arrived = time.monotonic()
            while self._leading and not pending.done.is_set():
                self._cond.wait()
            lead = not pending.done.is_set()
            self._leading = self._leading or lead
        if lead:
            self._lead(pending)
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _lead(self, own: _Pending):
        """Passes over the waiting requests until ``own`` is done; then a waiting request leads, so
        that under steady load no request waits on others' passes after its own."""
        start = time.monotonic()
        while True:
            with self._cond:
                now = time.monotonic()
                gathering = (
                    len(self._waiting) < self.max_batch_size
                    and now - start < self.window_s
                    and now - self._arrived < self.quiet_s
                )
                if not gathering:
                    batch = self._waiting[: self.max_batch_size]
                    self._waiting = self._waiting[self.max_batch_size :]
            if gathering:
                time.sleep(self.quiet_s / 4)
                continue
            try:
                results = classify_ids(self.model, self.tokenizer, [item.ids for item in batch])
            except Exception as err:  # each request of the batch gets the error; the next batch runs
                for item in batch:
                    item.error = err
                    item.done.set()
            else:
                for item, result in zip(batch, results, strict=True):
                    item.result = result
                    item.done.set()
            with self._cond:
                # Those that came during the pass go at once, as the next batch.
                start, self._arrived = time.monotonic(), 0.0
                if own.done.is_set():
                    self._leading = False
                self._cond.notify_all()
                if not self._leading:
                    return


# ---------------------------------------------------------------------------------------------------
# Summarization
# ---------------------------------------------------------------------------------------------------

# A sentence runs to . ! ? (with any closing quotes or brackets) before whitespace, to a CJK full stop,
# to a blank line, or to the end of the text.
_CJK_STOPS = ("。", "！", "？")


@dataclass
class SummaryResult:
    document: str
    spans: list[tuple[int, int]]  # of each sentence in ``document``
    picked: list[int]  # indices of the extracted sentences, in document order
    scores: list[float]  # each sentence's salience
    method: str
    abstract: str | None  # generated by a summarization-tuned checkpoint, when one is loaded

    @property
    def sentences(self) -> list[str]:
        return [self.document[start:end] for start, end in self.spans]

    @property
    def extract(self) -> str:
        """The picked sentences, a space after each but those ending in a CJK full stop."""
        sentences = [self.sentences[i] for i in self.picked]
        return "".join(s + ("" if s.endswith(_CJK_STOPS) else " ") for s in sentences).rstrip()

    @property
    def summary(self) -> str:
        """The abstract when there is one, else the extracted sentences."""
        return self.abstract or self.extract

    def marked(self) -> list[tuple[str, str | None]]:
        """The document in (text, "summary" or None) segments, for ``gr.HighlightedText``."""
        segments, position, picked = [], 0, set(self.picked)
        for i, (start, end) in enumerate(self.spans):
            if start > position:
                segments.append((self.document[position:start], None))
            segments.append((self.document[start:end], "summary" if i in picked else None))
            position = end
        if position < len(self.document):
            segments.append((self.document[position:], None))
        return segments


def _windows(sentence_ids: list[list[int]], window: int) -> list[list[int]]:
    """Packs whole sentences (indices) into windows of at most ``window`` tokens, in order."""
    windows, current, used = [], [], 0
    for index, ids in enumerate(sentence_ids):
        size = min(len(ids), window)
        if current and used + size > window:
            windows.append(current)
            current, used = [], 0
        current.append(index)
        used += size
    if current:
        windows.append(current)
    return windows


def abstract_overlap(abstract: str, document: str, spans: list[tuple[int, int]]) -> list[float]:
    """Each sentence's ROUGE-1 F1 (stemmed) against the summarizer's abstract of the document: the
    sentences that say what the abstract says score high."""
    from rouge_score import rouge_scorer  # here: only this method needs it (and nltk under it)

    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)
    return [scorer.score(abstract, document[start:end])["rouge1"].fmeasure for start, end in spans]


def sentence_salience(
    models: Models, document: str, spans: list[tuple[int, int]], method: str, abstract: str | None = None
) -> list[float]:
    """Each sentence's salience (higher is picked first) by one of ``SUMMARY_METHODS``.

    ``summarizer``: overlap with the summarizer's ``abstract`` of the document (``abstract_overlap``;
    generated here when not given). ``lead``: the earlier, the higher. The language model
    reads the document in windows of whole sentences for the other two. ``centroid``: cosine of the
    sentence's mean final hidden state to the mean over the document. ``attention``: the mean attention
    each of its tokens receives (over layers, heads and the queries that can see it), the first token
    of each window left out since it collects attention regardless of its content (an attention sink).
    """
    if method == "summarizer":
        if models.summarizer is None:
            raise InputError(
                "The summarizer method needs a summarization-tuned model; start the app with --summarizer "
                "PATH, or pick another method."
            )
        return abstract_overlap(
            abstract if abstract is not None else _abstract(models, document), document, spans
        )
    if method == "lead":
        return [-float(i) for i in range(len(spans))]
    model, tokenizer, window = models.lm, models.lm_tokenizer, models.window
    # Each sentence with the whitespace before it, so that its tokens are those of the running text.
    starts = [0] + [end for _, end in spans[:-1]]
    sentence_ids = [
        encode(tokenizer, document[start:end])[:window] for start, (_, end) in zip(starts, spans, strict=True)
    ]
    vectors, received = [None] * len(spans), [0.0] * len(spans)
    for indices in _windows(sentence_ids, window):
        ids = [token for i in indices for token in sentence_ids[i]]
        with torch.no_grad():
            output = model(
                torch.tensor([ids]),
                output_hidden_states=method == "centroid",
                output_attentions=method == "attention",
                use_cache=False,
            )
        if method == "centroid":
            hidden = output.hidden_states[-1][0]  # (T, H)
        else:
            weights = torch.stack(output.attentions)[:, 0].float().mean(dim=(0, 1))  # (T, T)
            length = len(ids)
            per_token = weights.sum(0) / torch.arange(length, 0, -1)  # mean over queries i >= j
            per_token[0] = float("nan")
        position = 0
        for i in indices:
            size = len(sentence_ids[i])
            if method == "centroid":
                vectors[i] = (hidden[position : position + size].sum(0), size)
            else:
                values = per_token[position : position + size]
                values = values[~values.isnan()]
                received[i] = float(values.mean()) if len(values) else 0.0
            position += size
    if method == "attention":
        return received
    centroid = sum(total for total, _ in vectors) / sum(size for _, size in vectors)
    return [
        float(torch.nn.functional.cosine_similarity(total / size, centroid, dim=0)) for total, size in vectors
    ]


def summarize(
    models: Models,
    text: str,
    num_sentences: int = 3,
    method: str | None = None,
    abstractive: bool = True,
) -> SummaryResult:
    """Picks the ``num_sentences`` most salient sentences (by ``method``, see ``sentence_salience``).

    ``method`` defaults to ``DEFAULT_SUMMARY_METHOD``. With ``abstractive`` and a summarizer loaded, the
    result also holds a generated abstract.
    """
    text = clean_text(text)
    num_sentences = check_number("num_sentences", num_sentences)
    method = check_choice("method", method or DEFAULT_SUMMARY_METHOD, SUMMARY_METHODS)
    spans = split_sentences(text)
    wants_abstract = models.summarizer is not None and (abstractive or method == "summarizer")
    abstract = _abstract(models, text) if wants_abstract else None
    scores = sentence_salience(models, text, spans, method, abstract)
    ranked = sorted(range(len(spans)), key=lambda i: (-scores[i], i))  # ties: the earlier sentence
    picked = sorted(ranked[:num_sentences])
    return SummaryResult(text, spans, picked, scores, method, abstract if abstractive else None)


def _abstract(models: Models, document: str) -> str:
    """The summarizer's continuation of ``document <|sep|>`` up to eos (the format it was tuned on)."""
    model, tokenizer = models.summarizer, models.summarizer_tokenizer
    settings = (getattr(model.config, "task_specific_params", None) or {}).get("summarization", {})
    max_new_tokens = int(settings.get("max_new_tokens", SUMMARY_MAX_NEW_TOKENS))
    window = context_window(model, tokenizer)
    max_new_tokens = min(max_new_tokens, window // 2)
    if tokenizer.sep_token_id is None:
        raise InputError(
            "The summarizer's tokenizer has no sep token, so it cannot mark where a summary starts."
        )
    ids = summary_prompt(tokenizer, encode(tokenizer, document), window - max_new_tokens - 1)
    config = _plain_generation_config(
        model, tokenizer, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1
    )
    config.repetition_penalty = float(settings.get("repetition_penalty", 1.2))
    with torch.no_grad():
        output = model.generate(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            generation_config=config,
        )
    return tokenizer.decode(output[0, len(ids) :], skip_special_tokens=True).strip()


# ---------------------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------------------


@dataclass
class AttentionResult:
    pieces: list[str]
    weights: np.ndarray  # (L, nh, P, P): rows are queries, columns keys; each row sums to 1
    layer: int
    head: int | None  # None when the heads are averaged
    token_index: int  # the query piece whose attention is highlighted (non-negative)
    truncated_tokens: int  # cut from the end of the text to fit the window
    heatmap: go.Figure
    grid: go.Figure
    highlights: list[tuple[str, float]]

    @property
    def selected(self) -> np.ndarray:
        """The (P, P) matrix shown: one head, or the layer's mean over heads."""
        layer = self.weights[self.layer]
        return layer.mean(0) if self.head is None else layer[self.head]


def piece_attention(token_weights: np.ndarray, pieces: Sequence) -> np.ndarray:
    """(..., T, T) token attention to (..., P, P) piece attention.

    A piece's attention as a query is the mean of its tokens' rows (so a row still sums to 1); the
    attention it receives as a key is the sum over its tokens' columns.
    """
    num_tokens = token_weights.shape[-1]
    membership = np.zeros((len(pieces), num_tokens), dtype=np.float32)  # (P, T)
    for p, piece in enumerate(pieces):
        membership[p, piece.start : piece.end] = 1.0
    mean_rows = membership / membership.sum(-1, keepdims=True)
    return mean_rows @ token_weights @ membership.T


def attention(
    models: Models,
    text: str,
    layer: int = 0,
    head: int = 0,
    token_index: int = -1,
    average_heads: bool = False,
) -> AttentionResult:
    """The language model's attention over ``text`` at the level of readable pieces.

    Returns every layer's and head's weights, a heatmap of ``layer``/``head`` (or the mean of the layer's
    heads with ``average_heads``), a grid of all layers x heads, and the attention from the piece at
    ``token_index`` (negative counts from the end) over the text. Text past the window is cut.
    """
    text = clean_text(text)
    model, tokenizer = models.lm, models.lm_tokenizer
    layer = check_number("layer", layer, 0, models.num_layers - 1)
    head = check_number("head", head, 0, models.num_heads - 1)
    if not isinstance(average_heads, bool):
        raise InputError(f"average_heads must be true or false, got {average_heads!r}.")
    ids = encode(tokenizer, text)
    truncated = max(0, len(ids) - models.window)
    ids = ids[: models.window]
    pieces = readable_pieces(tokenizer, ids)
    token_index = check_number("token_index", token_index, -len(pieces), len(pieces) - 1) % len(pieces)
    with torch.no_grad():
        output = model(torch.tensor([ids]), output_attentions=True, use_cache=False)
    token_weights = torch.stack(output.attentions)[:, 0].float().numpy()  # (L, nh, T, T)
    weights = piece_attention(token_weights, pieces)
    texts = [piece.text for piece in pieces]
    chosen_head = None if average_heads else head
    selected = weights[layer].mean(0) if average_heads else weights[layer, head]
    title = f"layer {layer}, " + ("mean of all heads" if average_heads else f"head {head}")
    return AttentionResult(
        pieces=texts,
        weights=weights,
        layer=layer,
        head=chosen_head,
        token_index=token_index,
        truncated_tokens=truncated,
        heatmap=attention_view.heatmap_figure(texts, selected, title),
        grid=attention_view.grid_figure(texts, weights),
        highlights=attention_view.highlights(texts, selected[token_index]),
    )


# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None):
    parser = argparse.ArgumentParser(description="Run one demo task from the command line.")
    parser.add_argument("task", choices=["generate", "classify", "summarize", "attention"])
    parser.add_argument("text")
    parser.add_argument(
        "--model", default=os.environ.get("LLM_MEMORY_MODEL", str(CHECKPOINTS_DIR / "memory-lm"))
    )
    parser.add_argument(
        "--classifier", default=os.environ.get("LLM_MEMORY_CLASSIFIER", str(CHECKPOINTS_DIR / "sentiment"))
    )
    parser.add_argument("--summarizer", default=os.environ.get("LLM_MEMORY_SUMMARIZER"))
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
        models = load_models(args.model, args.classifier, args.summarizer)
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


if __name__ == "__main__":
    main()
