"""Compiled against eager ``generate()`` on this CPU: the memory model with its LSTM, and GPT-2 beside it.

Decoding a 6M-parameter model on a CPU spends much of each step on overhead around small matrix
products. A static cache (``cache_implementation="static"``) gives every decoding step the same shapes,
so Transformers can run the model's forward as one compiled graph (``torch.compile``, full graph, the
LSTM's state carried in the cache). Measured here, in one process:

- ours: the embedded ``checkpoints/memory-lm`` (LSTM on, learned positions);
- GPT-2: Transformers' ``GPT2LMHeadModel`` with the same width, depth and vocabulary (random weights:
  speed does not depend on them);

each eager (dynamic cache) and compiled (static cache, full graph, inductor with frozen weights and
its C++ wrapper), batch 1, greedy, a 32-token prompt and exactly 128 new tokens, with no logits
processors but the minimum length (the checkpoint's repetition penalty and n-gram rule are turned
off, in both). The compiled run must give the
same tokens as the eager one. The models and modes take turns within each round, and each figure is a
median over rounds; the speed-up is the median of the per-round ratios. Compile time (the first call)
is reported apart and not counted. Each run's time is also split into the forward calls (timed from
outside, the compiled graph unchanged) and ``generate()``'s own work between them; the "ceiling" is
eager ``generate()`` against the compiled forwards alone: the speed-up were that work free.

Transformers compiles ``generate()`` by itself only on accelerators; on a CPU a ``CompileConfig`` with
``_compile_all_devices`` set (as Transformers' own generation tests do) asks for it.

    python -m bench.compiled_generate                 # ~5 min on 2 cores, most of it compiling
    python -m bench.compiled_generate --quick         # tiny models, a smoke run
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/model_speed.py

import argparse
import json
import platform
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, CompileConfig, GenerationConfig

from bench._common import gpt2_like
from llm_memory import MemoryTransformerConfig, MemoryTransformerForCausalLM

TARGET = 1.5  # compiled / eager tokens/s, ours with the LSTM on


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="checkpoints/memory-lm", help="our causal LM folder")
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument(
        "--no-freezing", action="store_true", help="compile without inductor's weight freezing"
    )
    parser.add_argument(
        "--python-wrapper",
        action="store_true",
        help="call the compiled kernels from inductor's Python wrapper instead of its C++ one",
    )
    parser.add_argument("--quick", action="store_true", help="tiny random models, 2 rounds, 16 tokens")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    return parser.parse_args(argv)


def tiny_ours() -> MemoryTransformerForCausalLM:
    config = MemoryTransformerConfig(
        vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256
    )
    return MemoryTransformerForCausalLM(config)


def greedy_config(model, new_tokens: int) -> GenerationConfig:
    """Greedy decoding of exactly ``new_tokens`` tokens, with no logits processors but the minimum
    length: the checkpoint's own repetition penalty and n-gram rule, which generate() would merge
    in, are turned off."""
    return GenerationConfig(
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        pad_token_id=model.config.pad_token_id,
        eos_token_id=model.config.eos_token_id,
        bos_token_id=model.config.bos_token_id,
    )


def compiled_config(base: GenerationConfig, freezing: bool, cpp_wrapper: bool = True) -> GenerationConfig:
    """A static cache and one fullgraph inductor graph per step; with ``freezing`` the weights are
    constants of the graph, with ``cpp_wrapper`` the kernels are called from C++ (a decoding step of
    this model is many small kernels, whose calls from Python cost more than their arithmetic)."""
    options = {"freezing": True} if freezing else {}
    if cpp_wrapper:
        options["cpp_wrapper"] = True
    compile_config = CompileConfig(
        fullgraph=True, dynamic=False, mode=None if options else "default", options=options or None
    )
    compile_config._compile_all_devices = True  # Transformers compiles by itself only on accelerators
    config = GenerationConfig(**base.to_dict())
    config.cache_implementation = "static"
    config.compile_config = compile_config
    return config


class ForwardClock:
    """Times each forward call that ``generate()`` makes: the model's ``__call__`` when eager, the
    compiled call when compiled (wrapped from outside, so the compiled graph is unchanged). What is left
    of a run's time is ``generate()``'s own work between forwards, which compiling does not touch."""

    def __init__(self, model):
        self.model, self.seconds = model, []
        self._get_compiled_call = model.get_compiled_call

    def _timed(self, call):
        def timed_call(*args, **kwargs):
            start = time.perf_counter()
            out = call(*args, **kwargs)
            self.seconds.append(time.perf_counter() - start)
            return out

        return timed_call

    def install(self, compiled: bool) -> None:
        # Only one of the two at a time: the compiled call compiles ``model.__call__``, which must then be
        # the class's own.
        self.model.__dict__.pop("__call__", None)
        self.model.__dict__.pop("get_compiled_call", None)
        if compiled:
            self.model.get_compiled_call = lambda config: self._timed(self._get_compiled_call(config))
        else:
            self.model.__call__ = self._timed(type(self.model).__call__.__get__(self.model))
        self.seconds = []


def timed(model, ids, config, clock: ForwardClock | None = None) -> tuple[float, torch.Tensor]:
    if clock is not None:
        clock.install(config.compile_config is not None and config.cache_implementation == "static")
    start = time.perf_counter()
    out = model.generate(ids, generation_config=config, attention_mask=torch.ones_like(ids))
    return time.perf_counter() - start, out


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.quick:
        args.rounds, args.new_tokens, args.prompt_len = 2, 16, 8
        ours = tiny_ours()
    else:
        ours = AutoModelForCausalLM.from_pretrained(args.model)
    models = {"ours (LSTM on)": ours.eval(), "GPT-2 (same size)": gpt2_like(ours.config).eval()}
    if not ours.config.use_lstm:
        raise SystemExit(f"{args.model} has no LSTM; this benchmark measures the model with it.")
    ids = torch.randint(3, ours.config.vocab_size, (1, args.prompt_len))

    configs, compile_seconds = {}, {}
    for name, model in models.items():
        eager = greedy_config(model, args.new_tokens)
        compiled = compiled_config(eager, not args.no_freezing, not args.python_wrapper)
        configs[name] = {"eager": eager, "compiled": compiled}
        timed(model, ids, eager)  # warm-up
        compile_seconds[name], _ = timed(model, ids, compiled)  # the first call compiles
        print(f"{name}: compiled in {compile_seconds[name]:.1f} s", flush=True)

    seconds = {name: {"eager": [], "compiled": []} for name in models}
    forward_seconds = {name: {"eager": [], "compiled": []} for name in models}
    clocks = {name: ForwardClock(model) for name, model in models.items()}
    same_tokens = {name: True for name in models}
    for round_index in range(args.rounds):
        order = list(models) if round_index % 2 == 0 else list(models)[::-1]
        for name in order:
            outputs = {}
            for mode in ("eager", "compiled") if round_index % 2 == 0 else ("compiled", "eager"):
                elapsed, outputs[mode] = timed(models[name], ids, configs[name][mode], clocks[name])
                seconds[name][mode].append(elapsed)
                forward_seconds[name][mode].append(sum(clocks[name].seconds))
            same_tokens[name] &= torch.equal(outputs["eager"], outputs["compiled"])

    results = {}
    for name in models:
        eager, compiled = seconds[name]["eager"], seconds[name]["compiled"]
        forwards = forward_seconds[name]
        per_token = {  # milliseconds per new token: in the forward calls, and in generate()'s own work
            mode: {
                "forward_ms": round(1e3 * statistics.median(forwards[mode]) / args.new_tokens, 3),
                "rest_ms": round(
                    1e3
                    * statistics.median(
                        t - f for t, f in zip(seconds[name][mode], forwards[mode], strict=True)
                    )
                    / args.new_tokens,
                    3,
                ),
            }
            for mode in ("eager", "compiled")
        }
        results[name] = {
            "eager_tokens_per_s": round(args.new_tokens / statistics.median(eager), 1),
            "compiled_tokens_per_s": round(args.new_tokens / statistics.median(compiled), 1),
            "speedup": round(statistics.median(e / c for e, c in zip(eager, compiled, strict=True)), 2),
            "per_token": per_token,
            "forward_speedup": round(
                statistics.median(
                    e / c for e, c in zip(forwards["eager"], forwards["compiled"], strict=True)
                ),
                2,
            ),
            # The speed-up were generate()'s own work free in the compiled run: eager generate() against the
            # compiled forwards alone. It bounds what compiling the forward can give.
            "ceiling": round(
                statistics.median(e / c for e, c in zip(eager, forwards["compiled"], strict=True)), 2
            ),
            "same_tokens": same_tokens[name],
            "compile_seconds": round(compile_seconds[name], 1),
        }
    report = {
        "settings": {
            "model": "tiny random (--quick)" if args.quick else args.model,
            "prompt_tokens": args.prompt_len,
            "new_tokens": args.new_tokens,
            "rounds": args.rounds,
            "threads": args.threads,
            "freezing": not args.no_freezing,
            "cpp_wrapper": not args.python_wrapper,
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
        },
        "results": results,
        "target": {"speedup_ours": TARGET, "met": results["ours (LSTM on)"]["speedup"] >= TARGET},
    }
    print("| model | eager tokens/s | compiled tokens/s | compiled / eager | same tokens | compile time |")
    print("|---|---|---|---|---|---|")
    for name, row in results.items():
        print(
            f"| {name} | {row['eager_tokens_per_s']} | {row['compiled_tokens_per_s']} | {row['speedup']}x | "
            f"{row['same_tokens']} | {row['compile_seconds']} s |"
        )
    print("\nPer new token (ms): in the forward calls + in generate()'s own work")
    print("| model | eager | compiled | forwards compiled / eager | ceiling (generate()'s work free) |")
    print("|---|---|---|---|---|")
    for name, row in results.items():
        eager_ms, compiled_ms = row["per_token"]["eager"], row["per_token"]["compiled"]
        print(
            f"| {name} | {eager_ms['forward_ms']} + {eager_ms['rest_ms']} | "
            f"{compiled_ms['forward_ms']} + {compiled_ms['rest_ms']} | {row['forward_speedup']}x | "
            f"{row['ceiling']}x |"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(report, file, indent=2)
            file.write("\n")
    return report


if __name__ == "__main__":
    main()
