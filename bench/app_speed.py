"""Speed of the demo as a user sees it, on this machine: the app runs in its own process and is timed over HTTP.

    python -m bench.app_speed [--model PATH] [--classifier PATH] [--repeats 5] [--new_tokens N] [--json PATH]

- ready: seconds from ``python app.py`` to the first HTTP 200 of the page (imports and model loading);
- first token: seconds from submitting a 200-token prompt to ``/generate`` to the first streamed text;
- attention: seconds for ``/attention`` on a text of 256 tokens or more (cut to the model's window), the
  plotly figures included;
- concurrency: seconds for 16 clients' ``/generate`` requests (seeds 0-15) sent at once, over the time
  of one: the mean seconds of the same 16 requests sent one at a time. A request asks for as many new
  tokens as the Generate tab does unless told (``DEFAULT_MAX_NEW_TOKENS``, 64);
  ``--new_tokens 128`` asks for twice as many, which the README also reports. Sampled texts end at
  different lengths (an end-of-text token), so the time of one is that of the average request, not of
  one seed that happens to end early or late. With a short prompt and with the 200-token one (cut to
  leave room in the 256-token window for the new tokens: to 192 tokens, or 128 with ``--new_tokens
  128``). The clients are ``gradio_client`` ones; each prompt is also sent through Gradio's REST API
  from one asyncio client, whose own work on this shared CPU is smaller still (the table gives the
  CPU-seconds the clients spend per burst), and once more as 16 copies of one request (all seed 0, the
  tab's default) over that request alone. Each REST request comes with its user's session, as a
  browser's or a ``gradio_client`` one does (sessions persist between repeats, so only the warm-up sets
  them up). The 16 requests share their prompt, which the batcher
  reads once for all of them; the 200-token prompt's keys and values it also keeps once
  (``llm_memory/serving/shared_prefix.py``; ``bench/batch_decoding.py`` measures that against keeping them
  per row).
- classify: seconds for 16 users' ``/classify`` requests (16 different reviews' first 64 tokens), sent
  at once through the REST API, over the mean time of the same requests one at a time; concurrent
  requests share one forward and backward pass (``ClassifyBatcher``). ``--parts classify``
  runs only this (and the start-up).
- decoder process: the app decodes in a child process (``llm_memory/serving/decoder_process.py``); a second
  app started with ``LLM_MEMORY_DECODER_PROCESS=0`` decodes in the server's own process, and the same
  one and 16 ``gradio_client`` requests (short prompt) on it are the baseline, in the same run.

The clients share this machine's CPUs with the server, which clients on their users' own machines do
not. ``gradio_client`` builds two HTTP clients per request, and with certificate checks on, each loads
the CA bundle (~16 ms of CPU): 16 clients spent ~0.8 CPU-seconds on a burst that way, 0.07 without.
The server here is plain HTTP on the loopback, where there is no certificate to check, so the clients
run with ``ssl_verify=False``.

Targets: ready <= 15 s, first token <= 0.5 s, attention <= 2 s, 16 at once <= 3x one. Medians over
``--repeats`` rounds after a warm-up; each round times the one and then the 16 right after, and a
ratio is the median of the rounds' ratios (``paired``). The table says which targets are met.
"""

import argparse
import asyncio
import json
import os
import resource
import statistics
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import httpx
import torch
from gradio_client import Client
from transformers import AutoTokenizer

from bench._common import (
    NUM_CLIENTS,
    ROOT,
    SHORT_PROMPT,
    all_at_once_in_process,
    free_port,
    one_at_a_time_in_process,
    rest_call,
    start_app,
)
from llm_memory.generation_settings import DEFAULT_MAX_NEW_TOKENS
from llm_memory.serving.models import load_models
from llm_memory.serving.settings import ServeSettings
from llm_memory.training.reviews import load_movie_reviews

# Tokens of each /classify request: a review's opening, a one-line review.
CLASSIFY_TOKENS = 64
CLASSIFY_ROWS = [
    (f"one /classify, {CLASSIFY_TOKENS} tokens (mean of 16), REST API", "rest_one_classify_s", "s"),
    ("16 /classify at once, different reviews, REST API", "rest_sixteen_classify_s", "s"),
    ("16 /classify at once / one", "rest_classify_ratio", "x"),
]
TARGETS = {
    "rest_classify_ratio": 3.0,
    "ready_s": 15.0,
    "first_token_s": 0.5,
    "attention_256_s": 2.0,
    "concurrency_ratio_short": 3.0,
    "concurrency_ratio_long": 3.0,
    "rest_ratio_short": 3.0,
    "rest_same_ratio_short": 3.0,
    "rest_ratio_long": 3.0,
    "rest_same_ratio_long": 3.0,
}
PROMPT_TOKENS = 200
ATTENTION_TOKENS = 256
NEW_TOKENS = DEFAULT_MAX_NEW_TOKENS  # per /generate request, as the tab sends (--new_tokens)


def text_of_tokens(tokenizer, texts: list[str], num_tokens: int) -> str:
    """The first ``num_tokens`` tokens of the joined ``texts``, as text."""
    ids = tokenizer(" ".join(texts), add_special_tokens=False, verbose=False)["input_ids"]
    if len(ids) < num_tokens:
        raise SystemExit(f"The sample texts have only {len(ids)} tokens; {num_tokens} are needed.")
    return tokenizer.decode(ids[:num_tokens])


def first_token_seconds(client: Client, prompt: str) -> float:
    start = time.perf_counter()
    job = client.submit(prompt, max_new_tokens=NEW_TOKENS, seed=0, api_name="/generate")
    for _ in job:
        seconds = time.perf_counter() - start
        job.cancel()
        return seconds
    raise RuntimeError("/generate streamed nothing")


def generate_seconds(client: Client, prompt: str, seed: int = 0) -> float:
    start = time.perf_counter()
    client.predict(prompt, max_new_tokens=NEW_TOKENS, seed=seed, api_name="/generate")
    return time.perf_counter() - start


def one_at_a_time_seconds(one) -> float:
    """Mean seconds of the burst's requests (seeds 0-15) sent one after another: the time of one."""
    return statistics.mean(one(seed) for seed in range(NUM_CLIENTS))


def concurrent_seconds(clients: list[Client], prompt: str) -> float:
    """Seconds until all clients' requests, sent at once, are answered."""
    barrier = threading.Barrier(len(clients) + 1)
    errors = []

    def one(index: int):
        barrier.wait()
        try:
            generate_seconds(clients[index], prompt, seed=index)
        except Exception as err:  # noqa: BLE001  (reported after the run)
            errors.append(err)

    threads = [threading.Thread(target=one, args=(index,)) for index in range(len(clients))]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(clients)} requests failed: {errors[0]}")
    return time.perf_counter() - start


def process_cpu_seconds() -> float:
    """CPU-seconds this process (the clients, all threads) has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def with_cpu(function, cpu: list[float]):
    """``function``, which also appends the CPU-seconds this process spent in each call to ``cpu``."""

    def measured():
        start = process_cpu_seconds()
        result = function()
        cpu.append(process_cpu_seconds() - start)
        return result

    return measured


def generate_parameters(url: str) -> list[dict]:
    """The ``/generate`` inputs in order, with the app's own defaults (from its API info)."""
    with urllib.request.urlopen(f"{url}gradio_api/info", timeout=10) as response:
        return json.load(response)["named_endpoints"]["/generate"]["parameters"]


def rest_seconds(url: str, prompt: str, seeds: Sequence[int]) -> float:
    """Seconds until requests with these seeds, sent at once through the REST API, are answered."""
    parameters = generate_parameters(url)

    def arguments(**values) -> list:
        return [values.get(p["parameter_name"], p.get("parameter_default")) for p in parameters]

    requests = [arguments(prompt=prompt, max_new_tokens=NEW_TOKENS, seed=seed) for seed in seeds]
    # Request i comes from user i, who keeps a session as a browser tab or a gradio_client Client does.
    # Without one, Gradio sets up a session for every call (a config of all 76 components, ~5 ms of
    # the server's event loop each), which a user with the page open has paid once.
    sessions = [f"bench-user-{i}" for i in range(len(requests))]

    async def run() -> float:
        async with httpx.AsyncClient(timeout=120) as client:
            start = time.perf_counter()
            await asyncio.gather(
                *(
                    rest_call(client, url, "generate", data, s)
                    for data, s in zip(requests, sessions, strict=True)
                )
            )
            return time.perf_counter() - start

    return asyncio.run(run())


def rest_classify_seconds(url: str, texts: Sequence[str], first_user: int = 0) -> float:
    """Seconds until these ``/classify`` requests, sent at once from one user each, are answered."""

    async def run() -> float:
        async with httpx.AsyncClient(timeout=120) as client:
            start = time.perf_counter()
            await asyncio.gather(
                *(
                    rest_call(client, url, "classify", [text], f"bench-user-{first_user + i}")
                    for i, text in enumerate(texts)
                )
            )
            return time.perf_counter() - start

    return asyncio.run(run())


def classify_timings(url: str, texts: Sequence[str], repeats: int) -> dict[str, float]:
    one, sixteen, ratio = paired(
        lambda: statistics.mean(rest_classify_seconds(url, [text], i) for i, text in enumerate(texts)),
        lambda: rest_classify_seconds(url, texts),
        repeats,
    )
    return {"rest_one_classify_s": one, "rest_sixteen_classify_s": sixteen, "rest_classify_ratio": ratio}


def rest_timings(url: str, name: str, prompt: str, repeats: int) -> dict[str, float]:
    """Through the REST API: one request (the mean of seeds 0-15 sent one at a time) and the 16 at
    once, with the client's CPU-seconds for them; one request with seed 0 and 16 copies of it. Each
    pair is timed round by round (``paired``)."""
    timings = {}
    cpu = []
    (
        timings[f"rest_one_{name}_s"],
        timings[f"rest_sixteen_{name}_s"],
        timings[f"rest_ratio_{name}"],
    ) = paired(
        lambda: one_at_a_time_seconds(lambda seed: rest_seconds(url, prompt, [seed])),
        with_cpu(lambda: rest_seconds(url, prompt, range(NUM_CLIENTS)), cpu),
        repeats,
    )
    timings[f"rest_sixteen_{name}_client_cpu_s"] = statistics.median(cpu[1:])
    (
        timings[f"rest_one_seed0_{name}_s"],
        timings[f"rest_sixteen_same_{name}_s"],
        timings[f"rest_same_ratio_{name}"],
    ) = paired(
        lambda: rest_seconds(url, prompt, [0]), lambda: rest_seconds(url, prompt, [0] * NUM_CLIENTS), repeats
    )
    return timings


def bench_clients(url: str) -> list[Client]:
    """The burst's ``gradio_client`` clients; plain HTTP on the loopback, no certificate to check (see
    the docstring)."""
    return [Client(url, verbose=False, ssl_verify=False) for _ in range(NUM_CLIENTS)]


def one_and_sixteen_seconds(clients: list[Client], text: str, repeats: int, cpu: list | None = None):
    """The time of one ``/generate`` (the mean of the burst's requests sent one at a time), of the 16
    sent at once, and their ratio, round by round (``paired``); ``cpu`` collects the clients'
    CPU-seconds per burst."""

    def burst() -> float:
        return concurrent_seconds(clients, text)

    return paired(
        lambda: one_at_a_time_seconds(lambda seed: generate_seconds(clients[0], text, seed)),
        burst if cpu is None else with_cpu(burst, cpu),
        repeats,
    )


def decoding_in_the_server_seconds(args, repeats: int) -> dict[str, float]:
    """One and 16 ``/generate`` requests through ``gradio_client`` (short prompt) on an app that decodes
    in the server's own process (``LLM_MEMORY_DECODER_PROCESS=0``): the baseline of the decoder process."""
    port = free_port()
    process, _ = start_app(args, port, LLM_MEMORY_DECODER_PROCESS="0")
    try:
        one, sixteen, ratio = one_and_sixteen_seconds(
            bench_clients(f"http://127.0.0.1:{port}/"), SHORT_PROMPT, repeats
        )
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {
        "server_decoding_one_short_s": one,
        "server_decoding_sixteen_short_s": sixteen,
        "server_decoding_ratio_short": ratio,
    }


def in_process_seconds(args, prompt: str, repeats: int) -> dict[str, float]:
    """One and 16 generations called directly, without HTTP: what the batcher itself achieves."""
    torch.set_num_threads(1)  # as app.py runs
    models = load_models(args.model, settings=ServeSettings.from_env())
    timings = {}
    for name, text in (("short", SHORT_PROMPT), ("long", prompt)):
        (
            timings[f"direct_one_{name}_s"],
            timings[f"direct_sixteen_{name}_s"],
            timings[f"direct_ratio_{name}"],
        ) = paired(
            lambda text=text: one_at_a_time_in_process(models, text, NEW_TOKENS)[0],
            lambda text=text: all_at_once_in_process(models, text, NEW_TOKENS)[0],
            repeats,
        )
    return timings


def median(function, repeats: int) -> float:
    function()  # warm-up
    return statistics.median(function() for _ in range(repeats))


def paired(one, sixteen, repeats: int) -> tuple[float, float, float]:
    """Medians of ``one()`` and ``sixteen()`` over ``repeats`` rounds after a warm-up of each, and the
    median of the rounds' ratios sixteen / one. Each round times the one, then the 16 right after it,
    so that the ratio compares times taken under the same load of this shared machine, which drifts
    between minutes (a request's time moved by up to 25% between phases of one run)."""
    one()
    sixteen()
    ones, sixteens = [], []
    for _ in range(repeats):
        ones.append(one())
        sixteens.append(sixteen())
    ratios = [many / single for single, many in zip(ones, sixteens, strict=True)]
    return statistics.median(ones), statistics.median(sixteens), statistics.median(ratios)


def print_table(args, results: dict, rows: list[tuple[str, str, str]]) -> None:
    print(
        f"model: {args.model}  ·  {NEW_TOKENS} new tokens per request  ·  {os.cpu_count()} CPUs  ·  "
        f"medians of {args.repeats} after a warm-up; "
        "a ratio is the median of its rounds' ratios\n"
    )
    width = max(len(label) for label, _, _ in rows)
    print(f"| {'measure':<{width}} | {'value':>8} | {'target':>8} | met |")
    print(f"|{'-' * (width + 2)}|{'-' * 10}|{'-' * 10}|-----|")
    for label, key, unit in rows:
        target = TARGETS.get(key)
        met = "" if target is None else ("yes" if results[key] <= target else "NO")
        target_text = "" if target is None else f"<= {target:g}{unit}"
        print(f"| {label:<{width}} | {results[key]:>7.2f}{unit} | {target_text:>8} | {met:^3} |")


def main():
    global NEW_TOKENS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    embedded = ServeSettings.from_env(checkpoints_dir=ROOT / "checkpoints")  # LLM_MEMORY_MODEL, ... win
    parser.add_argument("--model", default=embedded.model)
    parser.add_argument("--classifier", default=embedded.classifier)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--new_tokens",
        type=int,
        default=NEW_TOKENS,
        help="new tokens per /generate request (the tab's default)",
    )
    parser.add_argument(
        "--parts",
        choices=("all", "classify"),
        default="all",
        help="all: every measure; classify: the start-up and the /classify burst only",
    )
    parser.add_argument("--json", help="Also write the results to this file.")
    args = parser.parse_args()
    NEW_TOKENS = args.new_tokens

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    reviews = load_movie_reviews()["test"]["text"][:20]
    prompt = text_of_tokens(tokenizer, reviews, PROMPT_TOKENS)
    attention_text = text_of_tokens(tokenizer, reviews, ATTENTION_TOKENS)

    # Each a different review's opening (with the next reviews after a short one).
    classify_texts = [
        text_of_tokens(tokenizer, reviews[i : i + 4], CLASSIFY_TOKENS) for i in range(NUM_CLIENTS)
    ]
    port = free_port()
    process, ready = start_app(args, port)
    try:
        url = f"http://127.0.0.1:{port}/"
        timings = classify_timings(url, classify_texts, args.repeats)
        if args.parts == "classify":
            results = {"ready_s": ready, **timings}
            print_table(
                args, results, [("server ready after `python app.py`", "ready_s", "s"), *CLASSIFY_ROWS]
            )
            if args.json:
                Path(args.json).write_text(json.dumps({"model": args.model, **results}, indent=2))
            return
        clients = bench_clients(url)
        client = clients[0]
        first_token = median(lambda: first_token_seconds(client, prompt), args.repeats)

        def attention_once() -> float:
            start = time.perf_counter()
            client.predict(attention_text, api_name="/attention")
            return time.perf_counter() - start

        attention = median(attention_once, args.repeats)
        for name, text in (("short", SHORT_PROMPT), ("long", prompt)):
            cpu = []
            (
                timings[f"one_generate_{name}_s"],
                timings[f"sixteen_generate_{name}_s"],
                timings[f"concurrency_ratio_{name}"],
            ) = one_and_sixteen_seconds(clients, text, args.repeats, cpu)
            timings[f"sixteen_generate_{name}_client_cpu_s"] = statistics.median(cpu[1:])
        for name, text in (("short", SHORT_PROMPT), ("long", prompt)):
            timings.update(rest_timings(url, name, text, args.repeats))
    finally:
        process.terminate()
        process.wait(timeout=30)
    timings.update(decoding_in_the_server_seconds(args, args.repeats))
    timings.update(in_process_seconds(args, prompt, args.repeats))

    results = {"ready_s": ready, "first_token_s": first_token, "attention_256_s": attention, **timings}
    results["decoder_process_gain_short"] = (
        timings["sixteen_generate_short_s"] / timings["server_decoding_sixteen_short_s"]
    )
    rows = [
        ("server ready after `python app.py`", "ready_s", "s"),
        (f"first streamed token, {PROMPT_TOKENS}-token prompt", "first_token_s", "s"),
        (f"attention view, {ATTENTION_TOKENS} tokens", "attention_256_s", "s"),
        *CLASSIFY_ROWS,
    ]
    for name, described in (("short", f"prompt {SHORT_PROMPT!r}"), ("long", f"{PROMPT_TOKENS}-token prompt")):
        rows += [
            (f"one /generate, {described} (mean of 16)", f"one_generate_{name}_s", "s"),
            (f"{NUM_CLIENTS} /generate at once, same prompt", f"sixteen_generate_{name}_s", "s"),
            ("  the clients' CPU-seconds for it", f"sixteen_generate_{name}_client_cpu_s", "s"),
            (f"{NUM_CLIENTS} at once / one", f"concurrency_ratio_{name}", "x"),
            ("  the same, generate() in-process, no HTTP", f"direct_ratio_{name}", "x"),
        ]
        if name == "short":
            rows += [
                ("  one, decoded in the server's process", "server_decoding_one_short_s", "s"),
                (
                    f"  {NUM_CLIENTS} at once, decoded in the server's process",
                    "server_decoding_sixteen_short_s",
                    "s",
                ),
                (
                    f"  {NUM_CLIENTS} at once / one, decoded in the server's process",
                    "server_decoding_ratio_short",
                    "x",
                ),
                (
                    f"  {NUM_CLIENTS} at once: decoder process / server's process",
                    "decoder_process_gain_short",
                    "x",
                ),
            ]
        rows += [
            ("  one, REST API (one asyncio client)", f"rest_one_{name}_s", "s"),
            (f"  {NUM_CLIENTS} at once, REST API", f"rest_sixteen_{name}_s", "s"),
            ("  the client's CPU-seconds for it", f"rest_sixteen_{name}_client_cpu_s", "s"),
            (f"  {NUM_CLIENTS} at once / one, REST API", f"rest_ratio_{name}", "x"),
            ("  one, REST API, seed 0", f"rest_one_seed0_{name}_s", "s"),
            (f"  {NUM_CLIENTS} at once, REST API, all seed 0", f"rest_sixteen_same_{name}_s", "s"),
            (f"  {NUM_CLIENTS} at once / one, all seed 0", f"rest_same_ratio_{name}", "x"),
        ]
    print_table(args, results, rows)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"model": args.model, "new_tokens": NEW_TOKENS, **results}, indent=2)
        )


if __name__ == "__main__":
    main()
