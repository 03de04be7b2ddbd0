"""Attention over a prompt that every row of a decoding batch shares, its keys and values kept once.

Users of the demo often send the same prompt (an example's, or one text asked for several samples),
and a batch's rows then differ only after it. Decoding keeps every row's keys and values, so a step of
16 rows over a shared 128-token prompt reads the prompt's keys and values 16 times; at that length the
reading is much of the step (SDPA took 39% of the time of 16 rows making 128 tokens after a 128-token
prompt, in ``torch.profiler``). Here the shared part is kept once, (1, nh, P, hd), and each row keeps
only its own tokens after it: every row's queries meet the shared keys in one matrix product per head,
which reads them once, and their own keys in a product per row; both sets of scores go through one
softmax, so a row attends as it would to its whole context (to rounding: the sums run in another
order). This is the cascade (shared-prefix) attention of Hydragen (Juravsky et al., 2024), written
with plain PyTorch products.

``install(model)`` registers the function with Transformers' attention interface and makes it the
model's implementation. A call without ``shared_prefix`` (every call but the batcher's decoding
steps) goes to SDPA as before, so the model computes what it did everywhere else.

Shapes: B rows, nh heads, T new tokens per row, P shared tokens, S a row's own tokens, hd head size.
"""

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "llm_memory_shared_prefix"


def shared_prefix_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    shared_prefix: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """SDPA, or with ``shared_prefix`` (the shared keys and values of each layer, by layer index), the
    attention of each row over the shared tokens followed by its own (``key``, ``value``). The mask,
    SDPA's (True where a query may attend, or None for causal), covers a row's own tokens only: every
    shared token comes before them and is seen by all."""
    if shared_prefix is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    prefix_keys, prefix_values = shared_prefix[module.layer_idx]  # (1, nh, P, hd)
    batch, heads, length, head_dim = query.shape
    scaling = head_dim**-0.5 if scaling is None else scaling
    query = query * scaling  # before the mask, which is added to scaled scores
    queries = query.transpose(0, 1).reshape(heads, batch * length, head_dim)  # (nh, B*T, hd)
    prefix_scores = torch.bmm(queries, prefix_keys[0].transpose(1, 2))  # (nh, B*T, P)
    prefix_scores = prefix_scores.view(heads, batch, length, -1).transpose(0, 1)  # (B, nh, T, P)
    own_scores = torch.matmul(query, key.transpose(2, 3))  # (B, nh, T, S)
    if attention_mask is None and length > 1:  # causal among the new tokens
        own_length = key.shape[2]
        attention_mask = torch.ones(length, own_length, dtype=torch.bool, device=query.device).tril(
            own_length - length
        )
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            own_scores = own_scores.masked_fill(~attention_mask, -torch.inf)
        else:
            own_scores = own_scores + attention_mask
    scores = torch.cat((prefix_scores, own_scores), dim=-1)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    shared = prefix_keys.shape[2]
    prefix_weights = weights[..., :shared].transpose(0, 1).reshape(heads, batch * length, shared)
    output = torch.bmm(prefix_weights, prefix_values[0]).view(heads, batch, length, head_dim).transpose(0, 1)
    output = output + torch.matmul(weights[..., shared:], value)  # (B, nh, T, hd)
    return output.transpose(1, 2).contiguous(), None  # (B, T, nh, hd), as SDPA's


def install(model: PreTrainedModel) -> bool:
    """Makes ``shared_prefix_attention`` the attention of ``model`` if it runs SDPA (otherwise its
    own kernel stays); whether it did. SDPA's masks serve it."""
    if model.config._attn_implementation == NAME:
        return True
    if model.config._attn_implementation != "sdpa":
        return False
    AttentionInterface.register(NAME, shared_prefix_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)
    return model.config._attn_implementation == NAME
