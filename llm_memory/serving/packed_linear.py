"""Linear layers served by oneDNN's fp32 kernels on the CPU, for inference.

PyTorch runs an fp32 ``nn.Linear`` on the CPU through MKL's sgemm, with the weight in its plain layout.
oneDNN, which PyTorch also ships, has fp32 kernels (``torch.ops.mkldnn._linear_pointwise``) that take
the weight once in their own blocked layout. The arithmetic is the same fp32: outputs agree to
~1e-6 (only the order of the sums differs) and the sampled texts are the same token for token.
``bench/packed_linear.py`` measures both side by side; docs/serving.md has the figures.

``pack_linears(model)`` swaps each ``nn.Linear`` for a ``PackedLinear`` that shares its parameters
(the state dict, tied weights and ``save_pretrained`` do not change) and keeps a packed copy of the
weight, used only where no gradient is needed. A weight that changed since (in place, as an optimizer
step or ``load_state_dict`` do, or replaced) is packed again on its next use.

Whether the packed kernel wins depends on the machine and on the rows of a call: on some days of this
project's CPU it was faster from one row, on others it cost ~12 us more per call below 16 rows and won
only from there. So ``pack_linears`` times both kernels on one of the model's layers at 1, 4 and 16
rows and takes the packed one only from the fewest rows where it wins (``choose_min_rows``), or not at
all.
"""

import logging
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

logger = logging.getLogger(__name__)

# Rows the packed layout is tuned for: a decoding step of a full batch.
PACK_BATCH_SIZE = 16
# Rows per call at which the two kernels are timed against each other.
ROW_CANDIDATES = (1, 4, 16)
# ``min_rows`` when the packed kernel never won: no call takes it.
NEVER = 2**62


def available() -> bool:
    """Whether this is an x86-64 CPU (where it was measured) and PyTorch has oneDNN and the packed
    linear kernel (the serving settings' ``packed_linear``, LLM_MEMORY_PACKED_LINEAR=0, opt out)."""
    return (
        platform.machine().lower() in ("x86_64", "amd64")
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    )


class PackedLinear(nn.Linear):
    """An ``nn.Linear`` that computes inference (no gradient, fp32, CPU) with a oneDNN-packed weight."""

    def __init__(self, linear: nn.Linear, min_rows: int = 1):
        nn.Module.__init__(self)
        self.min_rows = min_rows  # calls with fewer rows (tokens) take nn.Linear's kernel
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias  # the same Parameters, not copies
        self._packed: torch.Tensor | None = None
        self._packed_from: tuple | None = None  # (the weight packed, (its storage's address, its version))

    def _packed_weight(self) -> torch.Tensor:
        # A new Parameter (weights tied or resized), new data under it (``.data =``) or an in-place
        # change (an optimizer step, ``load_state_dict``) each make the packed copy stale.
        weight = self.weight
        state = (weight.data_ptr(), weight._version)
        if self._packed is None or self._packed_from[0] is not weight or self._packed_from[1] != state:
            self._packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACK_BATCH_SIZE)
            self._packed_from = (weight, state)
        return self._packed

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if (
            torch.is_grad_enabled()
            or input.device.type != "cpu"
            or self.weight.device.type != "cpu"
            or input.dtype != torch.float32
            or self.weight.dtype != torch.float32
            or input.numel() < self.min_rows * self.in_features
        ):
            return super().forward(input)
        return torch.ops.mkldnn._linear_pointwise(input, self._packed_weight(), self.bias, "none", [], "")


def works() -> bool:
    """Whether the packed kernel runs here and gives nn.Linear's result, on a small layer."""
    with torch.random.fork_rng(devices=[]):  # leaves the caller's random numbers as they were
        torch.manual_seed(0)
        linear = nn.Linear(32, 48)
        inputs = torch.randn(3, 32)
    try:
        with torch.no_grad():
            return torch.allclose(PackedLinear(linear)(inputs), linear(inputs), rtol=1e-4, atol=1e-5)
    except RuntimeError:
        return False


def kernel_seconds(
    layer: nn.Linear, rows: tuple[int, ...] = ROW_CANDIDATES, calls: int = 20, rounds: int = 5
) -> dict[int, tuple[float, float]]:
    """Seconds per call of ``layer`` at each number of rows: (nn.Linear, packed), each the median of
    ``rounds`` that take turns, so that both see the same load."""
    packed = PackedLinear(layer)
    timings = {}
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for count in rows:
            inputs = torch.randn(count, layer.in_features)
            kernels = (
                lambda x=inputs: nn.Linear.forward(packed, x),
                lambda x=inputs: packed(x),
            )
            for kernel in kernels:  # warm-up: packing, oneDNN's primitive cache
                kernel()
            seconds: tuple[list[float], list[float]] = ([], [])
            for _ in range(rounds):
                for kernel, times in zip(kernels, seconds, strict=True):
                    start = time.perf_counter()
                    for _ in range(calls):
                        kernel()
                    times.append((time.perf_counter() - start) / calls)
            timings[count] = (statistics.median(seconds[0]), statistics.median(seconds[1]))
    return timings


def choose_min_rows(timings: dict[int, tuple[float, float]]) -> int:
    """The fewest rows from which the packed kernel was faster at every timed count, else ``NEVER``."""
    chosen = NEVER
    for count in sorted(timings, reverse=True):
        plain, packed = timings[count]
        if packed >= plain:
            break
        chosen = count
    return chosen


def pack_linears(
    model: nn.Module, min_rows: int | None = None, timer: Callable[[nn.Linear], dict] | None = None
) -> int:
    """Swaps ``nn.Linear`` layers of ``model`` for ``PackedLinear`` in place; returns how many. Does
    nothing where oneDNN is missing (``available``) or its kernel fails a check (``works``). Each
    shape of fp32 CPU layer is timed once (``timer``) and its layers take the packed kernel from the
    fewest rows where it won (``choose_min_rows``); a shape where it never won stays ``nn.Linear``.
    A given ``min_rows`` skips the timing and packs every layer."""
    if not (available() and works()):
        return 0
    timer = timer or kernel_seconds
    names = [
        name
        for name, module in model.named_modules()
        if type(module) is nn.Linear  # not subclasses, whose forward may do more
    ]
    chosen: dict[tuple, int] = {}  # (in, out, bias) -> min_rows
    swapped = 0
    for name in names:
        layer = model.get_submodule(name)
        served = layer.weight.device.type == "cpu" and layer.weight.dtype == torch.float32
        rows = 1 if min_rows is None and not served else min_rows
        if rows is None:
            shape = (layer.in_features, layer.out_features, layer.bias is not None)
            if shape not in chosen:
                timings = timer(layer)
                chosen[shape] = choose_min_rows(timings)
                logger.info(
                    "Linear %s x %s: packed from %s rows (nn.Linear / packed, us per call: %s)",
                    shape[0],
                    shape[1],
                    "no" if chosen[shape] == NEVER else chosen[shape],
                    ", ".join(f"{n} rows {a * 1e6:.0f}/{b * 1e6:.0f}" for n, (a, b) in timings.items()),
                )
            rows = chosen[shape]
        if rows == NEVER:
            continue
        packed = PackedLinear(layer, rows)
        if served:
            packed._packed_weight()  # now, not in the first request
        model.set_submodule(name, packed)
        swapped += 1
    return swapped
