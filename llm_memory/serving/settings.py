"""The serving settings: every knob of the demo and its batchers in one object, with its environment variable.

``ServeSettings()`` holds the defaults; ``ServeSettings.from_env()`` reads the ``LLM_MEMORY_*``
variables over them when an app or a command is built (never at import), so a Space or a container
sets them without flags. A variable that is set but malformed is an error that names it. Why each
default is what it is, with the measurements behind it, is in docs/serving.md.
"""

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path


def _default_generation_workers() -> int:
    """At least two, so that a new request can start while a long one runs; at most four."""
    return max(2, min(4, os.cpu_count() or 2))


@dataclass(frozen=True)
class ServeSettings:
    """The demo's models and server, and how requests are batched. Times are in seconds."""

    # Local folders or Hub ids; None leaves the choice to the entry point (the embedded checkpoints).
    model: str | None = None
    classifier: str | None = None
    summarizer: str | None = None
    # Fine-tuned on the memory probes: shown beside the language model in the Memory tab when present.
    memory_model: str | None = None
    # None leaves the choice to Gradio: GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, else 127.0.0.1:7860.
    host: str | None = None
    port: int | None = None
    # Jobs the queue runs at once: generation requests are batched, so 16 at once share decoding steps.
    concurrency: int = 16
    # Jobs that may wait beyond those running; one more is refused as "queue full".
    queue_size: int = 64
    # Between two streamed updates of a generated text.
    stream_interval_s: float = 0.1
    # Torch threads per operation: requests already run side by side, each on its own thread.
    torch_threads: int = 1
    # Decode sampled and greedy requests in a child process (POSIX only; docs/serving.md says why).
    decoder_process: bool = os.name == "posix"
    # Longer text is refused rather than cut: 20,000 characters is ~25 pages, past every model's window.
    max_input_chars: int = 20_000
    # Requests arriving within this window of the first are decoded in the same batch...
    batch_window_s: float = 0.1
    # ... which closes early once no request has come for this long.
    batch_quiet_s: float = 0.008
    # Rows per batch.
    max_batch_size: int = 16
    # Batches decoded at once, each on its own thread.
    generation_workers: int = field(default_factory=_default_generation_workers)
    # A running batch takes in new requests while it has made at most this many tokens.
    rebatch_max_tokens: int = 64
    # Rows whose contexts begin with at least this many of the same tokens keep them once; 0 turns it off.
    shared_prefix_min_tokens: int = 48
    # A decoding process with requests in hand that sends nothing for this long is replaced.
    stall_timeout_s: float = 30.0
    # Serve linear layers on oneDNN's packed fp32 kernels where they work (serving/packed_linear.py).
    packed_linear: bool = True

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, checkpoints_dir: str | os.PathLike | None = None
    ) -> "ServeSettings":
        """The settings with every ``LLM_MEMORY_*`` variable of ``environ`` (default: the process's)
        applied; an empty variable counts as unset. With ``checkpoints_dir``, the models default to
        the embedded ones there: ``memory-lm``, ``sentiment``, ``summarizer`` (when it exists) and
        ``memory``."""
        environ = os.environ if environ is None else environ
        values = {}
        if checkpoints_dir is not None:
            folder = Path(checkpoints_dir)
            values = {
                "model": str(folder / "memory-lm"),
                "classifier": str(folder / "sentiment"),
                "summarizer": str(folder / "summarizer") if (folder / "summarizer").is_dir() else None,
                "memory_model": str(folder / "memory"),
            }
        for name, (variable, parse) in ENVIRONMENT.items():
            text = environ.get(variable, "")
            if not text:
                continue
            try:
                values[name] = parse(text)
            except ValueError:
                raise ValueError(
                    f"The environment variable {variable}={text!r} is not valid; unset it or give "
                    f"{PARSER_NAMES[parse]}."
                ) from None
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _milliseconds(text: str) -> float:
    return float(text) / 1000


def _switch(text: str) -> bool:
    """Everything but "0" turns a switch on."""
    return text != "0"


PARSER_NAMES: dict[Callable, str] = {
    str: "a text",
    int: "an integer",
    float: "a number",
    _milliseconds: "a number of milliseconds",
    _switch: "0 or 1",
}
# Each field's variable, and how its text is read.
ENVIRONMENT: dict[str, tuple[str, Callable[[str], object]]] = {
    "model": ("LLM_MEMORY_MODEL", str),
    "classifier": ("LLM_MEMORY_CLASSIFIER", str),
    "summarizer": ("LLM_MEMORY_SUMMARIZER", str),
    "memory_model": ("LLM_MEMORY_MEMORY_MODEL", str),
    "host": ("LLM_MEMORY_HOST", str),
    "port": ("LLM_MEMORY_PORT", int),
    "concurrency": ("LLM_MEMORY_CONCURRENCY", int),
    "queue_size": ("LLM_MEMORY_QUEUE_SIZE", int),
    "stream_interval_s": ("LLM_MEMORY_STREAM_INTERVAL_MS", _milliseconds),
    "torch_threads": ("LLM_MEMORY_TORCH_THREADS", int),
    "decoder_process": ("LLM_MEMORY_DECODER_PROCESS", _switch),
    "max_input_chars": ("LLM_MEMORY_MAX_CHARS", int),
    "batch_window_s": ("LLM_MEMORY_BATCH_WINDOW_MS", _milliseconds),
    "batch_quiet_s": ("LLM_MEMORY_BATCH_QUIET_MS", _milliseconds),
    "max_batch_size": ("LLM_MEMORY_MAX_BATCH", int),
    "generation_workers": ("LLM_MEMORY_GENERATION_WORKERS", int),
    "rebatch_max_tokens": ("LLM_MEMORY_REBATCH_MAX_TOKENS", int),
    "shared_prefix_min_tokens": ("LLM_MEMORY_SHARED_PREFIX_MIN_TOKENS", int),
    "stall_timeout_s": ("LLM_MEMORY_STALL_TIMEOUT_S", float),
    "packed_linear": ("LLM_MEMORY_PACKED_LINEAR", _switch),
}
# The defaults, for signatures that take one setting (the batchers' keyword arguments).
SERVE_DEFAULTS = ServeSettings()
