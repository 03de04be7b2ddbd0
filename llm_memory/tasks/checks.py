"""The checks of a task's inputs: text cleaned of control characters, numbers within their ranges.

Every check raises ``InputError``, whose message says what is allowed; the demo shows it to the user
as it is, and the command line prints it.
"""

import math
import unicodedata
from collections.abc import Sequence

from llm_memory.generation_settings import GENERATION_RANGES
from llm_memory.serving.settings import SERVE_DEFAULTS

# (low, high) of each parameter, inclusive: the decoding settings' (llm_memory/generation_settings.py)
# and the summary's.
RANGES = {**GENERATION_RANGES, "num_sentences": (1, 10)}
INTEGER_PARAMETERS = {
    "max_new_tokens",
    "top_k",
    "no_repeat_ngram_size",
    "num_beams",
    "seed",
    "num_sentences",
    "layer",
    "head",
    "token_index",
}


class InputError(ValueError):
    """A bad request (empty text, a parameter out of range); the message says what is allowed."""


def clean_text(text, what: str = "text", max_chars: int = SERVE_DEFAULTS.max_input_chars) -> str:
    """``text`` without control characters (tabs and newlines stay); refuses empty text and text longer
    than ``max_chars``."""
    if not isinstance(text, str):
        raise InputError(f"The {what} must be a string, got {type(text).__name__}.")
    if len(text) > max_chars:
        raise InputError(
            f"The {what} is {len(text):,} characters long; the limit is {max_chars:,} characters. "
            "Shorten it and try again."
        )
    text = text.replace("\r\n", "\n")
    # Cc are the C0/C1 controls (NUL, BEL, ESC...), Cs lone surrogates that no encoder accepts. Format
    # characters (Cf) stay: the zero-width joiner holds emoji such as 👩‍💻 together.
    cleaned = "".join(ch for ch in text if ch in "\t\n" or unicodedata.category(ch) not in ("Cc", "Cs"))
    if not cleaned.strip():
        raise InputError(f"The {what} is empty; type some text first.")
    return cleaned


def count_removed_characters(text: str, max_chars: int = SERVE_DEFAULTS.max_input_chars) -> int:
    """How many characters ``clean_text`` drops, so that a UI can say so."""
    cleaned = clean_text(text, max_chars=max_chars)  # first: it refuses what is not a string
    return len(text.replace("\r\n", "\n")) - len(cleaned)


def check_number(name: str, value, low=None, high=None) -> int | float:
    """``value`` as a number within ``RANGES[name]`` (or [low, high]); an InputError names the range."""
    default_low, default_high = RANGES.get(name, (None, None))
    low = default_low if low is None else low
    high = default_high if high is None else high
    integer = name in INTEGER_PARAMETERS
    allowed = f"{'an integer' if integer else 'a number'} from {low} to {high}"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{name} must be {allowed}, got {value!r}.")
    if integer:
        if value != int(value):
            raise InputError(f"{name} must be {allowed}, got {value!r}.")
        value = int(value)
    if not low <= value <= high:
        raise InputError(f"{name} must be {allowed}, got {value}.")
    return value


def check_choice(name: str, value, choices: Sequence[str]) -> str:
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(choices)}; got {value!r}.")
    return value
