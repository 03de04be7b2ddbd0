"""The Gradio demo of the memory transformer: generate, classify, summarize, look inside the attention, probe memory.

Follows the layout of Gradio's own demos: pure handler functions (``handlers``), the layout and wiring of
one tab per task (``tabs``, ``memory_tab``), each event with an ``api_name`` so that every tab is also an
HTTP API. The models are loaded once at start; the work itself is done by ``llm_memory.tasks``, which
the tests and the command line call too.

    python app.py                      # a checkout: the embedded checkpoints/memory-lm and checkpoints/sentiment
    python -m llm_memory.demo --model PATH_OR_HUB_ID --classifier PATH_OR_HUB_ID [--summarizer PATH_OR_HUB_ID]
                  [--host 0.0.0.0] [--port 7860] [--share]

Every option has an environment variable (LLM_MEMORY_MODEL, LLM_MEMORY_CLASSIFIER, LLM_MEMORY_SUMMARIZER,
LLM_MEMORY_HOST, LLM_MEMORY_PORT), read with the other serving settings (``ServeSettings.from_env``) when
the app starts; GRADIO_SERVER_NAME and GRADIO_SERVER_PORT work too, as on a Space.
"""

import argparse
import gc
import os
import sys
from pathlib import Path

import gradio as gr
import torch

from llm_memory.demo.memory_tab import add_memory_tab
from llm_memory.demo.tabs import attention_tab, classify_tab, generate_tab, summarize_tab
from llm_memory.serving.loading import ModelLoadError
from llm_memory.serving.models import Models, load_models
from llm_memory.serving.settings import ServeSettings

# Largest upload Gradio's file route accepts: the app has no file inputs.
MAX_FILE_SIZE = "1mb"
# Sessions whose state Gradio keeps (oldest dropped first); its default of 10,000 lets REST callers grow
# the server by ~0.22 MB each. The app keeps no state of its own between requests.
SESSION_CAPACITY = 500
# The flag and variable that choose each model, for the startup error.
MODEL_OPTIONS = {
    "model": ("--model", "LLM_MEMORY_MODEL"),
    "classifier": ("--classifier", "LLM_MEMORY_CLASSIFIER"),
    "summarizer": ("--summarizer", "LLM_MEMORY_SUMMARIZER"),
}


def build_demo(models: Models, memory_model: str | os.PathLike | None = None) -> gr.Blocks:
    """The whole demo on ``models``, queued as ``models.settings`` says; not launched. ``memory_model`` is
    a folder fine-tuned on the memory probes, shown first in the Memory tab when it holds a model."""
    settings = models.settings
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
            if memory_model is not None and Path(memory_model, "config.json").is_file():
                memory_models["memory model"] = str(memory_model)
            memory_models["language model"] = (models.lm, models.lm_tokenizer)
            add_memory_tab(memory_models)
    # A bounded queue: past queue_size waiting jobs a request is told the queue is full, rather than
    # waiting minutes while the server's memory grows with every job held.
    demo.queue(default_concurrency_limit=settings.concurrency, max_size=settings.queue_size)
    return demo


def parse_args(argv=None, settings: ServeSettings | None = None) -> argparse.Namespace:
    """The command line, its defaults from ``settings`` (the environment's, read by ``main``)."""
    settings = settings or ServeSettings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default=settings.model, help="Causal LM folder or Hub id (LLM_MEMORY_MODEL)."
    )
    parser.add_argument(
        "--classifier",
        default=settings.classifier,
        help="Sequence classifier folder or Hub id (LLM_MEMORY_CLASSIFIER).",
    )
    parser.add_argument(
        "--summarizer",
        default=settings.summarizer,
        help="Summarization-tuned causal LM (document <|sep|> summary) for abstractive summaries (LLM_MEMORY_SUMMARIZER).",
    )
    parser.add_argument(
        "--host", default=settings.host, help="Address to serve on, e.g. 0.0.0.0 (LLM_MEMORY_HOST)."
    )
    parser.add_argument(
        "--port", type=int, default=settings.port, help="Port (LLM_MEMORY_PORT; default 7860)."
    )
    parser.add_argument("--share", action="store_true", help="Also serve through a public Gradio share link.")
    args = parser.parse_args(argv)
    if args.model is None:
        parser.error("pass --model with a local model folder or a Hub model id, or set LLM_MEMORY_MODEL.")
    return args


def main(argv=None, checkpoints_dir: str | os.PathLike | None = "checkpoints") -> None:
    """Serves the demo. The models default to the embedded ones in ``checkpoints_dir`` (the entry point
    says where: ``app.py`` its own folder's, ``python -m llm_memory.demo`` the working directory's)."""
    settings = ServeSettings.from_env(checkpoints_dir=checkpoints_dir)
    args = parse_args(argv, settings)
    torch.set_num_threads(settings.torch_threads)
    try:
        models = load_models(
            args.model,
            args.classifier,
            args.summarizer,
            decoder_process=settings.decoder_process,
            settings=settings,
        )
    except ModelLoadError as err:
        flag, variable = MODEL_OPTIONS[err.role]
        sys.exit(f"error: {err}\nPass {flag} with a local model folder or a Hub model id, or set {variable}.")
    demo = build_demo(models, settings.memory_model)
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
