"""The Memory tab of the demo: run one memory probe and see where attention looks.

Follows the layout of Gradio's demos: the work is a plain function (``llm_memory.tasks.memory_probe``,
also called by the tests), then the layout, then the wiring with an ``api_name``. The tab shows the
model's answer, the share of attention that the question pays to the fact in each layer, and the
accuracy-against-distance curves of the model in use, from the reports that the memory benchmark
saved in its folder (``memory_results/TASK.json``). A task the model was never fine-tuned on is run
all the same, under a notice that says so.
"""

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import gradio as gr
import plotly.graph_objects as go
from transformers import AutoModelForCausalLM, AutoTokenizer

from llm_memory.memory.evaluate import VARIANTS
from llm_memory.memory.probes import TASKS, as_distractors, chance_level
from llm_memory.memory.report import (
    MODEL_RESULTS_DIR,
    accuracy_figure,
    fine_tuning_stages,
    model_reports,
    trained_tasks,
)
from llm_memory.tasks.memory_probe import DEFAULT_DISTANCE, MAX_DISTANCE, MAX_SEED, run_memory_probe

# Gradio's HighlightedText breaks lines inside words (word-break: break-all on a flex row); the probe is
# prose, so it flows as text and breaks between words. The tab carries this style itself.
CSS = """
#memory-probe .textfield { display: block; word-break: normal; overflow-wrap: break-word; }
"""


def attention_figure(result: dict) -> go.Figure:
    """Bars of the question's attention on the fact per layer; beyond the window, a figure that says why
    there are none and what can still carry the fact."""
    attention = result["attention"]
    if attention is None:
        carried = result["variant"] != "attention" and result.get("use_lstm", True)
        lines = [
            f"The fact is {result['distance']} tokens before the end of the question,",
            f"beyond the {result['window']}-token window: no attention reaches it, so there is none to draw.",
            "Only the LSTM state carried from window to window can bring it to the question."
            if carried
            else "Nothing is carried across windows in this reading, so the answer can only be a guess.",
        ]
        figure = go.Figure()
        figure.add_annotation(
            text="<br>".join(lines),
            x=0.5,
            y=0.5,
            xref="paper",
            yref="paper",
            showarrow=False,
            font={"size": 14},
        )
        figure.update_layout(
            title="Share of the question's attention on the fact",
            xaxis={"visible": False},
            yaxis={"visible": False},
            template="plotly_white",
        )
        return figure
    layers = [f"layer {i}" for i in range(len(attention["per_layer"]))]
    figure = go.Figure(go.Bar(x=layers, y=attention["per_layer"], name="question → fact"))
    figure.add_hline(y=attention["uniform"], line_dash="dot", annotation_text="if spread evenly")
    figure.update_layout(
        title="Share of the question's attention on the fact",
        yaxis={"title": "attention mass (mean over heads and question tokens)", "range": [0, 1]},
        template="plotly_white",
    )
    return figure


def highlighted_prompt(tokenizer, result: dict) -> list[tuple[str, str | None]]:
    """The prompt cut into text, fact, text, question and answer, for ``gr.HighlightedText``."""
    probe = result["probe"]
    ids = probe.input_ids
    (fact_start, fact_end), question = probe.fact_token_span, probe.question_start
    parts = [
        (tokenizer.decode(ids[:fact_start]), None),
        (tokenizer.decode(ids[fact_start:fact_end]), "fact"),
        (tokenizer.decode(ids[fact_end:question]), None),
        (tokenizer.decode(ids[question:]), "question"),
        (result["answer"], "answer"),
    ]
    return [(text, label) for text, label in parts if text]


def untrained_notice(model_name: str, task: str, trained: Sequence[str], others: Sequence[str]) -> str:
    """What the tab says above a probe of a task that the model in use was never fine-tuned on."""
    chance = chance_level(task)
    text = (
        f"**`{model_name}` was not trained for `{task}`.** It was never fine-tuned on these probes, so its "
        f"answers are not expected to be right, inside the window or beyond (chance: {chance['note']})."
    )
    if trained:
        text += f" It was trained for: {', '.join(f'`{name}`' for name in trained)}."
    if others:
        text += f" Trained for `{task}`: {', '.join(f'`{name}`' for name in others)} (choose it under Model)."
    return text


def summary_markdown(result: dict, notice: str | None = None) -> str:
    verdict = "right" if result["correct"] else "wrong"
    lines = [notice] if notice else []
    lines += [
        f"**Answer:** `{result['answer'].strip()}` · **model:** `{result['predicted'].strip()}` "
        f"({verdict}; {result['token_accuracy']:.0%} of answer tokens)",
        f"**Fact:** {result['fact'].strip()}",
        f"**Distance:** {result['distance']} tokens · **window:** {result['window']} tokens · "
        f"**variant:** {result['variant']}"
        + (f" (carries {result['carry_kv']} keys/values)" if result["carry_kv"] else ""),
        f"**Attention:** {result['message']}",
    ]
    if result["attention"] is not None:
        shares = ", ".join(f"{share:.1%}" for share in result["attention"]["per_layer"])
        lines.append(
            f"Question → fact attention per layer: {shares} (even spread: {result['attention']['uniform']:.1%})."
        )
    return "\n\n".join(lines)


def benchmark_curves(task: str, reports: Mapping[str, dict], model_name: str) -> tuple[go.Figure | None, str]:
    """The accuracy-against-distance curves of the model in use on ``task``, and a line saying what they are."""
    report = reports.get(task)
    if report is None:
        return None, (
            f"No benchmark curve of `{model_name}` on `{task}`: its folder holds no "
            f"`{MODEL_RESULTS_DIR}/{task}.json`. `python -m llm_memory.memory --model FOLDER --task {task} "
            "--save_dir NEW_FOLDER` fine-tunes a model for it and saves the curve with it."
        )
    stages = fine_tuning_stages({task: report})
    steps = sum(stage["train_steps"] + stage["curriculum_steps"] for stage in stages)
    origin = stages[0]["model"] if stages else report["model"]
    in_stages = f" in {len(stages)} stages" if len(stages) > 1 else ""
    if not stages:
        tuning = "evaluated as it is, without fine-tuning"
    elif report.get("share_fine_tune") or not report["train_steps"]:
        tuning = f"one model fine-tuned from `{origin}` for {steps:,} steps{in_stages}, read the three ways"
    else:
        tuning = f"{steps:,} fine-tuning steps per variant from `{origin}`{in_stages}"
    return accuracy_figure(report), (
        f"`{model_name}` on `{task}`: a {report['window']}-token window, {report['samples']} probes per "
        f"distance, {tuning}."
    )


def _model_table(models) -> dict:
    """Name -> folder or (model, tokenizer), from one of those, a list or mapping of them, or the demo's
    loaded models (anything with ``lm`` and ``lm_tokenizer``)."""
    if hasattr(models, "lm") and hasattr(models, "lm_tokenizer"):
        return {"language model": (models.lm, models.lm_tokenizer)}
    if isinstance(models, Mapping):
        return dict(models)
    if isinstance(models, (str, os.PathLike)):
        return {Path(models).name: models}
    if isinstance(models, tuple) and len(models) == 2 and not isinstance(models[0], (str, os.PathLike)):
        return {"model": models}
    return {
        Path(m).name if isinstance(m, (str, os.PathLike)) else f"model {i}": m for i, m in enumerate(models)
    }


def _folder_of(entry) -> str | None:
    """The folder a model table entry was loaded from: the folder itself, or a loaded model's
    ``name_or_path`` when that is a folder."""
    if isinstance(entry, (str, os.PathLike)):
        return str(entry)
    path = getattr(entry[0], "name_or_path", "")
    return path if path and Path(path).is_dir() else None


def add_memory_tab(models, distractor_texts: Sequence[str] | None = None) -> gr.Tab:
    """Adds the Memory tab to the enclosing ``gr.Blocks``; its endpoint is ``/memory``.

    ``models`` is a folder, a (model, tokenizer) pair, a list of those, a mapping from display names
    to them, or the demo's loaded models (its ``lm`` and ``lm_tokenizer`` are used); folders are loaded
    on first use. Each model's curves and the tasks it was trained for come from the reports in its
    folder. ``distractor_texts`` replaces the test reviews as filler.
    """
    table = _model_table(models)
    if not table:
        raise ValueError("add_memory_tab needs at least one model (a folder or a (model, tokenizer) pair).")
    names = list(table)
    reports = {name: model_reports(_folder_of(entry)) for name, entry in table.items()}
    trained = {name: trained_tasks(reports[name]) for name in names}
    loaded: dict = {}
    distractors: dict = {}

    def get(name: str):
        if name not in loaded:
            entry = table[name]
            if isinstance(entry, tuple):
                loaded[name] = entry
            else:
                model = AutoModelForCausalLM.from_pretrained(entry).eval()
                loaded[name] = (model, AutoTokenizer.from_pretrained(entry))
        return loaded[name]

    def handle(task, distance, seed, variant, model_name):
        model_name = model_name or names[0]
        try:
            model, tokenizer = get(model_name)
            if id(tokenizer) not in distractors:  # tokenized sentences are cached per tokenizer
                distractors[id(tokenizer)] = as_distractors(distractor_texts, tokenizer)
            result = run_memory_probe(
                model,
                tokenizer,
                task,
                DEFAULT_DISTANCE if distance is None else distance,
                0 if seed is None else seed,
                variant,
                distractors[id(tokenizer)],
            )
        except ValueError as error:
            raise gr.Error(str(error)) from None
        except Exception as error:  # a broken checkpoint, say: a message, not Gradio's "error: null"
            raise gr.Error(
                f"The probe failed: {error or type(error).__name__}", title="The request failed"
            ) from error
        notice = None
        if task not in trained[model_name]:
            others = [name for name in names if task in trained[name]]
            notice = untrained_notice(model_name, task, trained[model_name], others)
        curves, note = benchmark_curves(task, reports[model_name], model_name)
        return (
            summary_markdown(result, notice),
            highlighted_prompt(tokenizer, result),
            attention_figure(result),
            curves,
            note,
        )

    # Start on a task the first model was trained for, when there is one.
    first_task = (trained[names[0]] or list(TASKS))[0]
    with gr.Tab("Memory", id="memory") as tab:
        gr.Markdown(
            "A fact is hidden in movie-review text at a chosen distance (in tokens) before a question about "
            "it. Inside the attention window the model can attend to it; beyond, only carried memory (the "
            "LSTM state, or carried keys/values) can bring it to the question. "
            + "; ".join(
                f"`{name}` was trained for {', '.join(trained[name])}"
                if trained[name]
                else f"`{name}` was not trained for any of these tasks"
                for name in names
            )
            + "."
        )
        with gr.Row():
            task = gr.Dropdown(list(TASKS), value=first_task, label="Task")
            distance = gr.Number(
                value=DEFAULT_DISTANCE,
                precision=0,
                minimum=1,
                maximum=MAX_DISTANCE,
                label=f"Distance (tokens, at most {MAX_DISTANCE})",
            )
            seed = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
            # The values go to run_memory_probe as sent: its check names the range for an API caller's
            # NaN, text or 1e12 (Gradio's own check would only say "greater than maximum value").
            distance.preprocess = seed.preprocess = lambda payload: payload
            variant = gr.Dropdown(list(VARIANTS), value="lstm", label="Memory across windows")
            model_name = gr.Dropdown(names, value=names[0], label="Model", visible=len(names) > 1)
        gr.HTML(f"<style>{CSS}</style>", visible=True, elem_id="memory-style")
        run_button = gr.Button("Run probe", variant="primary")
        summary = gr.Markdown()
        prompt = gr.HighlightedText(label="Probe", combine_adjacent=False, elem_id="memory-probe")
        attention_plot = gr.Plot(label="Question → fact attention per layer")
        curves_plot = gr.Plot(label="Accuracy against distance (the model in use, from its folder)")
        curves_note = gr.Markdown()

    run_button.click(
        handle,
        inputs=[task, distance, seed, variant, model_name],
        outputs=[summary, prompt, attention_plot, curves_plot, curves_note],
        api_name="memory",
    )
    return tab
