"""Classification requests that arrive together, classified in one batch with their attributions.

Attributions are gradient x input on the input embeddings (Shrikumar et al., 2016); the gradient of the
sum of the rows' top logits is each row's own gradient, since rows do not interact, so each result
equals the request alone.
"""

import threading
import time

import torch
from transformers import PreTrainedModel

from llm_memory.serving.settings import SERVE_DEFAULTS

# A classify request that finds none waiting waits this long at most for others to share its pass.
CLASSIFY_WINDOW_S = 0.03


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


class Pending:
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
        max_batch_size: int = SERVE_DEFAULTS.max_batch_size,
        window_s: float = CLASSIFY_WINDOW_S,
        quiet_s: float = SERVE_DEFAULTS.batch_quiet_s,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.max_batch_size, self.window_s, self.quiet_s = max_batch_size, window_s, quiet_s
        self._cond = threading.Condition()  # guards the fields below; notified after each pass
        self._waiting: list[Pending] = []
        self._leading = False
        self._arrived = 0.0  # when the last request came

    def run(self, ids: list[int]) -> tuple[list[float], int, torch.Tensor]:
        pending = Pending(ids)
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

    def _lead(self, own: Pending):
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
