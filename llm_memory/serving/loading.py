"""A model folder loaded for serving, and what the tasks read off a loaded model.

Its window, its eos ids, whether it is tuned to summarize, a generation config of its own. Loading
checks what it reads (a missing folder, a corrupt weights file, NaN weights) and raises
``ModelLoadError`` naming the model that failed; the model comes back in eval mode with gradients off,
its linear layers on oneDNN's packed kernels (``packed_linear``).
"""

import os
import re

from transformers import AutoConfig, AutoTokenizer, GenerationConfig, PreTrainedModel

from llm_memory.serving.packed_linear import pack_linears
from llm_memory.weights import LOAD_ERRORS, check_finite, describe_load_error

# The attention window of a model whose config does not say.
FALLBACK_WINDOW = 1024


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded; ``role`` says which one (model, classifier or summarizer)."""

    def __init__(self, message: str, role: str):
        super().__init__(message)
        self.role = role


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def load_model(path: str, auto_class, role: str, pack: bool = True):
    """(model, tokenizer) from a local folder or a Hub id, in eval mode with gradients off."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        if os.path.exists(path):
            raise ModelLoadError(f"The {role} path {path!r} is a file; it must be a model folder.", role)
        if os.path.isabs(path) or path.startswith(".") or not HUB_ID.match(path):
            raise ModelLoadError(f"The {role} folder {path!r} does not exist.", role)
    elif not os.path.isfile(os.path.join(path, "config.json")):
        raise ModelLoadError(
            f"The {role} folder {path!r} holds no config.json, so no saved model (is it still training?).",
            role,
        )
    try:
        model = auto_class.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        check_finite(model, path)
    except LOAD_ERRORS as err:
        where = "folder" if os.path.isdir(path) else "folder or Hub model id"
        raise ModelLoadError(
            f"Could not load the {role} from the {where} {path!r}: {describe_load_error(path, err)}", role
        ) from err
    if tokenizer.pad_token_id is None:  # GPT-2-style tokenizers: pad with eos, as generate() does
        tokenizer.pad_token = tokenizer.eos_token
    model.eval().requires_grad_(False)
    if pack:
        pack_linears(model)  # oneDNN's fp32 kernels: the same results, faster on the CPU (packed_linear.py)
    return model, tokenizer


def context_window(model: PreTrainedModel, tokenizer) -> int:
    """Tokens one forward pass may hold: the model's positions, else the tokenizer's limit."""
    window = getattr(model.config, "max_position_embeddings", None) or tokenizer.model_max_length
    return int(min(window, FALLBACK_WINDOW))


def is_summarizer(model: PreTrainedModel) -> bool:
    """A checkpoint tuned for ``document <|sep|> summary`` says so in ``config.task_specific_params``."""
    return "summarization" in (getattr(model.config, "task_specific_params", None) or {})


def selector_folder(path: str) -> bool:
    """Whether the folder (or Hub id) holds a sentence selector (``training.selection``); False when its
    config cannot be read, so that loading it as a causal LM reports what is wrong."""
    from llm_memory.training.selection import is_selector

    try:
        return is_selector(AutoConfig.from_pretrained(os.fspath(path)))
    except Exception:  # noqa: BLE001  (load_model says what is wrong with the folder)
        return False


def source_name(path: str) -> str:
    """How a page names a model: a Hub id as it is, a local folder by its own name only (the server's
    paths are nobody else's business)."""
    path = os.fspath(path)
    return os.path.basename(os.path.normpath(path)) if os.path.isdir(path) else path


def eos_token_ids(model: PreTrainedModel, tokenizer) -> set[int]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos if isinstance(eos, list) else [eos] if eos is not None else [])


def plain_generation_config(model, tokenizer, **values) -> GenerationConfig:
    """A config with every default-on processor turned off, whatever the checkpoint's own config says."""
    eos = sorted(eos_token_ids(model, tokenizer)) or None
    return GenerationConfig(
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        **values,
    )
