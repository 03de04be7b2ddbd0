"""Gradio demo of the memory transformer: generate, classify, summarize and look inside the attention.

Follows the layout of Gradio's own demos: pure handler functions first, then the layout (one tab per
task), then the event wiring, each event with an ``api_name`` so that every tab is also an HTTP API.
The models are loaded once at start; the work itself is done by ``llm_memory.inference``, which the
tests and the command line call too.

    python app.py                                   # the embedded checkpoints/memory-lm and checkpoints/sentiment
    python app.py --model PATH_OR_HUB_ID --classifier PATH_OR_HUB_ID [--summarizer PATH_OR_HUB_ID]
                  [--host 0.0.0.0] [--port 7860] [--share]

Every option has an environment variable (LLM_MEMORY_MODEL, LLM_MEMORY_CLASSIFIER, LLM_MEMORY_SUMMARIZER,
LLM_MEMORY_HOST, LLM_MEMORY_PORT); GRADIO_SERVER_NAME and GRADIO_SERVER_PORT work too, as on a Space.
"""

import argparse
import contextlib
import gc
import html
import os
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import gradio as gr
import torch

from llm_memory import inference
from llm_memory.inference import InputError, ModelLoadError, Models
from llm_memory.memory_tab import add_memory_tab

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL = os.environ.get("LLM_MEMORY_MODEL", str(HERE / "checkpoints" / "memory-lm"))
DEFAULT_CLASSIFIER = os.environ.get("LLM_MEMORY_CLASSIFIER", str(HERE / "checkpoints" / "sentiment"))
# Optional: checkpoints/summarizer is used when it exists.
_EMBEDDED_SUMMARIZER = HERE / "checkpoints" / "summarizer"
# Fine-tuned on the passkey probes: shown beside the demo model in the Memory tab when present.
MEMORY_MODEL = Path(os.environ.get("LLM_MEMORY_MEMORY_MODEL", str(HERE / "checkpoints" / "memory-passkey")))
DEFAULT_SUMMARIZER = os.environ.get("LLM_MEMORY_SUMMARIZER") or (
    str(_EMBEDDED_SUMMARIZER) if _EMBEDDED_SUMMARIZER.is_dir() else None
)
# None leaves the choice to Gradio: GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, else 127.0.0.1:7860.
DEFAULT_HOST = os.environ.get("LLM_MEMORY_HOST")
DEFAULT_PORT = int(os.environ["LLM_MEMORY_PORT"]) if os.environ.get("LLM_MEMORY_PORT") else None
# Jobs the queue runs at once. Generation requests are batched inside inference, so 16 generations at
# once share their decoding steps; Gradio's default of 1 would serve users one after another.
CONCURRENCY = int(os.environ.get("LLM_MEMORY_CONCURRENCY", "16"))
# Jobs that may wait in the queue at once (beyond those running); one more is refused as "queue full".
QUEUE_SIZE = int(os.environ.get("LLM_MEMORY_QUEUE_SIZE", "64"))
# Largest upload Gradio's file route accepts: the app has no file inputs.
MAX_FILE_SIZE = "1mb"
# Sessions whose state Gradio keeps (oldest dropped first); its default of 10,000 lets REST callers grow
# the server by ~0.22 MB each, to ~2 GB. The app keeps no state of its own between requests.
SESSION_CAPACITY = 500
# Seconds between two streamed updates of the generated text.
STREAM_INTERVAL_S = float(os.environ.get("LLM_MEMORY_STREAM_INTERVAL_MS", "100")) / 1000
# Torch threads per operation. Requests already run side by side on their own threads; each asking
# for every core as well makes the threads fight over a small CPU (10x slower on 2 busy cores).
TORCH_THREADS = int(os.environ.get("LLM_MEMORY_TORCH_THREADS", "1"))
# Sampled and greedy generation is decoded in a child process, where the server's own threads do not
# hold up its steps (llm_memory/decoder_process.py; it hands the child its pipe as on POSIX systems);
# 0 decodes in the server's process, as on Windows.
DECODER_PROCESS = os.environ.get("LLM_MEMORY_DECODER_PROCESS", "1" if os.name == "posix" else "0") != "0"

# The flag and variable that choose each model, for the startup error.
MODEL_OPTIONS = {
    "model": ("--model", "LLM_MEMORY_MODEL"),
    "classifier": ("--classifier", "LLM_MEMORY_CLASSIFIER"),
    "summarizer": ("--summarizer", "LLM_MEMORY_SUMMARIZER"),
}

GENERATE_EXAMPLES = [
    "The movie was",
    "I watched this film last night, and",
    "The best thing about the story is",
]
CLASSIFY_EXAMPLES = [
    "A wonderful, moving film with a brilliant cast. I loved every minute of it.",
    "Dull, predictable and far too long. I wanted my money back.",
    "The plot was thin, but the acting saved it 😀",
]
SUMMARIZE_EXAMPLES = [
    "The queue holds the jobs that wait for a worker. Each job is taken in the order it arrived. "
    "A worker runs one job at a time and then asks for the next. When no worker is free, new jobs wait "
    "in the queue. The size of the queue can be limited, in which case a full queue refuses new jobs. "
    "Jobs that fail are reported to the caller and are not retried.",
    "This film follows a family over one summer. The children spend their days by the lake. Their parents "
    "argue about money and about the future of the farm. By the end of the summer the farm is sold. "
    "The last scene shows the lake in winter, empty and quiet.",
]
# What each sentence-salience method does, and why lead is the default (inference.DEFAULT_SUMMARY_METHOD;
# bench/summarize_rouge.py, figures in docs/benchmarks.md).
SUMMARY_METHODS_INFO = (
    "lead: the first sentences, the default: best on the docstring benchmark (ROUGE-1 19.7; attention "
    "18.0, centroid 14.8, random 15.0) · summarizer: the sentences closest to a summarization model's "
    "abstract (with --summarizer) · centroid: closeness to the document's mean embedding · attention: "
    "attention received"
)
ATTENTION_EXAMPLES = [
    "我喜欢编程",
    "The cat sat on the mat because it was tired.",
    "Emoji such as 👩‍💻 and 🇫🇷 stay whole.",
]


def slider(minimum: float, maximum: float, **kwargs) -> gr.Slider:
    """``gr.Slider`` that passes an API caller's out-of-range value on to the task function.

    The task then refuses it with a message naming the parameter and its range, where Gradio's own
    check says only "Value 9 is greater than maximum value 8". The browser slider cannot leave its range.
    The check is all that the slider's preprocessing does; an instance attribute replaces it, since a
    subclass would make Gradio write a type stub next to this file.
    """
    component = gr.Slider(minimum, maximum, **kwargs)
    component.preprocess = lambda payload: payload
    return component


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


def _warn_cleaned(text) -> None:
    """A notice when control characters were removed from ``text``; errors are left to the task."""
    try:
        removed = inference.count_removed_characters(text)
    except InputError:
        return
    if removed:
        gr.Warning(f"Removed {removed} control character(s) from the text.")


def _warn_truncated(truncated_tokens: int, what: str, side: str = "right") -> None:
    if truncated_tokens:
        end = "first" if side == "left" else "last"
        gr.Warning(
            f"The text is longer than the model's window: the {end} {truncated_tokens} tokens were {what}."
        )


# ---------------------------------------------------------------------------------------------------
# Handlers
# ---------------------------------------------------------------------------------------------------


def speed_text(update: inference.GenerationUpdate) -> str:
    text = (
        f"{update.num_tokens} tokens in {update.seconds:.2f} s · **{update.tokens_per_second:.1f} tokens/s**"
    )
    if update.seed is not None:
        text += f" · seed {update.seed} (enter it to get this text again)"
    if update.dropped_prompt_tokens:
        text += f" · the first {update.dropped_prompt_tokens} prompt tokens were dropped to fit the window"
    return text + (" · done" if update.done else "")


DEFAULTS = inference.GENERATION_DEFAULTS


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
        _warn_cleaned(prompt)
        for update in inference.generate_stream(
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
            # Text reaches the page at most every STREAM_INTERVAL_S: a message per token multiplies
            # Gradio's work per request by the tokens, and 10 updates a second read as smoothly.
            min_interval_s=STREAM_INTERVAL_S,
        ):
            yield update.text, speed_text(update)


def classify(models: Models, text: str):
    with user_errors():
        _warn_cleaned(text)
        result = inference.classify(models, text)
    _warn_truncated(result.truncated_tokens, "not read", result.truncated_side)
    return result.probabilities, result.highlights()


def summarize(models: Models, text: str, num_sentences: int = 3, method: str | None = None):
    with user_errors():
        _warn_cleaned(text)
        result = inference.summarize(models, text, num_sentences, method)
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
        _warn_cleaned(text)
        result = inference.attention(models, text, layer, head, token_index, average_heads)
    _warn_truncated(result.truncated_tokens, "left out")
    query = result.pieces[result.token_index]
    heads = "all heads averaged" if result.head is None else f"head {result.head}"
    info = (
        f"{len(result.pieces)} pieces · attention from piece {result.token_index} "
        f"(`{query}`) in layer {result.layer}, {heads}. Click a piece to look from it."
    )
    return result.highlights, result.heatmap, result.grid, info


def select_piece(event: gr.SelectData) -> int:
    """The index of the clicked piece of the highlighted text, as the new query."""
    return event.index


def last_piece() -> int:
    """The query for a new text: its last piece, since the old index may lie past its end."""
    return -1


# ---------------------------------------------------------------------------------------------------
# Layout and wiring, one function per tab
# ---------------------------------------------------------------------------------------------------


def generate_tab(models: Models) -> None:
    with gr.Tab("Generate", id="generate"):
        prompt = gr.Textbox(label="Prompt", lines=3, value=GENERATE_EXAMPLES[0], elem_id="generate-prompt")
        gr.Examples(GENERATE_EXAMPLES, inputs=[prompt])
        with gr.Accordion("Decoding settings", open=False):
            strategy = gr.Radio(list(inference.STRATEGIES), value=DEFAULTS.strategy, label="Strategy")
            with gr.Row():
                max_new_tokens = slider(
                    1,
                    models.max_new_tokens,
                    value=models.default_max_new_tokens,
                    step=1,
                    label="max_new_tokens",
                )
                temperature = slider(
                    *inference.RANGES["temperature"],
                    value=DEFAULTS.temperature,
                    step=0.05,
                    label="temperature",
                )
                top_k = slider(
                    *inference.RANGES["top_k"], value=DEFAULTS.top_k, step=1, label="top_k (0 = off)"
                )
                top_p = slider(*inference.RANGES["top_p"], value=DEFAULTS.top_p, step=0.01, label="top_p")
            with gr.Row():
                repetition_penalty = slider(
                    *inference.RANGES["repetition_penalty"],
                    value=DEFAULTS.repetition_penalty,
                    step=0.05,
                    label="repetition_penalty",
                )
                no_repeat_ngram_size = slider(
                    *inference.RANGES["no_repeat_ngram_size"],
                    value=DEFAULTS.no_repeat_ngram_size,
                    step=1,
                    label="no_repeat_ngram_size (0 = off)",
                )
                num_beams = slider(
                    *inference.RANGES["num_beams"],
                    value=DEFAULTS.num_beams,
                    step=1,
                    label="num_beams (beam only)",
                )
                seed = gr.Number(
                    value=DEFAULTS.seed,
                    precision=0,
                    label="seed (-1 = a fresh one each time; the one used is shown below the text)",
                )
        with gr.Row():
            run = gr.Button("Generate", variant="primary")
            stop = gr.Button("Stop", variant="stop")
        output = gr.Textbox(label="Continuation", lines=6, interactive=False, elem_id="generate-output")
        speed = gr.Markdown(elem_id="generate-speed")

    settings = [
        strategy,
        max_new_tokens,
        temperature,
        top_k,
        top_p,
        repetition_penalty,
        num_beams,
        seed,
        no_repeat_ngram_size,  # last, so that positional API calls made before it keep their meaning
    ]
    event = gr.on(
        [run.click, prompt.submit],
        partial(generate, models),
        inputs=[prompt, *settings],
        outputs=[output, speed],
        api_name="generate",
        # The inputs reach generate() as sent and its outputs go out as returned: the task checks every
        # input itself, and a Textbox, Radio, Slider or Number does no more than pass a value through.
        # Gradio would otherwise run each input's preprocess and each streamed output's postprocess on a
        # worker thread, one hop each: 9 per request and 2 per update. Traced, in a burst of 16 requests
        # those hops, waiting on one interpreter lock, held the requests back ~35 ms before the model
        # saw them (bench/app_speed.py times such bursts).
        preprocess=False,
        postprocess=False,
    )
    stop.click(None, cancels=[event])


def classify_tab(models: Models) -> None:
    with gr.Tab("Classify", id="classify"):
        text = gr.Textbox(label="Text", lines=3, value=CLASSIFY_EXAMPLES[0], elem_id="classify-text")
        gr.Examples(CLASSIFY_EXAMPLES, inputs=[text])
        run = gr.Button("Classify", variant="primary")
        with gr.Row():
            probabilities = gr.Label(label="Label probabilities", elem_id="classify-label")
            pieces = gr.HighlightedText(
                label="Evidence for the top label (red) and against it (blue): gradient x input",
                elem_id="classify-pieces",
            )

    gr.on(
        [run.click, text.submit],
        partial(classify, models),
        inputs=[text],
        outputs=[probabilities, pieces],
        api_name="classify",
    )


def summarize_tab(models: Models) -> None:
    kind = "abstractive, from the summarizer" if models.summarizer is not None else "the picked sentences"
    with gr.Tab("Summarize", id="summarize"):
        text = gr.Textbox(label="Document", lines=6, value=SUMMARIZE_EXAMPLES[0], elem_id="summarize-text")
        gr.Examples(SUMMARIZE_EXAMPLES, inputs=[text])
        with gr.Row():
            num_sentences = slider(
                *inference.RANGES["num_sentences"], value=3, step=1, label="Sentences to pick"
            )
            method = gr.Radio(
                [m for m in inference.SUMMARY_METHODS if m != "summarizer" or models.summarizer is not None],
                value=inference.DEFAULT_SUMMARY_METHOD,
                label="Sentence salience",
                info=SUMMARY_METHODS_INFO,
            )
        run = gr.Button("Summarize", variant="primary")
        summary = gr.Textbox(
            label=f"Summary ({kind})", lines=3, interactive=False, elem_id="summarize-summary"
        )
        marked = gr.HighlightedText(
            label="The document, picked sentences marked",
            color_map={"summary": "green"},
            elem_id="summarize-marked",
        )

    gr.on(
        [run.click],
        partial(summarize, models),
        inputs=[text, num_sentences, method],
        outputs=[summary, marked],
        api_name="summarize",
    )


def attention_tab(models: Models) -> None:
    with gr.Tab("Attention", id="attention"):
        text = gr.Textbox(label="Text", lines=2, value=ATTENTION_EXAMPLES[0], elem_id="attention-text")
        gr.Examples(ATTENTION_EXAMPLES, inputs=[text])
        with gr.Row():
            layer = slider(0, models.num_layers - 1, value=0, step=1, label="Layer")
            head = slider(0, models.num_heads - 1, value=0, step=1, label="Head")
            token_index = gr.Number(value=-1, precision=0, label="Query piece (-1 = last)")
            average_heads = gr.Checkbox(value=False, label="Average the heads")
        run = gr.Button("Show attention", variant="primary")
        info = gr.Markdown(elem_id="attention-info")
        highlights = gr.HighlightedText(
            label="Attention from the query piece (click a piece to choose it)",
            elem_id="attention-highlights",
        )
        heatmap = gr.Plot(label="Heatmap: queries down, keys across", elem_id="attention-heatmap")
        grid = gr.Plot(label="Every layer and head", elem_id="attention-grid")

    inputs = [text, layer, head, token_index, average_heads]
    outputs = [highlights, heatmap, grid, info]
    show = partial(attention, models)
    gr.on(
        [run.click, text.submit, layer.release, head.release, average_heads.input, token_index.submit],
        show,
        inputs=inputs,
        outputs=outputs,
        api_name="attention",
    )
    highlights.select(select_piece, None, token_index, api_visibility="private").then(
        show, inputs, outputs, api_visibility="private"
    )
    text.change(last_piece, None, token_index, api_visibility="private", queue=False)


def build_demo(models: Models, concurrency: int = CONCURRENCY) -> gr.Blocks:
    """The whole demo on ``models``, queued to run ``concurrency`` jobs at once; not launched."""
    sources = " · ".join(f"{role}: `{source}`" for role, source in models.sources.items())
    with gr.Blocks(title="llm-memory", analytics_enabled=False) as demo:
        gr.Markdown(
            "# llm-memory\nA compact transformer language model with an LSTM memory layer. "
            f"Window: {models.window} tokens · {models.num_layers} layers x {models.num_heads} heads.\n\n{sources}"
        )
        with gr.Tabs():
            generate_tab(models)
            classify_tab(models)
            summarize_tab(models)
            attention_tab(models)
            # The checkpoint fine-tuned on the probes comes first when it is there: it is the one that
            # remembers past its window.
            memory_models = {}
            if (MEMORY_MODEL / "config.json").is_file():
                memory_models["memory model"] = str(MEMORY_MODEL)
            memory_models["language model"] = (models.lm, models.lm_tokenizer)
            add_memory_tab(memory_models)
    # A bounded queue: past QUEUE_SIZE waiting jobs a request is told the queue is full, rather than
    # waiting minutes while the server's memory grows with every job held.
    demo.queue(default_concurrency_limit=concurrency, max_size=QUEUE_SIZE)
    return demo


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help="Causal LM folder or Hub id (LLM_MEMORY_MODEL)."
    )
    parser.add_argument(
        "--classifier",
        default=DEFAULT_CLASSIFIER,
        help="Sequence classifier folder or Hub id (LLM_MEMORY_CLASSIFIER).",
    )
    parser.add_argument(
        "--summarizer",
        default=DEFAULT_SUMMARIZER,
        help="Summarization-tuned causal LM (document <|sep|> summary) for abstractive summaries (LLM_MEMORY_SUMMARIZER).",
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="Address to serve on, e.g. 0.0.0.0 (LLM_MEMORY_HOST)."
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="Port (LLM_MEMORY_PORT; default 7860)."
    )
    parser.add_argument("--share", action="store_true", help="Also serve through a public Gradio share link.")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(TORCH_THREADS)
    try:
        models = inference.load_models(
            args.model, args.classifier, args.summarizer, decoder_process=DECODER_PROCESS
        )
    except ModelLoadError as err:
        flag, variable = MODEL_OPTIONS[err.role]
        sys.exit(f"error: {err}\nPass {flag} with a local model folder or a Hub model id, or set {variable}.")
    demo = build_demo(models)
    # What is loaded by now lives as long as the server: ~0.5 M objects of torch, transformers and
    # Gradio, which every full garbage collection would walk with all requests stalled. Frozen,
    # collections walk only what serving creates.
    gc.freeze()
    # show_error: an exception that no handler turned into a message still reaches the user as one.
    # max_file_size: the app takes no files, but Gradio's upload route is open; this bounds it.
    # state_session_capacity: at most SESSION_CAPACITY sessions' state in memory.
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        show_error=True,
        max_file_size=MAX_FILE_SIZE,
        state_session_capacity=SESSION_CAPACITY,
    )


if __name__ == "__main__":
    main()
