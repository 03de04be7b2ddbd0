"""Decoding settings: their defaults and ranges, defined once.

The demo's sliders, the task functions' input checks, the command line and the ``generation_config``
saved with a trained language model all read them from here. The defaults avoid loops: no 4-gram
repeats within a text and a mild repetition penalty (``bench/generation_defaults.py`` measures each).
"""

from dataclasses import asdict, dataclass

STRATEGIES = ("greedy", "sample", "beam")
DEFAULT_MAX_NEW_TOKENS = 64
# (low, high) of each setting, inclusive. max_new_tokens is also capped by the model's window.
GENERATION_RANGES = {
    "max_new_tokens": (1, 256),
    "temperature": (0.1, 2.0),
    "top_k": (0, 200),  # 0 turns top-k off
    "top_p": (0.05, 1.0),
    "repetition_penalty": (1.0, 2.0),
    "no_repeat_ngram_size": (0, 8),  # 0 turns it off
    "num_beams": (2, 8),
    "seed": (-1, 2**31 - 1),  # -1 draws a fresh seed
}


@dataclass(frozen=True)
class GenerationSettings:
    """The decoding settings of one request, with their defaults. ``seed`` -1 draws a fresh seed per
    request; the seed drawn is reported with the text, so a text can be made again."""

    strategy: str = "sample"
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.95
    repetition_penalty: float = 1.1
    no_repeat_ngram_size: int = 4
    num_beams: int = 4
    seed: int = -1


GENERATION_DEFAULTS = GenerationSettings()


def generation_config_defaults(settings: GenerationSettings = GENERATION_DEFAULTS) -> dict:
    """The settings as ``GenerationConfig`` fields, for the generation config saved with a language
    model: ``generate()`` and ``pipeline("text-generation")`` then decode as the demo does."""
    values = asdict(settings)
    return {
        "do_sample": values.pop("strategy") == "sample",
        **{name: values[name] for name in ("max_new_tokens", "temperature", "top_k", "top_p")},
        **{name: values[name] for name in ("repetition_penalty", "no_repeat_ngram_size")},
    }
