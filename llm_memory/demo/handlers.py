"""The demo's event handlers: each calls a task and turns its result into the values of Gradio components.

Pure functions of their inputs, bound to the loaded models with ``partial`` in the layout (``tabs``). A
task's ``InputError`` reaches the user as a ``gr.Error`` that says what to change; notices (control
characters removed, text cut to the window) as ``gr.Warning``.
"""

import contextlib
import html
from collections.abc import Iterator

import gradio as gr

from llm_memory.demo.figures import attention_figures
from llm_memory.generation_settings import GENERATION_DEFAULTS as DEFAULTS
from llm_memory.serving.models import Models
from llm_memory.tasks.attention import attention as tasks_attention
from llm_memory.tasks.checks import InputError, count_removed_characters
from llm_memory.tasks.classify import classify as tasks_classify
from llm_memory.tasks.generate import GenerationUpdate, generate_stream
from llm_memory.tasks.summarize import summarize as tasks_summarize


@contextlib.contextmanager
def user_errors():
    """Turns every exception into ``gr.Error``, which Gradio shows to the user and to API clients: an
    ``InputError`` says what to change in the input; anything else (a decoding process that died, a
    model that failed) says what happened instead of Gradio's bare "error: null"."""
    try:
        yield
    except gr.Error:
        raise
    except InputError as err:
        # gr.Error renders HTML, and the message may quote the caller's input.
        raise gr.Error(
            html.escape(str(err), quote=False), title="Invalid input", print_exception=False
        ) from err
    except Exception as err:
        message = str(err) or type(err).__name__
        raise gr.Error(
            html.escape(
                f"{message} Try again; if it keeps failing, the server's log has the details.", quote=False
            ),
            title="The request failed",
        ) from err


def warn_cleaned(text, max_chars: int) -> None:
    """A notice when control characters were removed from ``text``; errors are left to the task."""
    try:
        removed = count_removed_characters(text, max_chars)
    except InputError:
        return
    if removed:
        gr.Warning(f"Removed {removed} control character(s) from the text.")


def warn_truncated(truncated_tokens: int, what: str, side: str = "right") -> None:
    if truncated_tokens:
        end = "first" if side == "left" else "last"
        gr.Warning(
            f"The text is longer than the model's window: the {end} {truncated_tokens} tokens were {what}."
        )


def speed_text(update: GenerationUpdate) -> str:
    text = (
        f"{update.num_tokens} tokens in {update.seconds:.2f} s · **{update.tokens_per_second:.1f} tokens/s**"
    )
    if update.seed is not None:
        text += f" · seed {update.seed} (enter it to get this text again)"
    if update.dropped_prompt_tokens:
        text += f" · the first {update.dropped_prompt_tokens} prompt tokens were dropped to fit the window"
    return text + (" · done" if update.done else "")


# The API's parameters and defaults: Gradio reads them from this signature, so each default names
# its source in generation_settings; the task checks every value itself.
def generate(
    models: Models,
    prompt: str,
    strategy: str = DEFAULTS.strategy,
    max_new_tokens: int | None = None,
    temperature: float = DEFAULTS.temperature,
    top_k: int = DEFAULTS.top_k,
    top_p: float = DEFAULTS.top_p,
    repetition_penalty: float = DEFAULTS.repetition_penalty,
    num_beams: int = DEFAULTS.num_beams,
    seed: int = DEFAULTS.seed,
    no_repeat_ngram_size: int = DEFAULTS.no_repeat_ngram_size,
) -> Iterator[tuple[str, str]]:
    with user_errors():
        warn_cleaned(prompt, models.settings.max_input_chars)
        for update in generate_stream(
            models,
            prompt,
            strategy=strategy,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
            num_beams=num_beams,
            seed=seed,
            # Text reaches the page at most every stream_interval_s: a message per token multiplies
            # Gradio's work per request by the tokens, and 10 updates a second read as smoothly.
            min_interval_s=models.settings.stream_interval_s,
        ):
            yield update.text, speed_text(update)


def classify(models: Models, text: str):
    with user_errors():
        warn_cleaned(text, models.settings.max_input_chars)
        result = tasks_classify(models, text)
    warn_truncated(result.truncated_tokens, "not read", result.truncated_side)
    return result.probabilities, result.highlights()


def summarize(models: Models, text: str, num_sentences: int = 3, method: str | None = None):
    with user_errors():
        warn_cleaned(text, models.settings.max_input_chars)
        result = tasks_summarize(models, text, num_sentences, method)
    return result.summary, result.marked()


def attention(
    models: Models,
    text: str,
    layer: int = 0,
    head: int = 0,
    token_index: int = -1,
    average_heads: bool = False,
):
    with user_errors():
        warn_cleaned(text, models.settings.max_input_chars)
        result = tasks_attention(models, text, layer, head, token_index, average_heads)
    warn_truncated(result.truncated_tokens, "left out")
    query = result.pieces[result.token_index]
    heads = "all heads averaged" if result.head is None else f"head {result.head}"
    info = (
        f"{len(result.pieces)} pieces · attention from piece {result.token_index} "
        f"(`{query}`) in layer {result.layer}, {heads}. Click a piece to look from it."
    )
    heatmap, grid = attention_figures(result)
    return result.highlights, heatmap, grid, info


def select_piece(event: gr.SelectData) -> int:
    """The index of the clicked piece of the highlighted text, as the new query."""
    return event.index


def last_piece() -> int:
    """The query for a new text: its last piece, since the old index may lie past its end."""
    return -1
