"""Long-term memory past the attention window: segment recurrence.

Follows Transformer-XL (Dai et al., 2019): a long text runs window by window, each window attending to
itself and, as an option, to the cached keys and values of the tokens just before it; and the Recurrent
Memory Transformer (Bulatov et al., 2022): a recurrent state carried from window to window, here the
LSTM's (h, c) held in the cache. Gradients flow through the carried state for a set number of windows
(truncated back-propagation through time). Memory stays constant as a document grows; time is linear.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel, Trainer


@dataclass
class WindowOutput:
    start: int  # first token of the window in the whole sequence
    end: int
    logits: torch.Tensor  # (B, end - start, vocab)
    loss_sum: torch.Tensor | None  # summed next-token loss over this window's labelled tokens
    num_tokens: int
    attentions: tuple | None
    past_key_values: DynamicCache  # the memory after this window: what the next window starts from


def window_size(model: PreTrainedModel) -> int:
    return model.config.max_position_embeddings


def carry_over(
    config, cache: DynamicCache | None, carry_kv: int, carry_state: bool, detach: bool
) -> DynamicCache:
    """A fresh cache for the next window: the LSTM state and the last `carry_kv` keys/values of `cache`."""
    new = DynamicCache(config=config)
    if cache is None:
        return new
    if carry_state and config.use_lstm:
        old = cache.layers[-1]
        if old.is_recurrent_states_initialized[0]:
            for index in (0, 1):
                state = old.recurrent_states[index]
                new.layers[-1].update_recurrent_state(state.detach() if detach else state, state_idx=index)
    if carry_kv > 0:
        for old_layer, new_layer in zip(cache.layers, new.layers, strict=True):
            keys, values = old_layer.keys[:, :, -carry_kv:], old_layer.values[:, :, -carry_kv:]
            if detach:
                keys, values = keys.detach(), values.detach()
            new_layer.update(keys, values)
    return new


def _check(config, window: int, carry_kv: int) -> int:
    if window < 1 or window > config.max_position_embeddings and config.position_embedding_type == "learned":
        raise ValueError(
            f"window must be between 1 and max_position_embeddings={config.max_position_embeddings}, got {window}."
        )
    if not 0 <= carry_kv < window:
        raise ValueError(f"carry_kv must be in [0, window={window}), got {carry_kv}.")
    return window - carry_kv


def windowed_forward(
    model,
    input_ids: torch.LongTensor,
    window: int | None = None,
    carry_kv: int = 0,
    carry_state: bool = True,
    labels: torch.LongTensor | None = None,
    bptt_windows: int | None = None,
    output_attentions: bool = False,
    config=None,
) -> Iterator[WindowOutput]:
    """Run `input_ids` (B, N) of any length window by window, carrying memory across windows.

    Each window holds `window - carry_kv` new tokens and attends to them plus the `carry_kv` carried
    keys/values. `carry_state=False` drops the LSTM state at every window: attention alone. With
    `bptt_windows=k` the carried state is detached every k windows (truncated BPTT). `labels` are
    aligned with `input_ids` (-100 where ignored); the shift crosses window boundaries.
    """
    config = config or model.config
    step = _check(config, window or config.max_position_embeddings, carry_kv)
    targets = None
    if labels is not None:
        # Position t predicts token t + 1, which may sit in the next window.
        targets = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
    cache = None
    for index, start in enumerate(range(0, input_ids.shape[1], step)):
        end = min(start + step, input_ids.shape[1])
        detach = bptt_windows is not None and index % bptt_windows == 0
        cache = carry_over(config, cache, carry_kv, carry_state, detach)
        out = model(
            input_ids=input_ids[:, start:end],
            past_key_values=cache,
            use_cache=True,
            output_attentions=output_attentions,
        )
        loss_sum, num_tokens = None, 0
        if targets is not None:
            window_targets = targets[:, start:end]
            num_tokens = int((window_targets != -100).sum())
            loss_sum = torch.nn.functional.cross_entropy(
                out.logits.flatten(0, 1).float(), window_targets.flatten(), ignore_index=-100, reduction="sum"
            )
        yield WindowOutput(start, end, out.logits, loss_sum, num_tokens, out.attentions, cache)


def windowed_logits(model, input_ids: torch.LongTensor, **kwargs) -> torch.Tensor:
    return torch.cat([out.logits for out in windowed_forward(model, input_ids, **kwargs)], dim=1)


@torch.no_grad()
def score_document(
    model, input_ids: torch.LongTensor, window: int | None = None, carry_kv: int = 0, carry_state: bool = True
) -> dict:
    """Perplexity of a document of any length, window by window; memory does not grow with its length."""
    nll, tokens = 0.0, 0
    for out in windowed_forward(model, input_ids, window, carry_kv, carry_state, labels=input_ids):
        nll += float(out.loss_sum)
        tokens += out.num_tokens
    mean = nll / max(tokens, 1)
    return {"nll": mean, "tokens": tokens, "perplexity": float(torch.tensor(mean).exp())}


@torch.no_grad()
def generate_long(
    model,
    input_ids: torch.LongTensor,
    max_new_tokens: int,
    window: int | None = None,
    carry_kv: int = 0,
    **kwargs,
) -> torch.LongTensor:
    """`generate()` past the attention window: window after window, the LSTM state (and the last
    `carry_kv` keys/values) carried over. Returns the prompt followed by the new tokens."""
    config = model.config
    window = window or config.max_position_embeddings
    _check(config, window, carry_kv)
    if window - carry_kv < 2:
        raise ValueError("window - carry_kv must leave room for at least 2 tokens.")
    # Read the prompt, all but its last token, window by window; generate() continues from that state.
    cache = None
    if input_ids.shape[1] > 1:
        *_, last = windowed_forward(model, input_ids[:, :-1], window, carry_kv)
        cache = last.past_key_values
    sequence = input_ids
    remaining = max_new_tokens
    min_remaining = kwargs.pop("min_new_tokens", 0) or 0
    eos = config.eos_token_id
    while remaining > 0:
        cache = carry_over(config, cache, carry_kv, carry_state=True, detach=True)
        kept = cache.get_seq_length()
        context = sequence[:, sequence.shape[1] - kept - 1 :]
        new_tokens = min(remaining, window - kept - 1)
        out = model.generate(
            context,
            attention_mask=torch.ones_like(context),
            past_key_values=cache,
            max_new_tokens=new_tokens,
            min_new_tokens=min(min_remaining, new_tokens),
            return_dict_in_generate=True,
            **kwargs,
        )
        generated = out.sequences[:, context.shape[1] :]
        sequence = torch.cat([sequence, generated], dim=1)
        remaining -= generated.shape[1]
        min_remaining = max(0, min_remaining - generated.shape[1])
        cache = out.past_key_values
        if generated.shape[1] < new_tokens or (eos is not None and bool((generated == eos).any(-1).all())):
            break
    return sequence


@torch.no_grad()
def chrono_init_(model: torch.nn.Module, max_steps: int, seed: int = 0) -> None:
    """Chrono initialization of every LSTM in ``model`` (Tallec & Ollivier, 2018): forget-gate biases
    log(U(1, max_steps - 1)) and input-gate biases their negatives, so that the cells keep what they hold
    over spans of up to about ``max_steps`` tokens from the start, and gradients reach that far back."""
    if max_steps < 3:
        raise ValueError(f"max_steps must be at least 3 tokens, got {max_steps}.")
    generator = torch.Generator().manual_seed(seed)
    lstms = [module for module in model.modules() if isinstance(module, torch.nn.LSTM)]
    if not lstms:
        raise ValueError("This model has no LSTM to initialize; chrono initialization needs use_lstm=True.")
    for lstm in lstms:
        hidden = lstm.hidden_size
        for layer in range(lstm.num_layers):
            forget = torch.empty(hidden).uniform_(1, max_steps - 1, generator=generator).log()
            bias_ih, bias_hh = getattr(lstm, f"bias_ih_l{layer}"), getattr(lstm, f"bias_hh_l{layer}")
            # PyTorch's gate order: input, forget, cell, output; the two biases are summed.
            bias_ih[:hidden] = -forget.to(bias_ih)
            bias_ih[hidden : 2 * hidden] = forget.to(bias_ih)
            bias_hh[: 2 * hidden] = 0


@torch.no_grad()
def shrink_window(model: PreTrainedModel, window: int, tokenizer=None) -> None:
    """Makes ``window`` the model's attention window (``max_position_embeddings``): a model fine-tuned to
    read window by window at ``window`` then reads that way by default, in the app too. With
    ``tokenizer``, its ``model_max_length`` follows, so ``truncation=True`` (as pipelines use it) cuts
    texts to the new window."""
    config = model.config
    if not 0 < window <= config.max_position_embeddings:
        raise ValueError(f"window must be in [1, {config.max_position_embeddings}], got {window}.")
    if tokenizer is not None and tokenizer.model_max_length > window:
        tokenizer.model_max_length = window
    if window == config.max_position_embeddings:
        return
    if config.position_embedding_type == "learned":
        old = model.base_model.embed_positions
        new = torch.nn.Embedding(window, old.embedding_dim, device=old.weight.device, dtype=old.weight.dtype)
        new.weight.copy_(old.weight[:window])
        model.base_model.embed_positions = new
    config.max_position_embeddings = window


class RecurrentTrainer(Trainer):
    """A Trainer whose loss runs each (long) training sequence window by window with the memory carried,
    back-propagating through the carried state for `bptt_windows` windows at a time."""

    def __init__(self, *args, window=None, carry_kv=0, carry_state=True, bptt_windows=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.window, self.carry_kv, self.carry_state, self.bptt_windows = (
            window,
            carry_kv,
            carry_state,
            bptt_windows,
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.get("labels", inputs["input_ids"])
        config = self.accelerator.unwrap_model(model).config
        loss_sum, tokens = 0.0, 0
        for out in windowed_forward(
            model,
            inputs["input_ids"],
            self.window,
            self.carry_kv,
            self.carry_state,
            labels=labels,
            bptt_windows=self.bptt_windows,
            config=config,
        ):
            loss_sum = loss_sum + out.loss_sum
            tokens += out.num_tokens
        loss = loss_sum / max(tokens, 1)
        return (loss, {"loss": loss}) if return_outputs else loss


def windowed_classification_logits(
    model,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None = None,
    window: int | None = None,
    carry_state: bool = True,
    bptt_windows: int | None = None,
) -> torch.Tensor:
    """(B, num_labels) of texts of any length read window by window, the LSTM state carried over.

    The rows are left-padded, so that every text ends at the last column: windows are cut from the end
    (the first may be shorter) and every text's last token is in the last window, whose logits (read at
    each row's last token, by the head) are returned. A window that holds only padding for a row leaves
    its state as it was. ``carry_state=False`` reads the last window alone. With ``bptt_windows=k`` the
    carried state is detached every k windows (truncated back-propagation through time).
    """
    config = model.config
    window = window or config.max_position_embeddings
    _check(config, window, 0)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    elif bool((attention_mask[:, -1] == 0).any()):
        raise ValueError(
            "windowed_classification_logits reads left-padded rows: each must end with a real token."
        )
    length = input_ids.shape[1]
    first = length - (length - 1) // window * window  # the first window's length, 1..window
    bounds = [(0, first)] + [(start, start + window) for start in range(first, length, window)]
    if not carry_state:
        bounds = bounds[-1:]
    cache = None
    for index, (start, end) in enumerate(bounds):
        detach = bptt_windows is not None and index % bptt_windows == 0
        cache = carry_over(config, cache, 0, carry_state, detach)
        out = model(
            input_ids=input_ids[:, start:end],
            attention_mask=attention_mask[:, start:end],
            past_key_values=cache,
            use_cache=True,
        )
    return out.logits


class WindowedClassificationTrainer(Trainer):
    """A Trainer for sequence classification whose texts (left-padded, up to several windows long) are
    read window by window with the LSTM state carried, back-propagating through the carried state (for
    ``bptt_windows`` windows at a time): the classifier learns to use what earlier windows held."""

    def __init__(self, *args, window: int | None = None, bptt_windows: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.window, self.bptt_windows = window, bptt_windows

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logits = windowed_classification_logits(
            model,
            inputs["input_ids"],
            inputs.get("attention_mask"),
            self.window,
            bptt_windows=self.bptt_windows,
        )
        loss = torch.nn.functional.cross_entropy(logits.float(), inputs["labels"])
        return (loss, {"loss": loss, "logits": logits}) if return_outputs else loss
