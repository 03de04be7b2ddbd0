"""One generation request inside the batcher (``Row``) and the rows decoded together (``Batch``).

A row is the meeting point of a request and the decoding: the decoding thread appends tokens and ends
it; the request reads them. The decoding process's proxy fills rows like these from the child's
messages, so a caller cannot tell where its row is decoded.
"""

import secrets
import threading
from dataclasses import dataclass, field

import torch

from llm_memory.generation_settings import GenerationSettings


class Row:
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


@dataclass(eq=False)
class Batch:
    """Rows being decoded together. ``rebatch`` asks the batch to stop after its current token so that
    its unfinished rows can continue in one batch with requests that arrived since."""

    rows: list[Row]
    rebatch: threading.Event = field(default_factory=threading.Event)
