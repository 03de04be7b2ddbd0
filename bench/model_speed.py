"""Speed and memory of the memory transformer against GPT-2 of the same size, on this CPU.

Three models with identical dimensions, built in one process: Transformers' ``GPT2LMHeadModel``,
ours with the LSTM memory off (the same math and parameter count as GPT-2) and ours with it on.
All use SDPA attention and dropout 0. Measured:

- training tokens/s: AdamW, forward + backward + step on one fixed batch of random token ids;
- ``generate()`` tokens/s with the cache: batch 1, greedy, every run forced to the same length;
- peak tensor memory of one training step and one ``generate()`` call, from the allocation events
  of ``torch.profiler`` (exact bytes, unaffected by other processes and by the allocator's caching);
- parameter counts.

The host may be shared, so the models take turns within each round (the order rotating from round
to round) and every figure is a median over rounds; a ratio is the median of the per-round ratios,
which cancels load that drifts between rounds. CPU time is recorded beside wall-clock time; with
``--threads 1`` it stays steady however busy the host is. OpenMP threads sleep rather than spin while
they wait (``OMP_WAIT_POLICY=PASSIVE`` unless already set): on busy cores a spinning thread waits for
a partner that is not running, which slowed some models many times over (the LSTM's step-by-step
recurrence most of all) and made the figures meaningless.

    python -m bench.model_speed                  # the project's default size: ~1.5 min on 2 cores
    python -m bench.model_speed --threads 1      # steady CPU-time figures on a busy host
    python -m bench.model_speed --quick          # tiny smoke run, ~10 s
    python -m bench.model_speed --hidden-size 512 --json bench/results/h512.json
"""

import os

# Read when torch loads OpenMP, so before `import torch`; see the module docstring.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.profiler import DeviceType, ProfilerActivity, profile
from transformers import PreTrainedModel
from transformers import __version__ as transformers_version

from bench._common import gpt2_like
from llm_memory import MemoryTransformerConfig, MemoryTransformerForCausalLM

# Token ids shared by all three models, as in our config; random prompts avoid them.
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
FIRST_ORDINARY_ID = 3

# Explicit flags still win over these: `--quick --threads 1` runs quick on one thread.
QUICK = {
    "vocab_size": 512,
    "hidden_size": 64,
    "num_layers": 2,
    "num_heads": 2,
    "intermediate_size": 256,
    "max_positions": 64,
    "batch_size": 2,
    "seq_len": 32,
    "warmup_steps": 1,
    "rounds": 1,
    "steps_per_round": 1,
    "prompt_len": 8,
    "new_tokens": 16,
    "generate_rounds": 1,
}

TARGETS = (
    ("training throughput, ours (LSTM off) / GPT-2", "train_ours_off_vs_gpt2", 1.0),
    ("generate() throughput with cache, ours (LSTM off) / GPT-2", "generate_ours_off_vs_gpt2", 1.0),
    ("training throughput, LSTM on / LSTM off (LSTM costs <= 30%)", "train_lstm_on_vs_off", 0.70),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    size = parser.add_argument_group("model size (the project's default model)")
    size.add_argument("--vocab-size", type=int, default=8192)
    size.add_argument("--hidden-size", type=int, default=256)
    size.add_argument("--num-layers", type=int, default=4)
    size.add_argument("--num-heads", type=int, default=4)
    size.add_argument("--intermediate-size", type=int, default=1024)
    size.add_argument("--max-positions", type=int, default=256)
    size.add_argument("--lstm-num-layers", type=int, default=1)
    train = parser.add_argument_group("training")
    train.add_argument("--batch-size", type=int, default=8)
    train.add_argument("--seq-len", type=int, default=256)
    train.add_argument("--warmup-steps", type=int, default=3, help="untimed steps per model before timing")
    train.add_argument("--rounds", type=int, default=15, help="timed rounds; the models take turns in each")
    train.add_argument("--steps-per-round", type=int, default=1)
    gen = parser.add_argument_group("generate()")
    gen.add_argument("--prompt-len", type=int, default=32)
    gen.add_argument("--new-tokens", type=int, default=128)
    gen.add_argument("--generate-rounds", type=int, default=15)
    parser.add_argument(
        "--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads (default: all cores)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one round: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    if args.seq_len > args.max_positions:
        parser.error(f"--seq-len ({args.seq_len}) must not exceed --max-positions ({args.max_positions}).")
    if args.prompt_len + args.new_tokens > args.max_positions:
        parser.error(
            f"--prompt-len + --new-tokens ({args.prompt_len + args.new_tokens}) must not exceed "
            f"--max-positions ({args.max_positions}): all three models use learned positions."
        )
    return args


def ours_config(args: argparse.Namespace, use_lstm: bool) -> MemoryTransformerConfig:
    return MemoryTransformerConfig(
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_layers,
        num_attention_heads=args.num_heads,
        intermediate_size=args.intermediate_size,
        max_position_embeddings=args.max_positions,
        position_embedding_type="learned",
        use_lstm=use_lstm,
        lstm_num_layers=args.lstm_num_layers,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        layer_norm_eps=1e-5,
        tie_word_embeddings=True,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        attn_implementation="sdpa",
    )


def build_ours(args: argparse.Namespace, use_lstm: bool) -> PreTrainedModel:
    return MemoryTransformerForCausalLM(ours_config(args, use_lstm))


@dataclass
class Timing:
    """Per-round seconds of wall-clock and of CPU time (all threads of this process)."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, work: Callable[[], object]) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        work()
        self.cpu.append(time.process_time() - cpu)
        self.wall.append(time.perf_counter() - wall)


@dataclass
class Contender:
    name: str
    model: PreTrainedModel
    optimizer: torch.optim.Optimizer | None = None
    train: Timing = field(default_factory=Timing)
    generate: Timing = field(default_factory=Timing)
    train_peak_bytes: int = 0
    generate_peak_bytes: int = 0

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())  # tied weights counted once


def train_step(contender: Contender, batch: torch.Tensor) -> None:
    model = contender.model
    if contender.optimizer is None:  # created lazily, so the first step's memory includes its state
        contender.optimizer = torch.optim.AdamW(model.parameters())
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    contender.optimizer.step()
    contender.optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def generate(model: PreTrainedModel, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    output = model.generate(
        input_ids=prompt,
        attention_mask=torch.ones_like(prompt),
        do_sample=False,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,  # no early end of sequence: every model produces the same count
        use_cache=True,
    )
    if output.shape[1] != prompt.shape[1] + new_tokens:
        raise RuntimeError(
            f"generate() returned {output.shape[1] - prompt.shape[1]} new tokens, not {new_tokens}."
        )
    return output


def peak_tensor_bytes(work: Callable[[], object]) -> int:
    """Peak of live CPU tensor bytes allocated during `work`, above what was live before it."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        work()
    # The raw event list keeps every allocation and free in time order; the summary tables do not.
    events = [
        event
        for event in prof.profiler.kineto_results.events()
        if event.name() == "[memory]" and event.device_type() == DeviceType.CPU
    ]
    live = peak = 0
    for event in sorted(events, key=lambda event: event.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def rotations(contenders: list[Contender], rounds: int):
    """Each round visits every model once, starting one later than the round before."""
    for round_idx in range(rounds):
        shift = round_idx % len(contenders)
        yield contenders[shift:] + contenders[:shift]


def paired_speedup(seconds: list[float], reference_seconds: list[float]) -> dict[str, float]:
    """Throughput ratio against the reference, round by round: load that drifts between rounds cancels."""
    ratios = sorted(ref / sec for sec, ref in zip(seconds, reference_seconds, strict=True))
    low, high = (ratios[0], ratios[-1]) if len(ratios) < 4 else statistics.quantiles(ratios, n=4)[::2]
    return {"median": statistics.median(ratios), "low": low, "high": high}


def measure(args: argparse.Namespace, contenders: list[Contender]) -> None:
    generator = torch.Generator().manual_seed(args.seed)
    batch = torch.randint(0, args.vocab_size, (args.batch_size, args.seq_len), generator=generator)
    prompt = torch.randint(FIRST_ORDINARY_ID, args.vocab_size, (1, args.prompt_len), generator=generator)

    print(
        f"training: {args.warmup_steps} warm-up steps, then {args.rounds} rounds x {args.steps_per_round} steps"
    )
    for contender in contenders:
        contender.model.train()
        # The first step creates the optimizer state, so its peak is the whole training overhead.
        contender.train_peak_bytes = peak_tensor_bytes(lambda c=contender: train_step(c, batch))
        for _ in range(args.warmup_steps):
            train_step(contender, batch)
    for order in rotations(contenders, args.rounds):
        for contender in order:
            contender.train.add(
                lambda c=contender: [train_step(c, batch) for _ in range(args.steps_per_round)]
            )

    print(f"generate(): 1 warm-up call, then {args.generate_rounds} rounds")
    for contender in contenders:
        contender.optimizer = None  # frees the AdamW state before generation
        contender.model.eval()
        generate(contender.model, prompt, args.new_tokens)
        contender.generate_peak_bytes = peak_tensor_bytes(
            lambda m=contender.model: generate(m, prompt, args.new_tokens)
        )
    for order in rotations(contenders, args.generate_rounds):
        for contender in order:
            contender.generate.add(lambda m=contender.model: generate(m, prompt, args.new_tokens))


def summarize(timing: Timing, tokens: int) -> dict:
    return {
        "tokens_per_round": tokens,
        "tokens_per_s": tokens / statistics.median(timing.wall),
        "tokens_per_cpu_s": tokens / statistics.median(timing.cpu),
        "tokens_per_s_best": tokens / min(timing.wall),
        "wall_s": timing.wall,
        "cpu_s": timing.cpu,
    }


def speedups(contenders: list[Contender], clock: str) -> dict[str, dict[str, float]]:
    gpt2, ours_off, ours_on = contenders
    ratios = {}
    for task in ("train", "generate"):
        seconds = {c.name: getattr(getattr(c, task), clock) for c in contenders}
        ratios[f"{task}_ours_off_vs_gpt2"] = paired_speedup(seconds[ours_off.name], seconds[gpt2.name])
        ratios[f"{task}_ours_on_vs_gpt2"] = paired_speedup(seconds[ours_on.name], seconds[gpt2.name])
        ratios[f"{task}_lstm_on_vs_off"] = paired_speedup(seconds[ours_on.name], seconds[ours_off.name])
    return ratios


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    contenders = []
    for name, build in (
        ("GPT-2", lambda a: gpt2_like(ours_config(a, use_lstm=False))),  # the same size and ids
        ("ours, LSTM off", lambda a: build_ours(a, use_lstm=False)),
        ("ours, LSTM on", lambda a: build_ours(a, use_lstm=True)),
    ):
        torch.manual_seed(args.seed)
        model = build(args)
        if model.config._attn_implementation != "sdpa":
            raise RuntimeError(f"{name} runs {model.config._attn_implementation!r} attention, not sdpa.")
        contenders.append(Contender(name, model))

    measure(args, contenders)

    ratios = {"wall": speedups(contenders, "wall"), "cpu": speedups(contenders, "cpu")}
    train_tokens = args.batch_size * args.seq_len * args.steps_per_round
    return {
        "settings": {key: value for key, value in vars(args).items() if key != "json"},
        "environment": {
            "torch": torch.__version__,
            "transformers": transformers_version,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpu_cores": len(os.sched_getaffinity(0)),
            "torch_threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
            "load_average_after": os.getloadavg(),
            "attention": "sdpa",
        },
        "method": {
            "throughput": "median over rounds; the models take turns in each round, the order rotating",
            "ratios": "median of per-round ratios; low/high are the quartiles (min/max under 4 rounds)",
            "cpu_time": "process CPU time of all threads: it leaves out time spent waiting for a core, so it "
            "stays steady under other load (threads waiting for each other count only while they spin)",
            "memory": "peak live CPU tensor bytes above what was live before (the weights), from the "
            "allocation events of torch.profiler(profile_memory=True); training: the first AdamW step, "
            "so optimizer state and gradients included; generate: one call, cache included",
        },
        "models": {
            c.name: {
                "parameters": c.parameters,
                "train": summarize(c.train, train_tokens),
                "generate": summarize(c.generate, args.new_tokens),
                "train_peak_bytes": c.train_peak_bytes,
                "generate_peak_bytes": c.generate_peak_bytes,
            }
            for c in contenders
        },
        "ratios": ratios,
        "targets": [
            {
                "target": text,
                "ratio": key,
                "threshold": threshold,
                "value": ratios["wall"][key]["median"],
                "value_by_cpu_time": ratios["cpu"][key]["median"],
                "met": ratios["wall"][key]["median"] >= threshold,
                # The quartiles of the per-round ratios on both sides: the rounds do not settle it.
                "within_noise": ratios["wall"][key]["low"] < threshold < ratios["wall"][key]["high"],
            }
            for text, key, threshold in TARGETS
        ],
    }


def format_ratio(ratio: dict[str, float]) -> str:
    return f"{ratio['median']:.2f}x ({ratio['low']:.2f}-{ratio['high']:.2f})"


def ratio_cells(ratios: dict, name: str) -> tuple[str, str]:
    if name == "GPT-2":
        return "1.00x", "1.00x"
    key = "ours_off_vs_gpt2" if name == "ours, LSTM off" else "ours_on_vs_gpt2"
    return format_ratio(ratios[f"train_{key}"]), format_ratio(ratios[f"generate_{key}"])


def markdown(results: dict) -> str:
    settings, environment, ratios = results["settings"], results["environment"], results["ratios"]
    mib = 2**20
    lines = [
        f"vocab {settings['vocab_size']}, hidden {settings['hidden_size']}, {settings['num_layers']} layers, "
        f"{settings['num_heads']} heads, intermediate {settings['intermediate_size']}, "
        f"{settings['max_positions']} positions; sdpa attention, dropout 0",
        f"torch {environment['torch']}, transformers {environment['transformers']}, "
        f"{environment['cpu_cores']} CPU cores, torch threads: {environment['torch_threads']}, "
        f"OMP_WAIT_POLICY: {environment['omp_wait_policy']}, load average after the run: {environment['load_average_after'][0]:.1f}",
        f"training: AdamW, batch {settings['batch_size']} x {settings['seq_len']} tokens, "
        f"{settings['rounds']} rounds x {settings['steps_per_round']} steps; "
        f"generate(): batch 1, {settings['prompt_len']}-token prompt, {settings['new_tokens']} new tokens, "
        f"greedy, cache on, {settings['generate_rounds']} rounds",
        "",
        "| model | parameters | train tok/s | train vs GPT-2 | generate tok/s | generate vs GPT-2 "
        "| train peak MiB | generate peak MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, figures in results["models"].items():
        train_ratio, generate_ratio = ratio_cells(ratios["wall"], name)
        lines.append(
            f"| {name} | {figures['parameters']:,} | {figures['train']['tokens_per_s']:,.0f} | {train_ratio} "
            f"| {figures['generate']['tokens_per_s']:,.1f} | {generate_ratio} "
            f"| {figures['train_peak_bytes'] / mib:.1f} | {figures['generate_peak_bytes'] / mib:.2f} |"
        )
    lines += [
        "",
        f"LSTM on / LSTM off: training {format_ratio(ratios['wall']['train_lstm_on_vs_off'])}, "
        f"generate {format_ratio(ratios['wall']['generate_lstm_on_vs_off'])}",
        "",
        "By CPU time:",
        "",
        "| model | train tok per CPU-s | train vs GPT-2 | generate tok per CPU-s | generate vs GPT-2 |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, figures in results["models"].items():
        train_ratio, generate_ratio = ratio_cells(ratios["cpu"], name)
        lines.append(
            f"| {name} | {figures['train']['tokens_per_cpu_s']:,.0f} | {train_ratio} "
            f"| {figures['generate']['tokens_per_cpu_s']:,.1f} | {generate_ratio} |"
        )
    lines += [
        "",
        f"LSTM on / LSTM off by CPU time: training {format_ratio(ratios['cpu']['train_lstm_on_vs_off'])}, "
        f"generate {format_ratio(ratios['cpu']['generate_lstm_on_vs_off'])}",
        "",
        f"Throughput: {results['method']['throughput']}. Ratios: {results['method']['ratios']}.",
        f"CPU time: {results['method']['cpu_time']}.",
        f"Peak memory: {results['method']['memory']}.",
        "",
        "Targets (median of the per-round wall-clock ratios):"
        + (" a --quick run is a smoke test, not a measurement." if settings["quick"] else ""),
    ]
    for target in results["targets"]:
        verdict = "met" if target["met"] else "NOT met"
        if target["within_noise"]:
            verdict += ", within noise: the quartiles of the per-round ratios straddle the threshold"
        lines.append(
            f"- {target['target']} >= {target['threshold']:.2f}: {target['value']:.3f} "
            f"(by CPU time: {target['value_by_cpu_time']:.3f}) -> {verdict}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    results = run(args)
    print(markdown(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
