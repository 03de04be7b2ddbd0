"""The layout of the demo's task tabs and their event wiring, one function per tab.

Follows Gradio's own demos: the layout (``with gr.Tab(...)``), then the wiring, each event with an
``api_name`` so that every tab is also an HTTP API. The sliders' ranges and defaults come from
``llm_memory.generation_settings`` (through the tasks' ``RANGES``), as the tasks' own checks do.
"""

from functools import partial

import gradio as gr

from llm_memory.demo import handlers
from llm_memory.generation_settings import GENERATION_DEFAULTS as DEFAULTS
from llm_memory.generation_settings import STRATEGIES
from llm_memory.serving.models import Models
from llm_memory.tasks.checks import RANGES
from llm_memory.tasks.summarize import available_methods, default_method, is_abstractive

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


# What each sentence-salience method does, and why learned is the default (summarize.default_method;
# bench/summarize_rouge.py, figures in docs/benchmarks.md).
SUMMARY_METHODS_INFO = (
    "learned: a scorer fitted on docstring summaries over the model's contextual sentence embeddings, the "
    "default: best on held-out docstrings (ROUGE-1 20.5; summarizer 20.1, lead 19.7, attention 18.0, "
    "centroid 14.8, random 15.0) · summarizer: the picks of the summarization-tuned sentence selector "
    "(or the sentences closest to an abstractive summarizer's abstract, with --summarizer) · lead: the "
    "first sentences, the default without a scorer · centroid: closeness to the document's mean "
    "embedding · attention: attention received"
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


def generate_tab(models: Models) -> None:
    with gr.Tab("Generate", id="generate"):
        prompt = gr.Textbox(label="Prompt", lines=3, value=GENERATE_EXAMPLES[0], elem_id="generate-prompt")
        gr.Examples(GENERATE_EXAMPLES, inputs=[prompt])
        with gr.Accordion("Decoding settings", open=False):
            strategy = gr.Radio(list(STRATEGIES), value=DEFAULTS.strategy, label="Strategy")
            with gr.Row():
                max_new_tokens = slider(
                    1,
                    models.max_new_tokens,
                    value=models.default_max_new_tokens,
                    step=1,
                    label="max_new_tokens",
                )
                temperature = slider(
                    *RANGES["temperature"],
                    value=DEFAULTS.temperature,
                    step=0.05,
                    label="temperature",
                )
                top_k = slider(*RANGES["top_k"], value=DEFAULTS.top_k, step=1, label="top_k (0 = off)")
                top_p = slider(*RANGES["top_p"], value=DEFAULTS.top_p, step=0.01, label="top_p")
            with gr.Row():
                repetition_penalty = slider(
                    *RANGES["repetition_penalty"],
                    value=DEFAULTS.repetition_penalty,
                    step=0.05,
                    label="repetition_penalty",
                )
                no_repeat_ngram_size = slider(
                    *RANGES["no_repeat_ngram_size"],
                    value=DEFAULTS.no_repeat_ngram_size,
                    step=1,
                    label="no_repeat_ngram_size (0 = off)",
                )
                num_beams = slider(
                    *RANGES["num_beams"],
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
        partial(handlers.generate, models),
        inputs=[prompt, *settings],
        outputs=[output, speed],
        api_name="generate",
        # The inputs reach generate() as sent and its outputs go out as returned: the task checks every
        # input itself, and a worker-thread hop per input and per update would hold a burst back
        # (docs/serving.md has the trace).
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
        partial(handlers.classify, models),
        inputs=[text],
        outputs=[probabilities, pieces],
        api_name="classify",
    )


def summarize_tab(models: Models) -> None:
    kind = "abstractive, from the summarizer" if is_abstractive(models) else "the picked sentences"
    with gr.Tab("Summarize", id="summarize"):
        text = gr.Textbox(label="Document", lines=6, value=SUMMARIZE_EXAMPLES[0], elem_id="summarize-text")
        gr.Examples(SUMMARIZE_EXAMPLES, inputs=[text])
        with gr.Row():
            num_sentences = slider(*RANGES["num_sentences"], value=3, step=1, label="Sentences to pick")
            method = gr.Radio(
                available_methods(models),
                value=default_method(models),
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
        partial(handlers.summarize, models),
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
    show = partial(handlers.attention, models)
    gr.on(
        [run.click, text.submit, layer.release, head.release, average_heads.input, token_index.submit],
        show,
        inputs=inputs,
        outputs=outputs,
        api_name="attention",
    )
    highlights.select(handlers.select_piece, None, token_index, api_visibility="private").then(
        show, inputs, outputs, api_visibility="private"
    )
    text.change(handlers.last_piece, None, token_index, api_visibility="private", queue=False)
