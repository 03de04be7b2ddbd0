"""The memory transformer: a decoder-only transformer with an optional LSTM memory layer.

Follows GPT-2 (pre-norm blocks, learned positions, tied input/output embeddings) and the layout of
Transformers' Llama file (attention through ``ALL_ATTENTION_FUNCTIONS``, the Cache API, typed outputs,
generation from ``GenerationMixin``). The LSTM runs over the contextual embeddings after the last block;
its (h, c) state lives in the cache's last layer as two recurrent states, so incremental decoding,
beam search and window-by-window scoring carry it like the keys and values.

This file is copied next to the weights by ``save_pretrained``, with the two it imports: it needs only torch
and transformers.

Shapes: B batch, T new tokens, S keys (past + new), H hidden size, nh heads, hd head size.
"""

import copy
import functools
import math
from collections.abc import Callable

import torch
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache, LinearAttentionCacheLayerMixin
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    SequenceClassifierOutputWithPast,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel, slice_logits_to_keep

from .configuration_memory_transformer import MemoryTransformerConfig
from .lstm_memory import MemoryTransformerLSTMMemory


def sinusoidal_angles(position_ids: torch.Tensor, dim: int, theta: float) -> torch.Tensor:
    """Angles pos / theta^(2i/dim) of "Attention Is All You Need", (B, T, dim / 2), in float32."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, device=position_ids.device).float() / dim))
    return position_ids[..., None].float() * inv_freq


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE (Su et al., 2021) on (B, nh, T, hd) with cos/sin of shape (B, T, hd)."""
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, nh, T, S)
    if attention_mask is not None and attention_mask.dtype == torch.bool:  # a mask made for SDPA
        attn_weights = attn_weights.masked_fill(~attention_mask, torch.finfo(attn_weights.dtype).min)
    elif attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()  # (B, T, nh, hd)
    return attn_output, attn_weights


class MemoryTransformerAttention(nn.Module):
    """Multi-head causal self-attention; the kernel is chosen by name (eager, sdpa, flash, flex)."""

    def __init__(self, config: MemoryTransformerConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = 1
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True
        # One fused projection for q, k and v: one matmul instead of three, as in GPT-2.
        self.qkv_proj = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.o_proj.residual_projection = True  # read by _init_weights

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        past_key_values: Cache | None = None,
        attn_implementation: str = "eager",
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query, key, value = self.qkv_proj(hidden_states).chunk(3, dim=-1)
        query = query.view(hidden_shape).transpose(1, 2)  # (B, nh, T, hd)
        key = key.view(hidden_shape).transpose(1, 2)
        value = value.view(hidden_shape).transpose(1, 2)
        if rotary is not None:
            query, key = apply_rotary(query, *rotary), apply_rotary(key, *rotary)
        if past_key_values is not None:
            key, value = past_key_values.update(key, value, self.layer_idx)  # (B, nh, S, hd)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()  # (B, T, H)
        return self.o_proj(attn_output), attn_weights


class MemoryTransformerMLP(nn.Module):
    def __init__(self, config: MemoryTransformerConfig):
        super().__init__()
        self.fc_in = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc_out = nn.Linear(config.intermediate_size, config.hidden_size)
        self.fc_out.residual_projection = True  # read by _init_weights

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.act(self.fc_in(hidden_states)))


class MemoryTransformerBlock(GradientCheckpointingLayer):
    """Pre-norm block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: MemoryTransformerConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = MemoryTransformerAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MemoryTransformerMLP(config)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        past_key_values: Cache | None = None,
        use_cache: bool | None = False,
        attn_implementation: str = "eager",
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_output, attn_weights = self.attn(
            self.ln_1(hidden_states),
            attention_mask,
            rotary=rotary,
            past_key_values=past_key_values,
            attn_implementation=attn_implementation,
            **kwargs,
        )
        hidden_states = hidden_states + self.dropout(attn_output)
        hidden_states = hidden_states + self.dropout(self.mlp(self.ln_2(hidden_states)))
        return hidden_states, attn_weights


# Every head is named in a saved folder's `auto_map`, so one folder serves all Auto classes.
AUTO_MAP = {
    "AutoConfig": "configuration_memory_transformer.MemoryTransformerConfig",
    "AutoModel": "modeling_memory_transformer.MemoryTransformerModel",
    "AutoModelForCausalLM": "modeling_memory_transformer.MemoryTransformerForCausalLM",
    "AutoModelForSequenceClassification": "modeling_memory_transformer.MemoryTransformerForSequenceClassification",
}


class MemoryTransformerPreTrainedModel(PreTrainedModel):
    config: MemoryTransformerConfig
    config_class = MemoryTransformerConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MemoryTransformerBlock"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True  # with a static cache; the LSTM is then read by its cell function

    @property
    def _is_stateful(self) -> bool:
        """With the LSTM the model carries a recurrent state that cannot be rolled back to an earlier
        token, so ``generate()`` refuses assisted and prompt-lookup decoding with Transformers' own
        error for stateful models (as for Mamba); without it, the cache is attention's alone and both
        work. A 6M-parameter model gains little from a draft model, so the state is not snapshotted."""
        return bool(self.config.use_lstm)

    def get_compiled_call(self, compile_config):
        """generate()'s compiled forward. Dynamo refuses to hold an ``nn.LSTM`` unless allowed; traced,
        the memory only reads the module's weights (``MemoryTransformerLSTMMemory._step``)."""
        return torch._dynamo.config.patch(allow_rnn=True)(super().get_compiled_call(compile_config))

    def save_pretrained(self, save_directory, *args, **kwargs):
        self.config.auto_map = {**AUTO_MAP, **(getattr(self.config, "auto_map", None) or {})}
        return super().save_pretrained(save_directory, *args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        std = self.config.initializer_range
        # Only modules that hold parameters of their own come here, so the projections carry a flag.
        if getattr(module, "residual_projection", False):
            # GPT-2: residual projections scaled by 1/sqrt(2 * layers) keep the residual stream's variance flat.
            init.normal_(module.weight, mean=0.0, std=std / math.sqrt(2 * self.config.num_hidden_layers))
        elif isinstance(module, nn.LSTM):
            # A forget-gate bias of 1 lets the memory hold its state from the start (Jozefowicz et al., 2015).
            for name, param in module.named_parameters():
                if name.startswith("bias_ih") and not getattr(param, "_is_hf_initialized", False):
                    hidden = param.shape[0] // 4
                    init.zeros_(param)
                    init.ones_(param[hidden : 2 * hidden])


class MemoryTransformerModel(MemoryTransformerPreTrainedModel):
    def __init__(self, config: MemoryTransformerConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        if config.position_embedding_type == "learned":
            self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList(
            [MemoryTransformerBlock(config, idx) for idx in range(config.num_hidden_layers)]
        )
        self.memory = MemoryTransformerLSTMMemory(config) if config.use_lstm else None
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast | tuple:
        config = self.config
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (
            config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        use_cache = config.use_cache if use_cache is None else use_cache
        return_dict = config.return_dict if return_dict is None else return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` or `inputs_embeds`.")
        if self.gradient_checkpointing and self.training:
            use_cache = False
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        seq_len = inputs_embeds.shape[1]
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=config)
        past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
        if isinstance(past_length, torch.Tensor):  # a static cache's own counter, advanced in place below
            past_length = past_length.clone()
        padding_mask = attention_mask if attention_mask is not None and attention_mask.dim() == 2 else None
        given_positions = position_ids is not None
        if position_ids is None:
            position_ids = self._position_ids(padding_mask, past_length, seq_len, inputs_embeds.device)

        hidden_states = inputs_embeds
        rotary = None
        if config.position_embedding_type == "learned":
            # The positions, not the columns: a left-padded row of a batch counts only its own tokens.
            # Positions never outnumber columns, so they are read (a device sync) only when those do.
            if (
                not torch.compiler.is_compiling()
                and past_length + seq_len > config.max_position_embeddings
                and (tokens := int(position_ids.max()) + 1) > config.max_position_embeddings
            ):
                raise ValueError(
                    f"{tokens} tokens exceed max_position_embeddings="
                    f"{config.max_position_embeddings} of this model (learned positions): shorten the input, "
                    "or score long text window by window with the LSTM state carried over."
                )
            hidden_states = hidden_states + self.embed_positions(position_ids)
        else:
            angles = sinusoidal_angles(
                position_ids,
                config.hidden_size if config.position_embedding_type == "sinusoidal" else config.head_dim,
                config.rope_theta,
            )
            if config.position_embedding_type == "sinusoidal":
                hidden_states = hidden_states + torch.cat((angles.sin(), angles.cos()), -1).to(
                    hidden_states.dtype
                )
            else:
                angles = torch.cat((angles, angles), dim=-1)
                rotary = (angles.cos().to(hidden_states.dtype), angles.sin().to(hidden_states.dtype))
        hidden_states = self.dropout(hidden_states)

        # Attention weights exist only in the eager kernel: fall back to it for this call alone.
        attn_implementation = "eager" if output_attentions else config._attn_implementation
        mask_config = config
        if attn_implementation != config._attn_implementation:
            mask_config = copy.copy(config)
            mask_config._attn_implementation = attn_implementation
        # The cache goes by position: Transformers 5.24 renamed the argument (past_key_values -> cache)
        # and warns for the old name, which 5.23, the pinned release, still requires.
        causal_mask = create_causal_mask(
            mask_config, inputs_embeds, attention_mask, past_key_values, position_ids
        )

        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        # The LSTM runs after `lstm_layer` blocks (after all of them by default); -1: there is none.
        lstm_layer = -1 if self.memory is None else config.lstm_layer
        if lstm_layer is None or lstm_layer > len(self.layers):
            lstm_layer = len(self.layers)
        remember = functools.partial(
            self._remember,
            attention_mask=attention_mask,
            padding_mask=padding_mask,
            past_key_values=past_key_values,
            past_length=past_length,
            position_ids=position_ids,
            given_positions=given_positions,
        )
        for index, block in enumerate(self.layers):
            if index == lstm_layer:
                hidden_states = remember(hidden_states)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, attn_weights = block(
                hidden_states,
                attention_mask=causal_mask,
                rotary=rotary,
                past_key_values=past_key_values,
                use_cache=use_cache,
                attn_implementation=attn_implementation,
                **kwargs,
            )
            if output_attentions:
                all_attentions += (attn_weights,)
        if lstm_layer == len(self.layers):
            hidden_states = remember(hidden_states)

        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        output = BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            past_key_values=past_key_values if use_cache else None,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )
        return output if return_dict else output.to_tuple()

    def _remember(
        self,
        hidden_states,
        attention_mask,
        padding_mask,
        past_key_values,
        past_length,
        position_ids,
        given_positions,
    ) -> torch.Tensor:
        """The LSTM memory over ``hidden_states``, its state read from and written back to the cache's
        last layer (wherever in the stack ``config.lstm_layer`` puts it)."""
        seq_len = hidden_states.shape[1]
        token_mask = padding_mask[:, -seq_len:].bool() if padding_mask is not None else None
        if attention_mask is not None and attention_mask.dim() == 4:
            token_mask = self._token_mask_from_4d(attention_mask, past_length, seq_len)
        recurrent = self._recurrent_layer(past_key_values)
        state = None
        if recurrent is not None and recurrent.is_recurrent_states_initialized[0]:
            # Stored batch-first, (B, L, H), so that beam search's reorder along dim 0 moves it.
            # A copy, not a view: the cache is written in place below, and autograd needs the old state.
            state = tuple(
                recurrent.recurrent_states[i].transpose(0, 1).clone(memory_format=torch.contiguous_format)
                for i in (0, 1)
            )
        resets = self._sequence_starts(position_ids, token_mask) if given_positions and seq_len > 1 else None
        if resets is not None:
            resets = resets.expand(hidden_states.shape[0], -1)
        hidden_states, new_state = self.memory(
            hidden_states, token_mask, state, resets, keep_state=recurrent is not None
        )
        if recurrent is not None:
            recurrent.update_recurrent_state(new_state[0].transpose(0, 1), state_idx=0)
            recurrent.update_recurrent_state(new_state[1].transpose(0, 1), state_idx=1)
        return hidden_states

    @staticmethod
    def _sequence_starts(position_ids, token_mask) -> torch.Tensor | None:
        """(B, T) True where a packed sequence begins after the first (its position does not follow the
        one before, between two real tokens, as DataCollatorWithFlattening writes them); None if none
        (in eager mode)."""
        restart = position_ids[:, 1:] <= position_ids[:, :-1]
        if token_mask is not None:
            restart = restart & token_mask[:, 1:] & token_mask[:, :-1]
        if not torch.compiler.is_compiling() and not bool(restart.any()):
            return None  # traced, the resets stay a tensor: nothing may branch on its values
        return torch.nn.functional.pad(restart, (1, 0))

    @staticmethod
    def _token_mask_from_4d(attention_mask, past_length, seq_len) -> torch.Tensor:
        """(B, T) real tokens of a 4D mask (as generate() makes for a static cache): a token sees itself
        unless it is a pad. Gathered at an offset that may be a tensor, so a compiled step never branches."""
        index = torch.arange(seq_len, device=attention_mask.device) + past_length  # keys of the new tokens
        rows = attention_mask[:, 0]  # (B, T, S)
        diagonal = rows.gather(-1, index[None, :, None].expand(rows.shape[0], -1, 1))[..., 0]
        return diagonal if diagonal.dtype == torch.bool else diagonal == 0

    @staticmethod
    def _position_ids(padding_mask, past_length, seq_len, device):
        if padding_mask is not None and padding_mask.shape[-1] == past_length + seq_len:
            # Count only real tokens, so a left-padded row sees the same positions as the row alone.
            positions = (padding_mask.long().cumsum(-1) - 1).clamp(min=0)
            return positions[:, -seq_len:]
        return (torch.arange(seq_len, device=device) + past_length).unsqueeze(
            0
        )  # past_length may be a tensor

    def _recurrent_layer(self, past_key_values):
        if past_key_values is None:
            return None
        layers = getattr(past_key_values, "layers", [])
        if len(layers) != self.config.num_hidden_layers or not isinstance(
            layers[-1], LinearAttentionCacheLayerMixin
        ):
            raise ValueError(
                "This cache has no slot for the LSTM memory state; create it with "
                "`DynamicCache(config=model.config)` (generate() does this for you)."
            )
        return layers[-1]


class MemoryTransformerForCausalLM(MemoryTransformerPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def create_masks_for_generate(
        self, config, inputs_embeds, attention_mask, past_key_values, position_ids=None, **kwargs
    ):
        """With a static cache, generate() makes the 4D mask ahead of each step, so that a compiled step
        sees fixed shapes. Every layer attends causally over the whole window: one mask serves them all."""
        return create_causal_mask(config, inputs_embeds, attention_mask, past_key_values, position_ids)

    def __init__(self, config: MemoryTransformerConfig):
        super().__init__(config)
        self.model = MemoryTransformerModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast | tuple:
        """`labels` are the input ids (-100 where ignored); the shift happens inside the loss."""
        return_dict = self.config.return_dict if return_dict is None else return_dict
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )
        logits = self.lm_head(slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep))
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs
            )
        output = CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return output if return_dict else output.to_tuple()


class MemoryTransformerForSequenceClassification(MemoryTransformerPreTrainedModel):
    """Classifies from the last real token, which has read the whole text (and carries the LSTM state).

    The logits are divided by ``config.classifier_temperature`` (fitted after training), so the
    probabilities that ``pipeline("text-classification")`` reports are calibrated."""

    def __init__(self, config: MemoryTransformerConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = MemoryTransformerModel(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutputWithPast | tuple:
        return_dict = self.config.return_dict if return_dict is None else return_dict
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        last = last_token_index(input_ids, attention_mask, self.config.pad_token_id, hidden_states.shape[1])
        pooled_logits = self.score(hidden_states[torch.arange(hidden_states.shape[0]), last])
        pooled_logits = pooled_logits / self.config.classifier_temperature
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=pooled_logits, labels=labels, pooled_logits=pooled_logits, config=self.config
            )
        output = SequenceClassifierOutputWithPast(
            loss=loss,
            logits=pooled_logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return output if return_dict else output.to_tuple()


def last_token_index(input_ids, attention_mask, pad_token_id, seq_len) -> torch.Tensor:
    """Index of each row's last real token, for left or right padding."""
    if attention_mask is not None and attention_mask.dim() == 2:
        real = attention_mask[:, -seq_len:].bool()
    elif input_ids is not None and pad_token_id is not None:
        real = input_ids != pad_token_id
    else:
        return torch.full((1,), seq_len - 1, dtype=torch.long)
    positions = torch.arange(seq_len, device=real.device)
    return (real * positions).argmax(-1)


__all__ = [
    "MemoryTransformerPreTrainedModel",
    "MemoryTransformerModel",
    "MemoryTransformerForCausalLM",
    "MemoryTransformerForSequenceClassification",
]
