"""Soak and fault test of the demo: many concurrent mixed clients for minutes, a kill and a freeze of the
decoding process on the way.

    python -m bench.soak [--clients 32] [--minutes 10] [--json bench/results/soak.json]

The app runs as ``python app.py`` in its own process. Each client is one user (its own session) that
sends, one after another, a random request of the five tabs' kinds through the REST API: a sampled
``/generate`` (32 new tokens), ``/classify``, ``/summarize``, ``/attention`` and ``/memory``. Every 5 s
the resident memory of the server and of its decoding process is sampled. At 40% of the run the
decoding process is killed (SIGKILL), at 70% it is frozen (SIGSTOP; the server's watchdog replaces it
after ``LLM_MEMORY_STALL_TIMEOUT_S``, set to 10 s here).

Reported: latency percentiles per endpoint; errors outside the faults (the target is 0) and the
messages of those during them (the requests in flight then); whether the first request after each
fault succeeded; memory after warm-up (the first fifth) against the most seen later, for the server
and the decoding process (the target is 1.5x at most). It runs ours only: there is no baseline to run
beside it.
"""

import argparse
import asyncio
import json
import random
import signal
import statistics
import threading
import time
from pathlib import Path

import httpx
import psutil

from bench._common import ROOT, free_port, rest_call, start_app
from llm_memory.training.reviews import load_movie_reviews

STALL_TIMEOUT_S = 10
ENDPOINTS = ("generate", "classify", "summarize", "attention", "memory")


def endpoint_parameters(url: str) -> dict[str, list[dict]]:
    return {
        name.lstrip("/"): info["parameters"]
        for name, info in httpx.get(f"{url}gradio_api/info", timeout=30).json()["named_endpoints"].items()
    }


def request_for(endpoint: str, parameters: list[dict], rng: random.Random, texts: list[str]) -> list:
    """The endpoint's inputs: its defaults, with a text of the sample and a few settings drawn."""
    values = {}
    text = rng.choice(texts)
    if endpoint == "generate":
        values = {"prompt": " ".join(text.split()[:12]), "max_new_tokens": 32, "seed": rng.randrange(1000)}
    elif endpoint in ("classify", "summarize", "attention"):
        values = {"text": text[: rng.choice((200, 800, 2000))]}
    elif endpoint == "memory":
        values = {"distance": rng.choice((16, 64, 200)), "seed": rng.randrange(1000)}
    return [values.get(p["parameter_name"], p.get("parameter_default")) for p in parameters]


class Log:
    def __init__(self):
        self.lock = threading.Lock()
        self.calls = []  # (start, end, endpoint, error or None)
        self.faults = []  # (time, kind)
        self.memory = []  # (time, server MB, decoder MB, decoder pid)


async def client(index: int, url: str, parameters, texts, deadline: float, log: Log, start: float):
    rng = random.Random(index)
    async with httpx.AsyncClient(timeout=180) as http:
        while time.monotonic() < deadline:
            endpoint = rng.choice(ENDPOINTS)
            arguments = request_for(endpoint, parameters[endpoint], rng, texts)
            began = time.monotonic() - start
            error = None
            try:
                await rest_call(http, url, endpoint, arguments, f"soak-user-{index}")
            except Exception as err:  # noqa: BLE001  (every failure is reported)
                error = str(err)[:300]
            with log.lock:
                log.calls.append((began, time.monotonic() - start, endpoint, error))


def decoder_of(server: psutil.Process) -> psutil.Process | None:
    children = [c for c in server.children() if "llm_memory.serving.decoder_process" in " ".join(c.cmdline())]
    return children[0] if children else None


def watch(server: psutil.Process, log: Log, start: float, minutes: float, stop: threading.Event):
    """Samples memory every 5 s; kills the decoding process at 40% of the run and freezes it at 70%."""
    faults = {0.4: "kill", 0.7: "freeze"}
    while not stop.wait(5):
        now = time.monotonic() - start
        decoder = decoder_of(server)
        try:
            decoder_mb = decoder.memory_info().rss / 2**20 if decoder else float("nan")
        except psutil.NoSuchProcess:
            decoder_mb = float("nan")
        log.memory.append(
            (now, server.memory_info().rss / 2**20, decoder_mb, decoder.pid if decoder else None)
        )
        for at, kind in list(faults.items()):
            if now >= at * minutes * 60 and decoder is not None:
                decoder.send_signal(signal.SIGKILL if kind == "kill" else signal.SIGSTOP)
                log.faults.append((now, kind))
                del faults[at]


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"n": len(ordered), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": ordered[-1]}


def report(log: Log, minutes: float, clients: int) -> dict:
    fault_windows = [(at, at + STALL_TIMEOUT_S + 15) for at, _ in log.faults]
    during = lambda call: any(a <= call[1] and call[0] <= b for a, b in fault_windows)  # noqa: E731
    errors = [c for c in log.calls if c[3] is not None and not during(c)]
    fault_errors = [c for c in log.calls if c[3] is not None and during(c)]
    recovered = {}
    for at, kind in log.faults:
        after = [c for c in log.calls if c[0] > at + STALL_TIMEOUT_S + 15 and c[2] == "generate"]
        recovered[kind] = after[0][3] is None if after else None
    warm = [m for m in log.memory if m[0] >= minutes * 60 / 5]
    first = warm[: max(1, len(warm) // 10)]
    server_warm = statistics.fmean(m[1] for m in first) if first else float("nan")
    decoders, born = {}, {}
    for at, _, mb, pid in log.memory:
        born.setdefault(pid, at)
        # Each decoding process from 30 s after it first shows (loading and warming up before).
        if pid is not None and mb == mb and at >= max(minutes * 60 / 5, born[pid] + 30):
            decoders.setdefault(pid, []).append(mb)
    decoder_growth = {
        str(pid): round(max(values) / values[0], 2) for pid, values in decoders.items() if len(values) > 2
    }
    return {
        "clients": clients,
        "minutes": minutes,
        "requests": len(log.calls),
        "latency_s": {
            e: percentiles([c[1] - c[0] for c in log.calls if c[2] == e and c[3] is None]) for e in ENDPOINTS
        },
        "errors_outside_faults": len(errors),
        "error_examples": sorted({c[3] for c in errors})[:5],
        "errors_during_faults": len(fault_errors),
        "fault_messages": sorted({c[3] for c in fault_errors})[:5],
        "faults": log.faults,
        "first_generate_after_fault_succeeded": recovered,
        "server_mb_after_warmup": round(server_warm, 1),
        "server_mb_max": round(max(m[1] for m in warm), 1) if warm else None,
        "server_growth": round(max(m[1] for m in warm) / server_warm, 2) if warm else None,
        "decoder_growth_per_process": decoder_growth,
        "memory": log.memory,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "checkpoints/memory-lm"))
    parser.add_argument("--classifier", default=str(ROOT / "checkpoints/sentiment"))
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--json")
    args = parser.parse_args()

    texts = [t for t in load_movie_reviews()["test"]["text"][:200] if len(t) > 300]
    port = free_port()
    process, ready = start_app(args, port, LLM_MEMORY_STALL_TIMEOUT_S=str(STALL_TIMEOUT_S))
    url = f"http://127.0.0.1:{port}/"
    log, stop = Log(), threading.Event()
    try:
        parameters = endpoint_parameters(url)
        start = time.monotonic()
        watcher = threading.Thread(
            target=watch, args=(psutil.Process(process.pid), log, start, args.minutes, stop), daemon=True
        )
        watcher.start()

        async def run():
            deadline = start + args.minutes * 60
            await asyncio.gather(
                *(client(i, url, parameters, texts, deadline, log, start) for i in range(args.clients))
            )

        asyncio.run(run())
    finally:
        stop.set()
        process.terminate()
        process.wait(timeout=30)
    result = {"ready_s": ready, **report(log, args.minutes, args.clients)}
    shown = {k: v for k, v in result.items() if k != "memory"}
    print(json.dumps(shown, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
