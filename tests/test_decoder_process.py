"""Generation decoded in a child process (decoder_process.py) against the in-process batcher: the same
texts alone and at once, streams and cancels; a child that dies fails its requests with a clear error
and the next request is served; a model the child cannot load stops startup with a clear error."""

import os
import queue
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path

import pytest

import llm_memory
from llm_memory.generation_settings import GenerationSettings
from llm_memory.serving import decoder_process
from llm_memory.serving.decoder_process import (
    END,
    TOKEN,
    DecoderProcess,
    Outbox,
    ReportingBatcher,
    ReportingRow,
)
from llm_memory.serving.loading import ModelLoadError
from llm_memory.serving.models import load_models
from llm_memory.tasks.generate import check_generation_settings, generate, generate_stream
from llm_memory.training.tokenization import encode

# Each test starts or talks to decoding processes: slow.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

CASES = [
    ("The movie was", dict(strategy="sample", seed=0, temperature=1.3, top_k=0, max_new_tokens=30)),
    ("我喜欢编程", dict(strategy="sample", seed=1, top_k=20, top_p=0.9, max_new_tokens=25)),
    ("😀", dict(strategy="sample", seed=2, repetition_penalty=1.5, max_new_tokens=20)),
    ("A much longer prompt than the others, to pad the rest", dict(strategy="greedy", max_new_tokens=15)),
]


@pytest.fixture(scope="module")
def checkpoints(tiny_checkpoints):
    return tiny_checkpoints


@pytest.fixture(scope="module")
def local(checkpoints):
    return load_models(checkpoints["model"])


@pytest.fixture(scope="module")
def remote(checkpoints):
    models = load_models(checkpoints["model"], decoder_process=True)
    yield models
    models.batcher.close()


def longest_request(models, prompt: str = "The movie was"):
    """Greedy prompt ids and settings for as many new tokens as the tiny window allows (the tiny
    model's greedy loop is allowed, so that it does not end at an eos first)."""
    ids = encode(models.lm_tokenizer, prompt)
    settings = check_generation_settings(
        models, strategy="greedy", max_new_tokens=models.window - len(ids), no_repeat_ngram_size=0
    )
    return ids, settings


def test_load_models_starts_a_child_that_decodes(remote):
    assert isinstance(remote.batcher, DecoderProcess)
    assert remote.batcher.pid != os.getpid()


def test_the_child_runs_with_a_fixed_mmap_threshold(remote):
    environ = Path(f"/proc/{remote.batcher.pid}/environ").read_bytes().split(b"\0")
    assert b"MALLOC_MMAP_THRESHOLD_=131072" in environ


def test_texts_are_the_in_process_ones_alone_and_at_once(local, remote):
    expected = [generate(local, prompt, **settings).text for prompt, settings in CASES]
    assert [generate(remote, prompt, **settings).text for prompt, settings in CASES] == expected
    together = [None] * len(CASES)

    def run(i):
        prompt, settings = CASES[i]
        together[i] = generate(remote, prompt, **settings).text

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(CASES))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert together == expected


def test_the_stream_grows_token_by_token_to_the_whole_text(local, remote):
    settings = dict(strategy="greedy", max_new_tokens=20)
    updates = list(generate_stream(remote, "The movie was", **settings))
    assert updates[-1].done and updates[-1].text == generate(local, "The movie was", **settings).text
    assert len(updates) >= 2 and not any(update.done for update in updates[:-1])
    for before, after in zip(updates, updates[1:], strict=False):
        assert after.text.startswith(before.text) and after.num_tokens >= before.num_tokens


class SentMessages:
    """The sending end of a pipe, for an outbox: what it sends goes to a queue."""

    def __init__(self):
        self.messages = queue.Queue()

    def send(self, message):
        self.messages.put(message)


def test_a_steps_tokens_wait_for_the_step_to_end_and_go_in_one_message():
    connection = SentMessages()
    outbox = Outbox(connection)
    settings = GenerationSettings()
    rows = [ReportingRow(row_id, outbox, [5, 6], settings) for row_id in range(3)]
    for row, token in zip(rows, (7, 8, 9), strict=True):
        row.add(token)
    with pytest.raises(queue.Empty):  # put without waking the sender
        connection.messages.get(timeout=0.2)
    outbox.flush()
    assert connection.messages.get(timeout=10) == ("rows", [(0, TOKEN, 7), (1, TOKEN, 8), (2, TOKEN, 9)])
    rows[0].add(10)
    rows[0].finish()  # an end goes at once, with the tokens before it
    assert connection.messages.get(timeout=10) == ("rows", [(0, TOKEN, 10), (0, END, None)])


def test_the_childs_batcher_flushes_after_every_step(local):
    flushes = []

    class CountingOutbox(Outbox):
        def flush(self):
            flushes.append(len(row.tokens))
            super().flush()

    connection = SentMessages()
    batcher = ReportingBatcher(local.lm, local.lm_tokenizer, CountingOutbox(connection))
    ids, settings = longest_request(local)
    row = ReportingRow(0, batcher.outbox, ids, settings)  # before the batcher can flush
    batcher.submit_row(row)
    assert row.done.wait(60) and row.error is None
    assert flushes == list(range(1, settings.max_new_tokens + 1))  # one per step, after its token
    events = []
    while not events or events[-1][1] != END:
        events += connection.messages.get(timeout=10)[1]
    assert [value for _, kind, value in events if kind == TOKEN] == row.tokens


def test_a_cancel_ends_the_row_in_the_child(remote):
    ids, settings = longest_request(remote)
    whole = remote.batcher.submit(ids, settings)
    assert whole.done.wait(60) and len(whole.tokens) == settings.max_new_tokens  # uncancelled: all of them
    row = remote.batcher.submit(ids, settings)
    row.cancel()
    assert row.done.wait(60) and row.error is None
    assert len(row.tokens) < settings.max_new_tokens
    assert generate(remote, "Hi", strategy="greedy", max_new_tokens=5).num_tokens >= 1


def test_a_child_that_dies_fails_its_requests_and_the_next_request_starts_another(checkpoints, local):
    models = load_models(checkpoints["model"], decoder_process=True)
    try:
        ids, settings = longest_request(models)
        first = models.batcher.pid
        row = models.batcher.submit(ids, settings)
        os.kill(first, signal.SIGKILL)
        assert row.done.wait(60)
        assert "The decoding process stopped (it exited with code -9); send the request again." in str(
            row.error
        )
        prompt, settings = CASES[0]
        assert generate(models, prompt, **settings).text == generate(local, prompt, **settings).text
        assert models.batcher.pid != first
    finally:
        models.batcher.close()


def test_a_frozen_child_is_replaced_and_its_requests_fail_with_the_reason(checkpoints, local):
    models = load_models(checkpoints["model"], decoder_process=True)
    models.batcher.close()
    models.batcher = decoder = DecoderProcess(checkpoints["model"], stall_timeout_s=2)
    try:
        decoder.wait_ready()
        ids, settings = longest_request(models)
        frozen = decoder.pid
        os.kill(frozen, signal.SIGSTOP)  # alive, but sends nothing
        row = decoder.submit(ids, settings)
        assert row.done.wait(30)
        assert "sent nothing for" in str(row.error) and "send the request again" in str(row.error)
        prompt, settings = CASES[0]
        assert generate(models, prompt, **settings).text == generate(local, prompt, **settings).text
        assert decoder.pid != frozen
    finally:
        decoder.close()


def test_a_model_the_child_cannot_load_is_a_clear_error(tmp_path):
    decoder = DecoderProcess(tmp_path)  # a folder with no model in it
    try:
        with pytest.raises(ModelLoadError, match="could not load the model .* holds no config.json"):
            decoder.wait_ready(120)
    finally:
        decoder.close()


def test_the_child_imports_the_same_package_as_the_parent_even_when_not_installed(tmp_path):
    # A copy of the package that no installation knows of, imported by path, as `python path/to/app.py`
    # started from another folder does: the child must run this copy, not whatever else is installed.
    copy = tmp_path / "checkout"
    shutil.copytree(
        Path(llm_memory.__file__).parent, copy / "llm_memory", ignore=shutil.ignore_patterns("*.pyc")
    )
    script = (
        f"import subprocess, sys; sys.path.insert(0, {str(copy)!r})\n"
        "from llm_memory.serving.decoder_process import child_environment\n"
        "code = 'import llm_memory.serving.decoder_process as m; print(m.__file__)'\n"
        "print(subprocess.run([sys.executable, '-c', code], env=child_environment(), cwd='/', "
        "capture_output=True, text=True, check=True).stdout)"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd="/", capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(copy / "llm_memory" / "serving" / "decoder_process.py")


def test_an_installed_package_leaves_the_child_s_path_alone(monkeypatch):
    # Installed in site-packages, the package is found by every interpreter of this environment; putting
    # site-packages ahead of the standard library on PYTHONPATH could shadow it.
    root = str(Path(llm_memory.__file__).resolve().parent.parent)
    monkeypatch.setattr(sysconfig, "get_paths", lambda: {"purelib": root, "platlib": root})
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    assert decoder_process.child_environment()["PYTHONPATH"] == "/elsewhere"
    monkeypatch.undo()
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    assert decoder_process.child_environment()["PYTHONPATH"] == os.pathsep.join([root, "/elsewhere"])
