"""Configuration of the memory transformer.

Follows the Transformers v5 configuration style (typed dataclass fields, derived values in
``__post_init__``, invariants checked in ``validate_architecture``). This file is copied next to the
weights by ``save_pretrained`` so that a folder loads with ``trust_remote_code=True``; it must only
import torch, transformers and huggingface_hub.
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

POSITION_EMBEDDING_TYPES = ("learned", "sinusoidal", "rope")


@strict
class MemoryTransformerConfig(PreTrainedConfig):
    r"""
    A decoder-only transformer (pre-norm blocks of causal self-attention and MLP) followed by an
    optional LSTM memory layer over the contextual embeddings, a final norm and a task head.

    Example:

    ```python
    >>> from llm_memory import MemoryTransformerConfig, MemoryTransformerForCausalLM
    >>> config = MemoryTransformerConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
    >>> model = MemoryTransformerForCausalLM(config)
    ```
    """

    model_type = "memory_transformer"
    keys_to_ignore_at_inference = ["past_key_values"]

    # 8k byte-level BPE pieces: enough for English reviews, small enough for a CPU model.
    vocab_size: int = 8192
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    # 4x hidden, as in GPT-2.
    intermediate_size: int = 1024
    # The attention window; the LSTM state is what reaches past it.
    max_position_embeddings: int = 256
    position_embedding_type: str = "learned"
    # Base of the rotary frequencies (only used with position_embedding_type="rope").
    rope_theta: float = 10000.0
    use_lstm: bool = True
    lstm_num_layers: int = 1
    # How many transformer blocks run before the LSTM memory; None: all of them (the LSTM reads the last
    # block's output, as in the embedded checkpoints, whose configs predate the field). Lower, the blocks
    # after it attend over its outputs.
    lstm_layer: int | None = None
    # GPT-2's GELU (tanh approximation, same values as "gelu_new"), computed by PyTorch's fused kernel.
    hidden_act: str = "gelu_pytorch_tanh"
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    use_cache: bool = True
    # The classifier's logits are divided by this temperature, fitted on validation data after training
    # (llm_memory.calibration), so that its softmax gives calibrated probabilities. 1.0: not calibrated.
    classifier_temperature: float = 1.0
    tie_word_embeddings: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    sep_token_id: int | None = 4
    # Derived in __post_init__: the cache layout Transformers' DynamicCache builds from. The last layer is
    # "hybrid" when the LSTM is on, so its cache entry also holds the LSTM (h, c) as two recurrent states.
    layer_types: list[str] | None = None
    number_of_conv_states: int = 2

    def __post_init__(self, **kwargs):
        self.validate_sizes()
        if self.lstm_layer is None:
            self.lstm_layer = self.num_hidden_layers
        # The LSTM state lives in the last layer's cache entry wherever the LSTM runs in the stack.
        last = "hybrid" if self.use_lstm else "full_attention"
        self.layer_types = ["full_attention"] * (self.num_hidden_layers - 1) + [last]
        self.number_of_conv_states = 2
        super().__post_init__(**kwargs)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def validate_sizes(self):
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "lstm_num_layers",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"`num_attention_heads` ({self.num_attention_heads}) must divide `hidden_size` "
                f"({self.hidden_size}); try num_attention_heads in "
                f"{[h for h in range(1, self.hidden_size + 1) if self.hidden_size % h == 0][:12]}."
            )
        if self.position_embedding_type not in POSITION_EMBEDDING_TYPES:
            raise ValueError(
                f"`position_embedding_type` must be one of {list(POSITION_EMBEDDING_TYPES)}, "
                f"got {self.position_embedding_type!r}."
            )
        if self.position_embedding_type == "sinusoidal" and self.hidden_size % 2 != 0:
            raise ValueError(
                f"`position_embedding_type='sinusoidal'` needs an even `hidden_size`, got {self.hidden_size}."
            )
        if self.position_embedding_type == "rope" and self.head_dim % 2 != 0:
            raise ValueError(
                f"`position_embedding_type='rope'` needs an even head size (hidden_size / num_attention_heads), "
                f"got {self.head_dim}."
            )
        for name in ("hidden_dropout", "attention_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {value!r}.")
        if self.layer_norm_eps <= 0:
            raise ValueError(f"`layer_norm_eps` must be positive, got {self.layer_norm_eps!r}.")
        if not self.classifier_temperature > 0:
            raise ValueError(
                f"`classifier_temperature` must be positive, got {self.classifier_temperature!r}."
            )
        if self.rope_theta <= 0:
            raise ValueError(f"`rope_theta` must be positive, got {self.rope_theta!r}.")
        layer = self.lstm_layer
        if layer is not None and not 0 <= layer <= self.num_hidden_layers:  # its type is checked by @strict
            raise ValueError(
                f"`lstm_layer` is how many blocks run before the LSTM memory: an integer from 0 to "
                f"num_hidden_layers ({self.num_hidden_layers}), got {layer!r}."
            )

    def validate_architecture(self):
        """Part of the `@strict` validation: re-checked whenever the config is built or loaded."""
        self.validate_sizes()


__all__ = ["MemoryTransformerConfig", "POSITION_EMBEDDING_TYPES"]
