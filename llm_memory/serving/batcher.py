"""Generation requests that arrive together, decoded as one left-padded batch in this process.

``Batcher`` is what the tasks need of a decoder: ``submit`` a prompt with its settings and get a
``Row`` that fills with tokens. ``GenerationBatcher`` implements it here, by a loop over the model's
forward pass and its cache (a row that ends leaves the batch at once), as text-generation servers do;
``decoder_process.DecoderProcess`` implements it in a child process. Rows that begin with the same
prompt keep its keys and values once (``shared_prefix``).
"""

import inspect
import os
import threading
import time
from collections import deque
from typing import Protocol

import torch
from transformers import DynamicCache, PreTrainedModel
from transformers.cache_utils import LinearAttentionCacheLayerMixin

from llm_memory.generation_settings import GenerationSettings
from llm_memory.serving import shared_prefix
from llm_memory.serving.kv_cache import RESERVED_LAYERS, reserving_cache
from llm_memory.serving.loading import eos_token_ids
from llm_memory.serving.rows import Batch, Row
from llm_memory.serving.sampler import RowSampler, WordForms
from llm_memory.serving.settings import SERVE_DEFAULTS, ServeSettings


class Batcher(Protocol):
    """Decodes generation requests: what ``generate_stream`` needs, in this process or another."""

    def submit(self, prompt_ids: list[int], settings: GenerationSettings) -> Row:
        """Queues a request; the row fills with its tokens and ends (``row.done``) when it is complete."""
        ...

    def close(self) -> None:
        """Stops decoding; requests still running may fail."""
        ...


def batcher_options(settings: ServeSettings) -> dict:
    """``GenerationBatcher``'s keyword arguments from the serving settings."""
    return {
        "max_batch_size": settings.max_batch_size,
        "window_s": settings.batch_window_s,
        "quiet_s": settings.batch_quiet_s,
        "num_workers": settings.generation_workers,
        "rebatch_max_tokens": settings.rebatch_max_tokens,
        "shared_prefix_min_tokens": settings.shared_prefix_min_tokens,
    }


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
        max_batch_size: int = SERVE_DEFAULTS.max_batch_size,
        window_s: float = SERVE_DEFAULTS.batch_window_s,
        quiet_s: float = SERVE_DEFAULTS.batch_quiet_s,
        num_workers: int = SERVE_DEFAULTS.generation_workers,
        rebatch_max_tokens: int = SERVE_DEFAULTS.rebatch_max_tokens,
        shared_prefix_min_tokens: int = SERVE_DEFAULTS.shared_prefix_min_tokens,
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
        self.waiting: list[Row] = []  # rows not being decoded: new requests, and rows back from a rebatch
        self.running: list[Batch] = []
        self.eos_token_ids = eos_token_ids(model, tokenizer)
        # Each row's positions count its own tokens only, as generate() gives them: a left-padded row
        # then reads as it would alone, and a batch may span more columns than the window.
        self.takes_position_ids = "position_ids" in inspect.signature(model.forward).parameters
        # Shared tokens read once need positions given per row, and every layer attending to the whole
        # context (a sliding window would drop part of the shared tokens).
        self.shared_prefix_min_tokens = (
            shared_prefix_min_tokens
            if self.takes_position_ids
            and all(type(layer) in RESERVED_LAYERS for layer in DynamicCache(config=model.config).layers)
            and shared_prefix.install(model)
            else 0
        )
        self._collector: threading.Thread | None = None
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # of the last batches run, for tests and benchmarks
        self.rebatches = 0  # batches stopped to take in new requests

    def submit(self, prompt_ids: list[int], settings: GenerationSettings) -> Row:
        return self.submit_row(Row(prompt_ids, settings))

    def close(self) -> None:
        """Nothing to stop: the collector and the decoding threads are daemons, and end with the process."""

    def submit_row(self, row: Row) -> Row:
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
                batch = Batch(self._next_batch())
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

    def _can_join(self, batch: Batch) -> bool:
        rows = [row for row in batch.rows if not row.finished]
        return (
            bool(rows)
            and len(rows) + len(self.waiting) <= self.max_batch_size
            and max(len(row.tokens) for row in rows) <= self.rebatch_max_tokens
        )

    def _next_batch(self) -> list[Row]:
        """The waiting rows that go first, in order, as many as one batch takes; the rest wait."""
        batch, self.waiting = self.waiting[: self.max_batch_size], self.waiting[self.max_batch_size :]
        return batch

    def _drop_cancelled(self):
        for row in self.waiting:
            if row.cancelled.is_set():
                row.finish()
        self.waiting = [row for row in self.waiting if not row.finished]

    def _run(self, batch: Batch):
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

    def generate(self, batch: Batch):
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
        input_ids, attention_mask = left_padded(contexts, pad_token_id)
        sampler = RowSampler(
            list(batch.rows), [input_ids.shape[1] - len(context) for context in contexts], self.forms
        )
        shared = self._shared_length(contexts)
        offset, attention_kwargs, fan_out = 0, {}, None
        if shared:
            # The model sees each row's own tokens (after the shared ones), at positions after them.
            step_ids, attention_mask = left_padded([context[shared:] for context in contexts], pad_token_id)
            prefix, cache = self._read_shared(contexts[0][:shared], len(contexts), step_ids.shape[1] + steps)
            offset, attention_kwargs = shared, {"shared_prefix": prefix}
        else:
            distinct: dict[tuple[int, ...], int] = {}
            reader = [distinct.setdefault(tuple(context), len(distinct)) for context in contexts]
            if len(distinct) < len(reader):  # the first step reads each distinct context once
                input_ids, attention_mask = left_padded(list(distinct), pad_token_id)
                fan_out = torch.tensor(reader)
            cache = reserving_cache(self.model.config, input_ids.shape[1] + steps)
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
        prefix_cache = reserving_cache(self.model.config, len(prefix_ids))
        with torch.no_grad():  # this thread's own grad mode is on
            self.model(
                torch.tensor([prefix_ids]), past_key_values=prefix_cache, use_cache=True, logits_to_keep=1
            )
        prefix = {index: (layer.keys, layer.values) for index, layer in enumerate(prefix_cache.layers)}
        cache = reserving_cache(self.model.config, positions)
        for source, layer in zip(prefix_cache.layers, cache.layers, strict=True):
            if isinstance(source, LinearAttentionCacheLayerMixin):
                for state_index, initialized in source.is_recurrent_states_initialized.items():
                    if initialized:
                        state = source.recurrent_states[state_index]  # (1, ...), batch first
                        state = state.expand(rows, *state.shape[1:]).contiguous()
                        layer.update_recurrent_state(state, state_idx=state_index)
        return prefix, cache


def left_padded(sequences, pad_token_id: int) -> tuple[torch.LongTensor, torch.LongTensor]:
    """The token lists as one left-padded batch, (B, longest), and its attention mask."""
    length = max(map(len, sequences))
    input_ids = torch.full((len(sequences), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for i, sequence in enumerate(sequences):
        input_ids[i, length - len(sequence) :] = torch.tensor(sequence, dtype=torch.long)
        attention_mask[i, length - len(sequence) :] = 1
    return input_ids, attention_mask
