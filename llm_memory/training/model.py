"""The model a run trains: a new one from the config settings, or a checkpoint with the task's head.

Also the digest of its final weights, with which distributed replicas are checked to agree.
"""

import hashlib

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from llm_memory.modeling.modeling_memory_transformer import (
    MemoryTransformerForCausalLM,
    MemoryTransformerForSequenceClassification,
)
from llm_memory.training.arguments import Arguments
from llm_memory.training.checks import config_from_args
from llm_memory.weights import check_finite, describe_load_error


def build_model(
    args: Arguments, tokenizer, label_names: list[str] | None = None, checkpoint: str | None = None
) -> MemoryTransformerForCausalLM | MemoryTransformerForSequenceClassification:
    """A new model from the config settings, or the checkpoint / --init_from model with the task's head."""
    model_args, task = args.model, args.data.task
    source = checkpoint or model_args.init_from
    attn_implementation = model_args.attn_implementation or "sdpa"
    head = {}
    if task == "classification":
        head = {
            "num_labels": len(label_names),
            "id2label": dict(enumerate(label_names)),
            "label2id": {name: i for i, name in enumerate(label_names)},
        }
    model_class = (
        MemoryTransformerForSequenceClassification
        if task == "classification"
        else MemoryTransformerForCausalLM
    )
    if source is not None:
        # From a language model the classifier head is not in the checkpoint: the body loads, `score`
        # starts new; from a classifier with other classes, `score` is replaced.
        try:
            model = model_class.from_pretrained(
                source,
                attn_implementation=attn_implementation,
                ignore_mismatched_sizes=task == "classification",
                **head,
            )
            check_finite(model, source)
        except SafetensorError as err:
            raise ValueError(f"Could not load {source!r}: {describe_load_error(source, err)}") from err
        return model
    config = config_from_args(
        args,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        sep_token_id=tokenizer.sep_token_id,
        **head,
    )
    auto_class = AutoModelForSequenceClassification if task == "classification" else AutoModelForCausalLM
    return auto_class.from_config(config, attn_implementation=attn_implementation)


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of every tensor of the state dict, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
