"""Helpers that several benchmarks share: starting the app, one REST call, in-process bursts, side-by-side options,
GPT-2 of our size.

Not a benchmark itself. The benchmarks run from the repository root as ``python -m bench.NAME``.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import httpx
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from llm_memory.tasks.generate import generate

# The repository: app.py and the embedded checkpoints.
ROOT = Path(__file__).resolve().parent.parent
# The Generate tab's first example. With it, 16 requests cost mostly decoding, which batching shares; with
# a 200-token prompt they also cost 16 prompt passes, which no batching shares (the same tokens x 16).
SHORT_PROMPT = "The movie was"
NUM_CLIENTS = 16


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(args, port: int, **environment: str) -> tuple[subprocess.Popen, float]:
    """Starts ``python app.py`` (with these extra environment variables) and returns it with the
    seconds until its page answers."""
    command = [sys.executable, str(ROOT / "app.py"), "--port", str(port), "--host", "127.0.0.1"]
    command += ["--model", args.model, "--classifier", args.classifier]
    start = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **environment},
    )
    while True:
        if process.poll() is not None:
            raise SystemExit(f"app.py exited with {process.returncode}:\n{process.stderr.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as response:
                if response.status == 200:
                    return process, time.perf_counter() - start
        except OSError:
            time.sleep(0.05)


async def rest_call(
    client: httpx.AsyncClient, url: str, endpoint: str, arguments: list, session: str
) -> None:
    """One call of ``endpoint`` through the REST API: post the inputs, then read its event stream to the end."""
    body = {"data": arguments, "session_hash": session}
    posted = await client.post(f"{url}gradio_api/call/{endpoint}", json=body)
    posted.raise_for_status()
    event_id = posted.json()["event_id"]
    async with client.stream("GET", f"{url}gradio_api/call/{endpoint}/{event_id}") as stream:
        event = None
        async for line in stream.aiter_lines():
            if line.startswith("event:"):
                event = line.removeprefix("event:").strip()
            elif line.startswith("data:") and event == "error":
                raise RuntimeError(f"/{endpoint} answered an error: {line}")
            elif line.startswith("data:") and event == "complete":
                return
    raise RuntimeError(f"/{endpoint}'s event stream ended without a result")


def generate_in_process(models, prompt: str, seed: int, new_tokens: int) -> tuple[float, str]:
    """Seconds and text of one ``/generate`` request (seed ``seed``) called directly, without HTTP."""
    start = time.perf_counter()
    text = generate(models, prompt, max_new_tokens=new_tokens, seed=seed).text
    return time.perf_counter() - start, text


def one_at_a_time_in_process(models, prompt: str, new_tokens: int) -> tuple[float, list[str]]:
    """The burst's requests (seeds 0-15) called one after another: their mean seconds, and their texts."""
    runs = [generate_in_process(models, prompt, seed, new_tokens) for seed in range(NUM_CLIENTS)]
    return statistics.mean(seconds for seconds, _ in runs), [text for _, text in runs]


def all_at_once_in_process(models, prompt: str, new_tokens: int) -> tuple[float, list[str]]:
    """The burst's requests called at once, each on its own thread as Gradio's workers call them:
    seconds until all are done, and their texts."""
    texts = [""] * NUM_CLIENTS

    def run(seed: int):
        texts[seed] = generate_in_process(models, prompt, seed, new_tokens)[1]

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(NUM_CLIENTS)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start, texts


def side_by_side_arguments(doc: str, add_arguments=None) -> argparse.Namespace:
    """The options of a side-by-side bench on one checkpoint (--model, --rounds, --json, and those
    ``add_arguments(parser)`` adds), with torch on one thread as the app runs."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "checkpoints/memory-lm"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="Also write the results to this file.")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(1)
    return args


def gpt2_like(config, attn_implementation: str = "sdpa") -> GPT2LMHeadModel:
    """Transformers' GPT-2 with the width, depth, heads, MLP, window, vocabulary, dropout and special
    ids of one of our configs: the baseline measured beside ours (its weights are drawn anew)."""
    return GPT2LMHeadModel(
        GPT2Config(
            vocab_size=config.vocab_size,
            n_embd=config.hidden_size,
            n_layer=config.num_hidden_layers,
            n_head=config.num_attention_heads,
            n_inner=config.intermediate_size,
            n_positions=config.max_position_embeddings,
            activation_function="gelu_new",
            resid_pdrop=config.hidden_dropout,
            embd_pdrop=config.hidden_dropout,
            attn_pdrop=config.attention_dropout,
            layer_norm_epsilon=config.layer_norm_eps,
            tie_word_embeddings=True,
            pad_token_id=config.pad_token_id,
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id,
            attn_implementation=attn_implementation,
        )
    )
