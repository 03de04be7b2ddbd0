"""The model card (README.md) of a trained model folder.

Follows the Hub's model card format: YAML front matter (license, library_name, pipeline_tag, datasets,
tags and a ``model-index`` with the evaluation figures, written by ``huggingface_hub.ModelCardData``)
followed by a Markdown body that says what the model is, how to load it, what it was trained on and
the exact command that made it.
"""

from dataclasses import dataclass, field

import huggingface_hub
import torch
import transformers
from huggingface_hub import EvalResult, ModelCardData


@dataclass(frozen=True)
class TaskCard:
    """What the Hub needs to know about one training task."""

    pipeline_tag: str
    task_type: str
    task_name: str
    # (key in the metrics dict, model-index metric type, display name)
    metrics: tuple[tuple[str, str, str], ...]
    tags: tuple[str, ...]


TASK_CARDS = {
    "lm": TaskCard(
        pipeline_tag="text-generation",
        task_type="text-generation",
        task_name="Causal language modeling",
        metrics=(("eval_perplexity", "perplexity", "Perplexity"), ("eval_loss", "loss", "Loss")),
        tags=("causal-lm",),
    ),
    "classification": TaskCard(
        pipeline_tag="text-classification",
        task_type="text-classification",
        task_name="Text classification",
        metrics=(("eval_accuracy", "accuracy", "Accuracy"), ("eval_f1", "f1", "Macro F1")),
        tags=("text-classification",),
    ),
    # A decoder-only model prompted with "document <|sep|>": it loads and generates as a causal LM.
    "summarization": TaskCard(
        pipeline_tag="text-generation",
        task_type="summarization",
        task_name="Summarization",
        metrics=(
            ("eval_rouge1", "rouge", "ROUGE-1"),
            ("eval_rouge2", "rouge", "ROUGE-2"),
            ("eval_rougeL", "rouge", "ROUGE-L"),
        ),
        tags=("summarization",),
    ),
}

COMMON_TAGS = ("llm-memory", "memory-transformer", "lstm", "trainer")


@dataclass
class ModelCardInfo:
    """Everything the card states about one training run."""

    model_name: str
    task: str
    metrics: dict[str, float]
    command: str
    # Short name and type of the data for the model-index, and a sentence for the body.
    dataset_name: str
    dataset_type: str
    dataset_description: str
    # Hub ids of the data, for the ``datasets`` metadata (empty for local files).
    dataset_hub_ids: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    hyperparameters: dict = field(default_factory=dict)
    num_parameters: int | None = None
    init_from: str | None = None
    label_names: list[str] | None = None
    # Markdown that replaces the validation-metrics table (e.g. a memory benchmark's results).
    evaluation: str | None = None
    # Commands of the runs before ``command`` when the model was made in stages, oldest first.
    earlier_commands: list[str] = field(default_factory=list)


def card_metadata(info: ModelCardInfo) -> ModelCardData:
    task = TASK_CARDS[info.task]
    eval_results = [
        EvalResult(
            task_type=task.task_type,
            task_name=task.task_name,
            dataset_type=info.dataset_type,
            dataset_name=info.dataset_name,
            dataset_split="validation",
            metric_type=metric_type,
            metric_name=display,
            metric_value=round(float(info.metrics[key]), 4),
        )
        for key, metric_type, display in task.metrics
        if key in info.metrics
    ]
    use_lstm = info.config.get("use_lstm", True)
    tags = [tag for tag in COMMON_TAGS if tag != "lstm" or use_lstm] + list(task.tags)
    return ModelCardData(
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag=task.pipeline_tag,
        datasets=info.dataset_hub_ids or None,
        tags=tags,
        model_name=info.model_name,
        eval_results=eval_results or None,
    )


def _usage(info: ModelCardInfo) -> str:
    load = (
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n\n"
        f'model = AutoModelForSequenceClassification.from_pretrained("{info.model_name}", trust_remote_code=True)\n'
        if info.task == "classification"
        else "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f'model = AutoModelForCausalLM.from_pretrained("{info.model_name}", trust_remote_code=True)\n'
    )
    # The folder's config names the model code, so AutoTokenizer asks about it too.
    load += f'tokenizer = AutoTokenizer.from_pretrained("{info.model_name}", trust_remote_code=True)\n'
    if info.task == "classification":
        use = (
            'inputs = tokenizer("A warm, funny and clever film.", return_tensors="pt")\n'
            "label_id = model(**inputs).logits.argmax(-1).item()\n"
            "print(model.config.id2label[label_id])\n"
        )
    elif info.task == "summarization":
        use = (
            "# The prompt is the document followed by the separator token; the summary follows it.\n"
            'ids = tokenizer(document, add_special_tokens=False)["input_ids"] + [tokenizer.sep_token_id]\n'
            "output = model.generate(torch.tensor([ids]), do_sample=False)\n"
            "print(tokenizer.decode(output[0, len(ids):], skip_special_tokens=True))\n"
        )
        load = "import torch\n" + load
    else:
        use = (
            'inputs = tokenizer("The film was", return_tensors="pt")\n'
            "output = model.generate(**inputs, max_new_tokens=40, do_sample=True, top_k=50)\n"
            "print(tokenizer.decode(output[0], skip_special_tokens=True))\n"
        )
    return f"```python\n{load}{use}```"


def _table(rows: dict) -> str:
    lines = ["| | |", "|---|---|"] + [f"| {key} | {value} |" for key, value in rows.items()]
    return "\n".join(lines)


def build_model_card(info: ModelCardInfo) -> str:
    """The README.md text: YAML metadata, then the body."""
    task = TASK_CARDS[info.task]
    config = info.config
    architecture = (
        f"{config.get('num_hidden_layers')} pre-norm transformer blocks of width {config.get('hidden_size')} "
        f"with {config.get('num_attention_heads')} attention heads, "
        f"{config.get('position_embedding_type')} positions and a window of "
        f"{config.get('max_position_embeddings')} tokens"
    )
    if config.get("use_lstm"):
        lstm = f"a {config.get('lstm_num_layers')}-layer LSTM memory"
        layer = config.get("lstm_layer")
        if layer is None or layer == config.get("num_hidden_layers"):
            architecture += f", followed by {lstm}"
        elif layer == 0:
            architecture += f", with {lstm} before the first block"
        else:
            architecture += f", with {lstm} after block {layer} of {config.get('num_hidden_layers')}"
    size = f" ({info.num_parameters / 1e6:.2f}M parameters)" if info.num_parameters else ""

    sections = [
        f"# {info.model_name}",
        f"A memory transformer trained for **{task.task_name.lower()}**{size}: {architecture}. "
        "The model code ships in this repository, so it loads with `trust_remote_code=True`.",
    ]
    if info.init_from:
        sections.append(f"Fine-tuned from the checkpoint `{info.init_from}`.")
    if info.label_names:
        sections.append("Labels: " + ", ".join(f"`{i}` = {name}" for i, name in enumerate(info.label_names)))
    sections += ["## How to use", _usage(info)]
    sections += ["## Training data", f"{info.dataset_description}."]

    shown = {display: f"{info.metrics[key]:.4f}" for key, _, display in task.metrics if key in info.metrics}
    if info.evaluation:
        sections += ["## Evaluation", info.evaluation]
    else:
        sections += ["## Evaluation", "On the validation split:", _table(shown) if shown else "(no metrics)"]

    if info.earlier_commands:
        commands = [*info.earlier_commands, info.command]
        sections += [
            "## Training procedure",
            f"The exact commands that made this folder, in {len(commands)} stages; each one fine-tunes "
            "the folder the one before saved:",
            "```bash\n" + "\n".join(commands) + "\n```",
        ]
    else:
        sections += [
            "## Training procedure",
            "The exact command that made this folder:",
            f"```bash\n{info.command}\n```",
        ]
    if info.hyperparameters:
        sections.append(_table(info.hyperparameters))
    sections += [
        "## Framework versions",
        f"- Transformers {transformers.__version__}\n- PyTorch {torch.__version__}\n"
        f"- huggingface_hub {huggingface_hub.__version__}",
    ]
    body = "\n\n".join(sections)
    return f"---\n{card_metadata(info).to_yaml()}\n---\n\n{body}\n"


__all__ = [
    "TASK_CARDS",
    "ModelCardInfo",
    "build_model_card",
    "card_metadata",
]
