"""A ``DynamicCache`` whose keys and values are written into tensors reserved for a batch's last position.

``DynamicLayer`` concatenates on every step, copying the whole cache per token; a reserving layer writes
each step in place and reads views (docs/serving.md has the measurement). Only ``update`` differs, so
everything else (``reorder_cache``, the LSTM's recurrent state) works as before.
"""

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, LinearAttentionAndFullAttentionLayer


def reserved_update(layer, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
    """``DynamicLayer.update`` with the keys and values written into tensors with room for the batch's
    last position, and read as views of them, instead of the whole cache copied per token
    (``bench/batch_decoding.py`` measures both). After rows leave (``reorder_cache`` makes compact
    tensors) the next step reserves again."""
    if not layer.is_initialized:
        layer.lazy_initialization(key_states, value_states)
    length = layer.keys.shape[-2] if layer.keys.numel() else 0
    end = length + key_states.shape[-2]
    reserved = getattr(layer, "reserved", None)
    if reserved is None or layer.keys.data_ptr() != reserved[0].data_ptr() or end > reserved[0].shape[-2]:
        size = max(end, layer.positions)
        keys = key_states.new_empty((*key_states.shape[:2], size, key_states.shape[-1]))  # (B, nh, S, hd)
        values = value_states.new_empty((*value_states.shape[:2], size, value_states.shape[-1]))
        if length:
            keys[:, :, :length], values[:, :, :length] = layer.keys, layer.values
        reserved = layer.reserved = (keys, values)
    keys, values = reserved
    keys[:, :, length:end], values[:, :, length:end] = key_states, value_states
    layer.keys, layer.values = keys[:, :, :end], values[:, :, :end]
    return layer.keys, layer.values


class ReservedLayer(DynamicLayer):
    positions = 0  # to reserve; set for each batch
    update = reserved_update


class ReservedHybridLayer(LinearAttentionAndFullAttentionLayer):
    positions = 0
    update = reserved_update


RESERVED_LAYERS = {DynamicLayer: ReservedLayer, LinearAttentionAndFullAttentionLayer: ReservedHybridLayer}


def reserving_cache(config, positions: int) -> DynamicCache:
    """``DynamicCache(config=config)`` whose full-attention layers reserve ``positions`` (the others,
    e.g. sliding windows, stay as they are)."""
    cache = DynamicCache(config=config)
    for layer in cache.layers:
        if (reserved := RESERVED_LAYERS.get(type(layer))) is not None:
            layer.__class__ = reserved  # the same state; only update() differs
            layer.positions = positions
    return cache
