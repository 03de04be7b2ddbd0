"""Generation decoded in a child process, with its own interpreter lock.

In one process, a Gradio server's event loop and request threads run Python between the decoding
step's kernels and hold the interpreter lock while they do, so every request they serve slows the
decoding of all (bench/app_speed.py times 16 requests at once on an app that decodes in its own
process, and on one that decodes in a child). So the app decodes in a child process that loads the
same model folder and runs a ``GenerationBatcher``; requests, cancels and tokens cross a pipe, the
tokens of a decoding step in one message. The parent keeps its models for everything else
(classification, attention, beam search) and reads the tokens into rows like the batcher's own:
``DecoderProcess`` implements the ``Batcher`` protocol, so ``generate_stream`` works the same on either.

The child is ``python -m llm_memory.serving.decoder_process`` run by the same interpreter, so it imports
the package the way the server did (installed, or from the working directory); it imports neither
Gradio nor Plotly.
"""

import contextlib
import itertools
import json
import multiprocessing
import os
import subprocess
import sys
import sysconfig
import threading
import time
import weakref
from multiprocessing.connection import Connection

import torch
from transformers import AutoModelForCausalLM

from llm_memory.generation_settings import GenerationSettings
from llm_memory.serving.batcher import GenerationBatcher, batcher_options
from llm_memory.serving.loading import ModelLoadError, load_model
from llm_memory.serving.rows import Row
from llm_memory.serving.settings import SERVE_DEFAULTS, ServeSettings

# What a row reports to the parent: a token, its end, or its failure (with the message).
TOKEN, END, FAILED = 0, 1, 2
START_TIMEOUT_S = 300.0


class Outbox:
    """The child's row events, sent by one thread: all that gathered since its last send, in one message.

    A decoding step's tokens are put without waking the sender and go together once the step is done
    (``flush``): woken for each of 16 rows, the sender took the interpreter lock from the decoding
    thread up to 16 times a step, one small message each.
    """

    def __init__(self, connection):
        self._events: list[tuple] = []
        self._pending = threading.Condition()
        threading.Thread(target=self._send_forever, args=(connection,), daemon=True).start()

    def put(self, event: tuple, send: bool = True):
        """Adds an event; ``send=False`` leaves it for the next ``flush`` (or the next event sent)."""
        with self._pending:
            self._events.append(event)
            if send:
                self._pending.notify()

    def flush(self):
        """Sends the events put so far."""
        with self._pending:
            if self._events:
                self._pending.notify()

    def _send_forever(self, connection):
        while True:
            with self._pending:
                self._pending.wait_for(lambda: self._events)
                events, self._events = self._events, []
            connection.send(("rows", events))


class ReportingRow(Row):
    """A row in the child: what the batcher puts in it also goes to the parent."""

    def __init__(self, row_id: int, outbox: Outbox, prompt_ids: list[int], settings: GenerationSettings):
        super().__init__(prompt_ids, settings)
        self.row_id = row_id
        self.outbox = outbox

    def add(self, token: int):
        super().add(token)
        self.outbox.put((self.row_id, TOKEN, token), send=False)  # sent when the step is done

    def finish(self):
        if not self.finished:
            super().finish()
            failed = self.error is not None
            self.outbox.put((self.row_id, FAILED if failed else END, str(self.error) if failed else None))


class ReportingBatcher(GenerationBatcher):
    """The child's batcher: a decoding step's tokens go to the parent together, once the step is done."""

    def __init__(self, model, tokenizer, outbox: Outbox, settings: ServeSettings = SERVE_DEFAULTS):
        super().__init__(model, tokenizer, **batcher_options(settings))
        self.outbox = outbox

    def step_done(self):
        self.outbox.flush()


def serve(connection, model_path: str, torch_threads: int, settings: ServeSettings):
    """The child: loads the model, then decodes what the parent submits until the parent is gone."""
    torch.set_num_threads(torch_threads)
    try:
        model, tokenizer = load_model(model_path, AutoModelForCausalLM, "model", pack=settings.packed_linear)
    except Exception as err:  # the parent must hear why, or it would wait for tokens that never come
        connection.send(("failed", f"{type(err).__name__}: {err}"))
        return
    outbox = Outbox(connection)  # sends nothing until a row has news
    batcher = ReportingBatcher(model, tokenizer, outbox, settings)
    connection.send(("ready",))
    rows = weakref.WeakValueDictionary()  # the rows still decoding or waiting, for cancels
    while True:
        try:
            message = connection.recv()
        except EOFError:  # the parent exited
            return
        if message[0] == "submit":
            _, row_id, prompt_ids, settings = message
            rows[row_id] = batcher.submit_row(ReportingRow(row_id, outbox, prompt_ids, settings))
        elif message[0] == "cancel" and (row := rows.get(message[1])) is not None:
            row.cancel()


# A fixed mmap threshold: the cache tensors of ended batches go back to the system instead of staying on
# glibc's heap, which otherwise grows under load (docs/serving.md, "The decoding process's allocator").
CHILD_ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}


def child_environment() -> dict[str, str]:
    """The child's environment: the allocator setting and, unless this ``llm_memory`` is installed in
    site-packages, the folder it was imported from first on the path, so that the child runs the same
    package as the parent even when it is not installed (``python path/to/app.py`` started from another
    folder)."""
    environment = {**os.environ, **CHILD_ALLOCATOR_ENV}
    import_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    installed = {os.path.abspath(sysconfig.get_paths()[key]) for key in ("purelib", "platlib")}
    if import_root not in installed:  # site-packages ahead of the standard library could shadow it
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [import_root, os.environ.get("PYTHONPATH")]))
    return environment


class _Child:
    """One child process, its pipe, and the parent's rows that it decodes."""

    def __init__(self, model_path: str, torch_threads: int, stall_timeout_s: float, settings: ServeSettings):
        # A fresh interpreter that runs this module, with none of this one's threads or held locks
        # (multiprocessing's spawn would also run the parent's main script again).
        self.connection, child_connection = multiprocessing.Pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llm_memory.serving.decoder_process", str(child_connection.fileno())]
            + [model_path, str(torch_threads), json.dumps(settings.to_dict())],
            pass_fds=[child_connection.fileno()],
            env=child_environment(),
        )
        child_connection.close()
        self.lock = threading.Lock()  # guards the pipe's sending end, ``rows`` and ``gone``
        self.rows: dict[int, _RemoteRow] = {}
        self.gone = False
        self.ready = threading.Event()  # loaded, failed to load, or gone
        self.failure: str | None = None
        self.stall_timeout_s = stall_timeout_s
        self.last_heard = time.monotonic()  # of the child's last message, or of a first row after quiet
        threading.Thread(target=self._read, name="decoder-reader", daemon=True).start()
        threading.Thread(target=self._watch, name="decoder-watchdog", daemon=True).start()

    def send(self, message: tuple) -> bool:
        """Sends unless the child is gone; whether it was sent."""
        with self.lock:
            if self.gone:
                return False
            with contextlib.suppress(OSError):  # exited: the reader is about to fail its rows
                self.connection.send(message)
            return True

    def submit(self, row: "_RemoteRow"):
        with self.lock:
            if not self.rows:  # an idle child owes nothing: the wait starts now
                self.last_heard = time.monotonic()
            self.rows[row.row_id] = row
        if not self.send(("submit", row.row_id, row.prompt_ids, row.settings)):
            row.fail(RuntimeError("The decoding process stopped; send the request again."))

    def _read(self):
        """Puts the child's tokens in their rows; once the child is gone, fails the rows left."""
        try:
            while True:
                message = self.connection.recv()
                self.last_heard = time.monotonic()
                if message[0] == "ready":
                    self.ready.set()
                elif message[0] == "failed":
                    self.failure = message[1]
                    self.ready.set()
                else:
                    self._deliver(message[1])
        except (EOFError, OSError):
            pass
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        with self.lock:
            self.gone = True
            rows, self.rows = self.rows, {}
        self.ready.set()
        reason = self.failure or f"it exited with code {self.process.returncode}"
        error = RuntimeError(f"The decoding process stopped ({reason}); send the request again.")
        for row in rows.values():
            row.fail(error)

    def _watch(self):
        """Kills a child that holds requests but has sent nothing for ``stall_timeout_s``; the reader
        then fails its requests with that reason."""
        while not self.gone:
            time.sleep(min(1.0, self.stall_timeout_s / 4))
            with self.lock:
                waiting = bool(self.rows) and self.ready.is_set() and not self.gone
                silent = time.monotonic() - self.last_heard
            if waiting and silent > self.stall_timeout_s:
                self.failure = (
                    f"it sent nothing for {silent:.0f} s with requests in hand, so it was restarted"
                )
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                return

    def _deliver(self, events: list[tuple]):
        for row_id, kind, value in events:
            if kind == TOKEN:
                if (row := self.rows.get(row_id)) is not None:
                    row.add(value)
                continue
            with self.lock:
                row = self.rows.pop(row_id, None)
            if row is None:
                continue
            if kind == END:
                row.finish()
            else:
                row.fail(RuntimeError(value))

    def close(self):
        with self.lock:
            self.connection.close()  # the child reads the end of its pipe and exits
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class _RemoteRow(Row):
    """A row in the parent, filled from the child's messages; a cancel goes to the child."""

    def __init__(self, child: _Child, row_id: int, prompt_ids: list[int], settings: GenerationSettings):
        super().__init__(prompt_ids, settings)
        self.child = child
        self.row_id = row_id

    def cancel(self):
        if not self.cancelled.is_set() and not self.finished:
            self.child.send(("cancel", self.row_id))
        super().cancel()


class DecoderProcess:
    """The ``Batcher`` of a child process: ``submit`` returns a row that fills with the tokens the child
    decodes. A child that exits (killed, out of memory) fails its requests with an error that says so,
    and the next request starts a new one. A child with requests in hand that sends nothing for
    ``stall_timeout_s`` is frozen (stopped, deadlocked): it is killed, its requests fail with a message
    that says so, and the next request starts another; it sends after every decoding step, which
    takes well under a second."""

    def __init__(
        self,
        model_path,
        torch_threads: int = 1,
        stall_timeout_s: float = SERVE_DEFAULTS.stall_timeout_s,
        settings: ServeSettings = SERVE_DEFAULTS,
    ):
        if os.name != "posix":
            raise OSError(
                "The decoding process hands the child its pipe as POSIX systems do; decode in-process here."
            )
        self.model_path = str(model_path)
        self.torch_threads = torch_threads
        self.stall_timeout_s = stall_timeout_s
        self.settings = settings
        self._lock = threading.Lock()  # guards ``_child``
        self._row_ids = itertools.count()
        self._child = self._start()

    def _start(self) -> _Child:
        return _Child(self.model_path, self.torch_threads, self.stall_timeout_s, self.settings)

    @property
    def pid(self) -> int:
        return self._child.process.pid

    def wait_ready(self, timeout: float = START_TIMEOUT_S):
        """Blocks until the child has loaded the model; ModelLoadError if it could not."""
        child = self._child
        if not child.ready.wait(timeout):
            raise ModelLoadError(
                f"The decoding process did not load the model {self.model_path!r} in {timeout:.0f} s.",
                "model",
            )
        if child.failure is not None or child.gone:
            # A child that never reported could not start: most often, it could not import this package.
            reason = child.failure or (
                f"it exited with code {child.process.returncode} before loading; it runs `python -m "
                f"llm_memory.serving.decoder_process` in {os.getcwd()!r}, where llm_memory must be importable "
                "(install the package, or start the app from the folder that holds it)"
            )
            raise ModelLoadError(
                f"The decoding process could not load the model {self.model_path!r}: {reason}", "model"
            )

    def submit(self, prompt_ids: list[int], settings: GenerationSettings) -> Row:
        with self._lock:
            if self._child.gone:  # the last one exited, and its requests have failed
                self._child = self._start()
            child = self._child
        row = _RemoteRow(child, next(self._row_ids), prompt_ids, settings)
        child.submit(row)
        return row

    def close(self):
        """Ends the child (the app's lasts as long as the app; tests start and end their own)."""
        self._child.close()


if (
    __name__ == "__main__"
):  # the child: python -m llm_memory.serving.decoder_process FD MODEL THREADS SETTINGS
    serve(
        Connection(int(sys.argv[1])), sys.argv[2], int(sys.argv[3]), ServeSettings(**json.loads(sys.argv[4]))
    )
