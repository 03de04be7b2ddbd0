"""The checks of a lent GPU, in one run: bf16 training throughput and MFU of the ``base`` preset's model,
its attention implementations, and bf16 ``generate()`` eager against compiled.

Training: the ``base`` preset's model (``llm_memory/training/presets/base.json``: 8 blocks of width 512,
a 512-token window, the LSTM memory) built from its config with random weights, AdamW (fused), bf16
autocast and TF32 matmuls as the preset sets them, forward + backward + step on a fixed batch of random
token ids. Each setting is timed over ``--steps`` steps after ``--warmup`` untimed ones, the GPU
synchronized at both ends. MFU uses the same FLOPs count and device peak as the Trainer's log
(``llm_memory.training.callbacks``): 6N + 12·L·H·T per token against the dense bf16 peak.

Settings: the preset as it is (LSTM on, SDPA, batch 32); larger batches; the LSTM off; eager attention;
SDPA held to its flash kernel; ``torch.compile``. A setting that cannot run here reports its error.

Generation: a causal LM folder (the embedded ``checkpoints/memory-lm`` by default) in bf16, batch 1,
greedy, a 32-token prompt and exactly 128 new tokens, eager (dynamic cache) against compiled (static
cache, one fullgraph graph per step), as ``bench.compiled_generate`` does on the CPU.

    python -m bench.gpu_check --json bench/results/gpu_check.json     # ~3 min on one H200
    python -m bench.gpu_check --quick                                   # tiny sizes, runs on a CPU
    python -m bench.gpu_check --parts training,generate                 # no compiled training
"""

import argparse
import json
import platform
import statistics
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from bench.compiled_generate import compiled_config, greedy_config, timed
from llm_memory import MemoryTransformerConfig, MemoryTransformerForCausalLM
from llm_memory.training.callbacks import device_peak_flops, training_flops_per_token

PRESET = Path(__file__).resolve().parent.parent / "llm_memory" / "training" / "presets" / "base.json"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per setting")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before timing")
    parser.add_argument("--model", default="checkpoints/memory-lm", help="causal LM folder for generate()")
    parser.add_argument("--rounds", type=int, default=5, help="generate() rounds per mode")
    parser.add_argument(
        "--parts",
        default="training,generate,compiled-training",
        help="what to measure, comma-separated: training (eager), generate, compiled-training",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps: a smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    return parser.parse_args(argv)


def base_config(quick: bool, **overrides) -> MemoryTransformerConfig:
    settings = json.loads(PRESET.read_text())["model"]
    settings.update(hidden_dropout=0.0, attention_dropout=0.0)  # timing only: dropout is not the subject
    if quick:
        settings.update(
            vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256
        )
        settings["max_position_embeddings"] = 64
    settings.update(overrides)
    return MemoryTransformerConfig(**settings)


def sdpa_backend(name: str | None):
    if name is None:
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, name)])


def train_speed(config, batch: int, args, device, compile_model=False, backend=None) -> dict:
    """Tokens/s and MFU of bf16 training steps of a fresh model of this config."""
    torch.manual_seed(0)
    model = MemoryTransformerForCausalLM(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-4, fused=device.type == "cuda")
    seq = config.max_position_embeddings
    ids = torch.randint(0, config.vocab_size, (batch, seq), device=device)
    forward = torch.compile(model) if compile_model else model

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16), sdpa_backend(backend):
            loss = forward(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    start = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync(device)
    warmup_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync(device)
    seconds = time.perf_counter() - start
    tokens_per_s = batch * seq * args.steps / seconds
    peak = device_peak_flops(device)
    flops = training_flops_per_token(model, seq)
    row = {
        "tokens_per_s": round(tokens_per_s),
        "step_ms": round(1000 * seconds / args.steps, 2),
        "mfu": round(tokens_per_s * flops / peak, 4) if peak else None,
        "loss_finite": bool(torch.isfinite(loss).item()),
        "warmup_seconds": round(warmup_seconds, 1),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        if device.type == "cuda"
        else None,
    }
    return row


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_settings(args, compiled: bool) -> list[tuple[str, dict, int, dict]]:
    """(name, config overrides, batch, train_speed options): the eager settings, or the compiled ones."""
    big = 8 if args.quick else 128
    small = 2 if args.quick else 32
    if compiled:
        return [
            ("LSTM on, SDPA, batch 128, torch.compile", {}, big, {"compile_model": True}),
            ("LSTM off, SDPA, batch 128, torch.compile", {"use_lstm": False}, big, {"compile_model": True}),
        ]
    return [
        ("preset: LSTM on, SDPA, batch 32", {}, small, {}),
        ("LSTM on, SDPA, batch 128", {}, big, {}),
        ("LSTM off, SDPA, batch 32", {"use_lstm": False}, small, {}),
        ("LSTM off, SDPA, batch 128", {"use_lstm": False}, big, {}),
        ("LSTM on, eager attention, batch 32", {"attn_implementation": "eager"}, small, {}),
        ("LSTM on, SDPA flash kernel only, batch 32", {}, small, {"backend": "FLASH_ATTENTION"}),
    ]


def generation(args, device) -> dict:
    """bf16 generate(): eager against compiled (static cache), the same greedy tokens."""
    if args.quick:
        config = base_config(True)
        model = MemoryTransformerForCausalLM(config)
    else:
        model = AutoModelForCausalLM.from_pretrained(args.model)
    model = model.to(device=device, dtype=torch.bfloat16).eval()
    new_tokens, prompt = (16, 8) if args.quick else (128, 32)
    torch.manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (1, prompt), device=device)
    eager = greedy_config(model, new_tokens)
    modes = {"eager": eager}
    modes["compiled"] = compiled_config(eager, freezing=False, cpp_wrapper=False)
    first = {mode: timed(model, ids, config)[0] for mode, config in modes.items()}  # warm-up / compile
    seconds = {mode: [] for mode in modes}
    outputs = {}
    for _ in range(args.rounds):
        for mode, config in modes.items():
            sync(device)
            elapsed, outputs[mode] = timed(model, ids, config)
            sync(device)
            seconds[mode].append(elapsed)
    result = {
        "model": "tiny random (--quick)" if args.quick else args.model,
        "dtype": "bfloat16",
        "prompt_tokens": prompt,
        "new_tokens": new_tokens,
    }
    for mode in modes:
        result[f"{mode}_tokens_per_s"] = round(new_tokens / statistics.median(seconds[mode]), 1)
        result[f"{mode}_first_call_s"] = round(first[mode], 1)
    result["speedup"] = round(result["compiled_tokens_per_s"] / result["eager_tokens_per_s"], 2)
    result["same_tokens"] = bool(torch.equal(outputs["eager"], outputs["compiled"]))
    return result


def attempt(function, *args, **kwargs) -> dict:
    try:
        return function(*args, **kwargs)
    except Exception as err:  # a setting this machine cannot run is reported, and the others still run
        traceback.print_exc()
        return {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]}


def write(report: dict, path: str | None) -> None:
    if path:
        Path(path).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.rounds = 2, 1, 1
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # the preset's "tf32": true
        torch.backends.cudnn.allow_tf32 = True
    try:
        import flash_attn  # noqa: F401

        flash_attn_package = getattr(flash_attn, "__version__", "installed")
    except ImportError:
        flash_attn_package = None
    training = {}
    report = {
        "settings": {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
            "peak_bf16_flops": device_peak_flops(device),
            "torch": torch.__version__,
            "preset": "tiny (--quick)" if args.quick else "base",
            "sequence_length": base_config(args.quick).max_position_embeddings,
            "timed_steps": args.steps,
            "flash_attn_package": flash_attn_package,
        },
        "training": training,
    }

    def measure(settings):
        for name, overrides, batch, options in settings:
            config = base_config(args.quick, **overrides)
            training[name] = attempt(train_speed, config, batch, args, device, **options)
            print(f"{name}: {training[name]}", flush=True)
            if device.type == "cuda":  # the setting's model and optimizer are gone: free their memory
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            write(report, args.json)  # after each setting, so a run cut short keeps what it measured

    parts = set(args.parts.split(","))
    if unknown := parts - {"training", "generate", "compiled-training"}:
        raise SystemExit(
            f"--parts: unknown {sorted(unknown)}; choose from training, generate, compiled-training"
        )
    # Compiling takes longest, so the compiled training settings come last.
    if "training" in parts:
        measure(training_settings(args, compiled=False))
    if "generate" in parts:
        report["generate"] = attempt(generation, args, device)
        print(f"generate(): {report['generate']}", flush=True)
        write(report, args.json)
    if "compiled-training" in parts:
        measure(training_settings(args, compiled=True))
    return report


if __name__ == "__main__":
    main()
