"""llm-memory: a compact transformer language model with an optional LSTM memory layer.

Importing the package registers the model with Transformers' Auto classes, so
`AutoModelForCausalLM.from_pretrained(folder)` works without `trust_remote_code`.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
)

from .modeling.configuration_memory_transformer import MemoryTransformerConfig
from .modeling.modeling_memory_transformer import (
    MemoryTransformerForCausalLM,
    MemoryTransformerForSequenceClassification,
    MemoryTransformerModel,
    MemoryTransformerPreTrainedModel,
)

AUTO_CLASSES = {
    "AutoModel": (AutoModel, MemoryTransformerModel),
    "AutoModelForCausalLM": (AutoModelForCausalLM, MemoryTransformerForCausalLM),
    "AutoModelForSequenceClassification": (
        AutoModelForSequenceClassification,
        MemoryTransformerForSequenceClassification,
    ),
}

AutoConfig.register(MemoryTransformerConfig.model_type, MemoryTransformerConfig, exist_ok=True)
MemoryTransformerConfig.register_for_auto_class()
for _auto_name, (_auto_class, _model_class) in AUTO_CLASSES.items():
    _auto_class.register(MemoryTransformerConfig, _model_class, exist_ok=True)
    # Saving writes the modeling code and an `auto_map`, so a folder loads with trust_remote_code=True.
    _model_class.register_for_auto_class(_auto_name)

__all__ = [
    "MemoryTransformerConfig",
    "MemoryTransformerPreTrainedModel",
    "MemoryTransformerModel",
    "MemoryTransformerForCausalLM",
    "MemoryTransformerForSequenceClassification",
]
