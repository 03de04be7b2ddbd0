"""Trainer callbacks of a run: throughput and model FLOPs utilization in the logs, and a stop on a NaN loss.

MFU follows PaLM (Chowdhery et al., 2022, appendix B): training FLOPs per token are 6N for the
forward and backward matrix products plus 12·L·H·T for attention, against the device's peak.
"""

import math
import time

import torch
from torch import nn
from transformers import TrainerCallback

# Dense bf16 tensor-core peak per device from the vendors' datasheets (no sparsity); the longest matching
# name wins, so "H100 PCIe" is found before "H100" and "A100" before "A10".
PEAK_BF16_FLOPS = {
    "B200": 2250e12,
    "GH200": 989e12,
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "A10": 125e12,
    "L40S": 362e12,
    "L4": 121e12,
}


def matmul_parameters(model: nn.Module) -> int:
    """Parameters used in matrix products: all but embedding lookups, plus a tied output projection."""
    embedding_ids = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    count = sum(p.numel() for p in model.parameters() if id(p) not in embedding_ids)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and id(head.weight) in embedding_ids:
        count += head.weight.numel()
    return count


def training_flops_per_token(model: nn.Module, seq_len: int) -> float:
    """6N for the forward and backward matmuls plus 12·L·H·T for attention (PaLM, appendix B)."""
    config = model.config
    return 6 * matmul_parameters(model) + 12 * config.num_hidden_layers * config.hidden_size * seq_len


def device_peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).lower()
    for key in sorted(PEAK_BF16_FLOPS, key=len, reverse=True):
        if key.lower() in name:
            return PEAK_BF16_FLOPS[key]
    return None


class ThroughputCallback(TrainerCallback):
    """Adds ``tokens_per_second`` and ``mfu`` (model FLOPs utilization) to each training log.

    Tokens are the Trainer's count of input tokens over all processes (``--include_num_input_tokens_seen``,
    on by default here); time is the time spent inside training steps since the last log, so evaluation
    and checkpointing do not count.
    MFU = tokens/s per device × training FLOPs per token / the device's peak FLOP/s (absent when the
    peak is unknown, e.g. on a CPU).
    """

    def __init__(self, flops_per_token: float, peak_flops: float | None, num_processes: int):
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self.num_processes = num_processes
        self._tokens_at_log = 0
        self._step_seconds = 0.0
        self._step_start = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._tokens_at_log = state.num_input_tokens_seen  # nonzero when resuming

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._step_start is not None:
            self._step_seconds += time.perf_counter() - self._step_start

    def on_log(self, args, state, control, logs=None, **kwargs):
        tokens = state.num_input_tokens_seen - self._tokens_at_log
        if logs is None or "loss" not in logs or tokens <= 0 or self._step_seconds <= 0:
            return
        throughput = {"tokens_per_second": round(tokens / self._step_seconds, 1)}
        if self.peak_flops:
            per_device = tokens / self._step_seconds / self.num_processes
            throughput["mfu"] = round(per_device * self.flops_per_token / self.peak_flops, 4)
        # The printed line and the later callbacks read `logs`; the saved history is its own copy.
        logs.update(throughput)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(throughput)
        self._tokens_at_log = state.num_input_tokens_seen
        self._step_seconds = 0.0


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class NonFiniteLossCallback(TrainerCallback):
    """Stops training at the first log whose loss (or gradient norm) is NaN or infinite.

    Logged values are averaged over all processes, so every process stops at the same step. The
    checkpoint of that step is not saved, and ``run`` then raises TrainingDiverged instead of writing
    a model. Needs ``--logging_nan_inf_filter false`` (this script's default), or the Trainer hides a
    NaN loss behind the previous average.
    """

    def __init__(self):
        self.diverged: tuple[int, str, float] | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        # With fp16 an infinite gradient norm only makes the loss scaler skip a step.
        keys = ("loss", "eval_loss") if args.fp16 else ("loss", "grad_norm", "eval_loss")
        for key in keys:
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(value) and self.diverged is None:
                self.diverged = (state.global_step, key, value)
                control.should_training_stop = True
                control.should_save = False
                control.should_evaluate = False


class TimeLimitCallback(TrainerCallback):
    """Ends training once this sitting has trained for ``minutes``: the step reached is evaluated (where
    the run evaluates) and saved as a checkpoint, so ``--resume`` continues from it in a later sitting,
    and the run then finishes as usual (the best checkpoint loaded where the run keeps the best). With
    several processes, the slowest one's clock decides for all."""

    def __init__(self, minutes: float):
        self.seconds = 60 * minutes
        self.start = None
        self.stopped_at: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if self.start is None or state.global_step >= state.max_steps:
            return
        elapsed = time.monotonic() - self.start
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Every process must stop at the same step: the slowest clock decides (one scalar per step).
            value = torch.tensor([elapsed], dtype=torch.float64, device=args.device)
            torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
            elapsed = value.item()
        if elapsed < self.seconds:
            return
        self.stopped_at = state.global_step
        control.should_training_stop = True
        control.should_save = True
        control.should_evaluate = args.eval_strategy != "no"
