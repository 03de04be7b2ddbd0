"""Peak memory and time of scoring long documents window by window (segment recurrence).

Each measurement runs in a fresh subprocess so that the process's peak resident memory
(`ru_maxrss`) belongs to that measurement alone; the figure reported is the peak minus the
resident memory after the model was built and warmed up on one window. The baseline is the same
model scoring a document of 2x the window. A rotary-position model scored in ONE forward pass
(no windows; its memory grows with the document) is shown beside it for contrast.

    python -m bench.memory_scaling [--multiples 1,2,4,16] [--json bench/results/memory_scaling.json]
"""

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from llm_memory import MemoryTransformerConfig, MemoryTransformerForCausalLM
from llm_memory.memory.recurrence import score_document

SIZES = dict(
    vocab_size=8192, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024
)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def measure(multiple: int, window: int, mode: str) -> dict:
    torch.manual_seed(0)
    position = "rope" if mode == "one_pass" else "learned"
    config = MemoryTransformerConfig(
        **SIZES, max_position_embeddings=window, position_embedding_type=position
    )
    model = MemoryTransformerForCausalLM(config).eval()
    ids = torch.randint(
        5, config.vocab_size, (1, window * multiple), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        score_document(model, ids[:, :window])  # warm-up: one window's buffers are the floor
    base = rss_mb()
    start = time.perf_counter()
    with torch.no_grad():
        if mode == "windowed":
            score_document(model, ids)
        else:
            logits = model(ids).logits
            torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:])
    return {"seconds": time.perf_counter() - start, "peak_mb": rss_mb() - base}


def run_child(multiple: int, window: int, mode: str) -> dict:
    # A fresh process per measure, so that each peak is its own; run from the root, as this module is.
    code = f"import json; from bench import memory_scaling as m; print(json.dumps(m.measure({multiple}, {window}, {mode!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--multiples", default="1,2,4,16")
    parser.add_argument("--one_pass_multiples", default="1,2,4,16")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = []
    for mode, multiples in (("windowed", args.multiples), ("one_pass", args.one_pass_multiples)):
        for multiple in [int(m) for m in multiples.split(",") if m]:
            result = run_child(multiple, args.window, mode)
            rows.append({"mode": mode, "multiple": multiple, "tokens": multiple * args.window, **result})
            print(
                f"{mode:9s} {multiple:3d}x window: {result['peak_mb']:8.1f} MB over baseline, {result['seconds']:.2f} s"
            )
    windowed = {r["multiple"]: r for r in rows if r["mode"] == "windowed"}
    print("\n| document | windowed peak (MB) | windowed time (s) | one-pass peak (MB) |\n|---|---|---|---|")
    one_pass = {r["multiple"]: r for r in rows if r["mode"] == "one_pass"}
    for multiple, row in windowed.items():
        other = one_pass.get(multiple)
        print(f"| {multiple}x window ({row['tokens']} tokens) | {row['peak_mb']:.1f} | {row['seconds']:.2f} | "
              f"{other['peak_mb']:.1f} |" if other else "| - |")  # fmt: skip
    summary = {}
    if 16 in windowed and 2 in windowed:
        summary["peak_16x_over_2x"] = (windowed[16]["peak_mb"] + 1e-9) / max(windowed[2]["peak_mb"], 1e-9)
        summary["target_met"] = windowed[16]["peak_mb"] <= windowed[2]["peak_mb"] + 1.0  # 1 MB of RSS noise
        summary["time_16x_over_2x"] = windowed[16]["seconds"] / windowed[2]["seconds"]
        print(
            f"\n16x / 2x window: peak memory {windowed[16]['peak_mb']:.1f} MB vs {windowed[2]['peak_mb']:.1f} MB "
            f"(target: no more, within 1 MB of RSS noise: {'met' if summary['target_met'] else 'NOT met'}); "
            f"time ratio {summary['time_16x_over_2x']:.1f} (linear would be 8.0)"
        )
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"window": args.window, "rows": rows, "summary": summary}, file, indent=2)


if __name__ == "__main__":
    main()
