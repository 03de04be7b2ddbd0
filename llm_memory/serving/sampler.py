"""The next token of every row of a batch, each drawn with its own row's settings and random generator.

Repetition penalty (Keskar et al., 2019), temperature, top-k and top-p in the order of Transformers'
logits processors, and the no-repeat n-gram rule compared by word form, all as batched tensor
operations; a seeded row draws the same tokens alone or batched.
"""

import math
from dataclasses import dataclass

import torch

from llm_memory.serving.rows import Row


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
    row: that processor walks every row's tokens on every step, a large share of a batched step. Rows
    are left-padded; n-grams that start in a row's
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


class RowSampler:
    """Picks each row's next token with that row's settings and random generator.

    Every row of a batch has its own temperature, top-k, top-p, penalty and seed, and every step is
    row-wise, so a row's choice does not depend on the other rows. ``select`` keeps only some rows, for
    a batch whose other rows have ended.
    """

    def __init__(self, rows: list[Row], pad_lengths: list[int], forms: WordForms | None = None):
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
