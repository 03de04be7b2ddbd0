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
"""

import platform

import torch
from torch import nn

# Rows the packed layout is tuned for: a decoding step of a full batch (it serves one row as fast).
PACK_BATCH_SIZE = 16


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

    def __init__(self, linear: nn.Linear):
        nn.Module.__init__(self)
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


def pack_linears(model: nn.Module) -> int:
    """Swaps every ``nn.Linear`` of ``model`` for a ``PackedLinear`` in place; returns how many. Does
    nothing where oneDNN is missing (``available``) or its kernel fails a check (``works``)."""
    if not (available() and works()):
        return 0
    names = [
        name
        for name, module in model.named_modules()
        if type(module) is nn.Linear  # not subclasses, whose forward may do more
    ]
    for name in names:
        packed = PackedLinear(model.get_submodule(name))
        if packed.weight.device.type == "cpu" and packed.weight.dtype == torch.float32:
            packed._packed_weight()  # now, not in the first request
        model.set_submodule(name, packed)
    return len(names)
