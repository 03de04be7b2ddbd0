"""The LSTM memory layer of the memory transformer: a residual LSTM over the contextual embeddings.

Its (h, c) state is what the model carries past its attention window (segment recurrence, as in the
Recurrent Memory Transformer): the model stores it in the cache's last layer. Pads are skipped, packed
sequences start from a fresh state, and a traced path (torch.compile, torch.export) steps the cell
function without branching on values.

This file is copied next to the weights with the model's: it imports only torch.

Shapes: B batch, T tokens, H hidden size, L LSTM layers.
"""

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .configuration_memory_transformer import MemoryTransformerConfig


class MemoryTransformerLSTMMemory(nn.Module):
    """Residual LSTM over the contextual embeddings: x + W·LSTM(ln(x)).

    Pad tokens are skipped, not fed: each row's real tokens are packed to the front, run as a packed
    sequence, and put back, so a padded row's state and outputs equal those of the row alone. A row
    that packs several sequences (``resets`` marks where each after the first begins, as position ids
    that restart show it) runs each from a fresh state, as if it were alone; the row's state after it
    is its last sequence's.
    """

    def __init__(self, config: MemoryTransformerConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.lstm = nn.LSTM(
            config.hidden_size, config.hidden_size, num_layers=config.lstm_num_layers, batch_first=True
        )
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        token_mask: torch.Tensor | None,
        state: tuple[torch.Tensor, torch.Tensor] | None,
        resets: torch.Tensor | None = None,
        keep_state: bool = True,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """``keep_state=False`` (no cache to store it in) returns no state, which allows a faster path."""
        x = self.norm(hidden_states)
        if torch.compiler.is_compiling():
            # Traced for torch.export or torch.compile: Dynamo does not trace nn.LSTM, and nothing may
            # branch on the mask's or the resets' values, so the cell function runs step by step.
            if token_mask is None:
                token_mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
            memory, new_state = self._masked_steps(x, token_mask, state, resets)
            return hidden_states + self.dropout(self.out_proj(memory)), new_state
        if resets is not None:
            memory, new_state = self._segmented(x, token_mask, state, resets)
            return hidden_states + self.dropout(self.out_proj(memory)), new_state
        no_padding = token_mask is None or bool(token_mask.all())
        if no_padding and x.shape[1] == 1:
            memory, new_state = self._step(x[:, 0], state)
        elif no_padding:
            memory, new_state = self.lstm(x, state)
        elif not keep_state and bool((token_mask[:, 1:] <= token_mask[:, :-1]).all()):
            # Padding on the right only, as in training batches: the pads come after every real token,
            # so the fused kernel over the whole row gives the real tokens' outputs exactly; only the
            # state after the row would differ, and it is not kept. Packing costs ~1.6x the step.
            memory, new_state = self.lstm(x, state)[0] * token_mask[..., None], None
        else:
            memory, new_state = self._packed(x, token_mask, state)
        return hidden_states + self.dropout(self.out_proj(memory)), new_state

    def _step(self, inputs, state):
        # One token (a decoding step): the fused sequence kernel copies all LSTM weights on every call,
        # which costs more than the step itself; the cell function reads them in place.
        if state is None:
            zeros = inputs.new_zeros(self.lstm.num_layers, inputs.shape[0], self.lstm.hidden_size)
            state = (zeros, zeros)
        hs, cs = [], []
        for layer in range(self.lstm.num_layers):
            h, c = torch.lstm_cell(
                inputs,
                (state[0][layer], state[1][layer]),
                getattr(self.lstm, f"weight_ih_l{layer}"),
                getattr(self.lstm, f"weight_hh_l{layer}"),
                getattr(self.lstm, f"bias_ih_l{layer}"),
                getattr(self.lstm, f"bias_hh_l{layer}"),
            )
            hs.append(h)
            cs.append(c)
            inputs = h
        return inputs[:, None], (torch.stack(hs), torch.stack(cs))

    def _masked_steps(self, x, token_mask, state, resets=None):
        """Token by token with the cell function, a pad leaving the state as it was and a packed
        sequence's first token starting from zeros: the packed and segmented paths' results without
        their data-dependent lengths, for tracing."""
        zeros = x.new_zeros(self.lstm.num_layers, x.shape[0], self.lstm.hidden_size)
        if state is None:
            state = (zeros, zeros)
        outputs = []
        for t in range(x.shape[1]):
            if resets is not None:
                fresh = resets[None, :, t, None]  # (1, B, 1)
                state = (torch.where(fresh, zeros, state[0]), torch.where(fresh, zeros, state[1]))
            keep = token_mask[:, t, None]  # (B, 1)
            output, (h, c) = self._step(x[:, t], state)
            state = (torch.where(keep, h, state[0]), torch.where(keep, c, state[1]))
            outputs.append(output[:, 0] * keep)
        return torch.stack(outputs, dim=1), state

    def _packed(self, x, token_mask, state):
        batch_size, seq_len, _ = x.shape
        lengths = token_mask.sum(-1)
        # A stable sort on "is pad" moves each row's real tokens to the front, in order.
        order = torch.argsort((~token_mask).to(torch.int8), dim=-1, stable=True)
        index = order[..., None].expand_as(x)
        packed = pack_padded_sequence(
            x.gather(1, index), lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        memory, (h, c) = self.lstm(packed, state)
        memory, _ = pad_packed_sequence(memory, batch_first=True, total_length=seq_len)
        memory = torch.zeros_like(memory).scatter(1, index, memory) * token_mask[..., None]
        empty = lengths == 0
        if bool(empty.any()):  # a row of pads only leaves its state as it was
            h0, c0 = state if state is not None else (torch.zeros_like(h), torch.zeros_like(c))
            h = torch.where(empty[None, :, None], h0, h)
            c = torch.where(empty[None, :, None], c0, c)
        return memory, (h, c)

    def _segmented(self, x, token_mask, state, resets):
        """Each packed sequence of each row as a row of its own: the first starts from the row's
        state, the others from zeros; outputs go back in place."""
        batch_size, seq_len, hidden = x.shape
        mask = token_mask if token_mask is not None else torch.ones_like(resets)
        segments = []  # (row, start, end)
        for row in range(batch_size):
            starts = [0, *resets[row].nonzero().flatten().tolist()]
            segments += [(row, start, end) for start, end in zip(starts, [*starts[1:], seq_len], strict=True)]
        longest = max(end - start for _, start, end in segments)
        pad = torch.nn.functional.pad
        inputs = torch.stack(
            [pad(x[row, start:end], (0, 0, 0, longest - end + start)) for row, start, end in segments]
        )
        masks = torch.stack(
            [pad(mask[row, start:end], (0, longest - end + start)) for row, start, end in segments]
        )
        initial = None
        if state is not None:
            first = torch.tensor([start == 0 for _, start, _ in segments], device=x.device)
            rows = torch.tensor([row for row, _, _ in segments], device=x.device)
            initial = tuple(
                torch.where(first[None, :, None], s[:, rows], torch.zeros_like(s[:, rows])) for s in state
            )
        memory, (h, c) = self._packed(inputs, masks.bool(), initial)
        output = torch.cat(
            [
                torch.cat(
                    [memory[i, : end - start] for i, (r, start, end) in enumerate(segments) if r == row]
                )
                for row in range(batch_size)
            ]
        ).view(batch_size, seq_len, hidden)
        last = [max(i for i, (r, _, _) in enumerate(segments) if r == row) for row in range(batch_size)]
        return output, (h[:, last], c[:, last])
