"""Checks that a loaded checkpoint's weights are usable, with errors that name the file.

A truncated or corrupt ``model.safetensors`` fails inside safetensors with a message about headers
and offsets; random bytes inside the tensors load silently as NaN, and a model that then answers
"::::::::" tells nobody why. Both the demo and the training command load through these checks.
"""

import os

import torch
from safetensors import SafetensorError

# What from_pretrained raises for a folder it cannot read: missing or unreadable files (OSError), a bad
# config (ValueError, KeyError), a cut or corrupt safetensors file (SafetensorError).
LOAD_ERRORS = (OSError, ValueError, KeyError, SafetensorError)


def weights_file(folder: str) -> str:
    """The weights file a folder's model was read from (for messages)."""
    for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
        if os.path.exists(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return folder


def describe_load_error(folder: str, error: BaseException) -> str:
    """A sentence for a failed load: the file, and what to do."""
    if isinstance(error, SafetensorError):
        return (
            f"the weights file {weights_file(folder)!r} is truncated or corrupt ({error}); copy or download "
            "the checkpoint again."
        )
    return str(error)


def check_finite(model: torch.nn.Module, folder: str) -> None:
    """Raises ValueError naming the first parameter that holds NaN or infinite values, and the file."""
    for name, parameter in model.named_parameters():
        if not torch.isfinite(parameter).all():
            raise ValueError(
                f"the weights file {weights_file(folder)!r} holds NaN or infinite values (first in {name}), so "
                "the checkpoint is corrupt; copy or download it again."
            )
