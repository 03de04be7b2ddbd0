"""Segment recurrence: window-by-window scoring, state carry-over, truncated BPTT, long generation."""

import copy
import functools
import math

import pytest
import torch
from transformers import DynamicCache

from llm_memory.memory.recurrence import (
    RecurrentTrainer,
    WindowedClassificationTrainer,
    chrono_init_,
    generate_long,
    score_document,
    shrink_window,
    windowed_classification_logits,
    windowed_forward,
    windowed_logits,
)

WINDOW = 16


@pytest.fixture
def tiny_lm(tiny_lm):
    """The suite's tiny LM with this file's window."""
    return functools.partial(tiny_lm, max_position_embeddings=WINDOW)


@pytest.fixture
def tiny_classifier(tiny_classifier):
    """The suite's tiny classifier with this file's window."""
    return functools.partial(tiny_classifier, max_position_embeddings=WINDOW)


def ids_of(length, batch=2, seed=1):
    return torch.randint(5, 97, (batch, length), generator=torch.Generator().manual_seed(seed))


def by_hand(model, ids):
    """Each window its own model() call, starting from the LSTM state the previous call ended with."""
    logits, state = [], None
    for start in range(0, ids.shape[1], WINDOW):
        cache = DynamicCache(config=model.config)
        if state is not None:
            for index, tensor in enumerate(state):
                cache.layers[-1].update_recurrent_state(tensor, state_idx=index)
        logits.append(model(ids[:, start : start + WINDOW], past_key_values=cache, use_cache=True).logits)
        state = [cache.layers[-1].recurrent_states[i].clone() for i in (0, 1)]
    return torch.cat(logits, dim=1)


@pytest.mark.parametrize("position_embedding_type", ["learned", "sinusoidal", "rope"])
def test_long_sequence_in_one_call_equals_window_by_window_with_carried_state(
    tiny_lm, position_embedding_type
):
    model = tiny_lm(position_embedding_type=position_embedding_type)
    ids = ids_of(WINDOW * 4 + 5)
    with torch.no_grad():
        one_call = windowed_logits(model, ids)
        torch.testing.assert_close(one_call, by_hand(model, ids), atol=1e-5, rtol=1e-5)
        # The first window is a plain forward pass; later windows see the past only through the LSTM.
        torch.testing.assert_close(one_call[:, :WINDOW], model(ids[:, :WINDOW]).logits, atol=1e-5, rtol=1e-5)
        alone = model(ids[:, WINDOW : 2 * WINDOW]).logits
        assert (one_call[:, WINDOW : 2 * WINDOW] - alone).abs().max() > 1e-3


@pytest.mark.parametrize("use_lstm", [True, False])
def test_attention_alone_forgets_past_the_window(tiny_lm, use_lstm):
    model = tiny_lm(use_lstm=use_lstm)
    ids = ids_of(WINDOW * 3)
    with torch.no_grad():
        forgetful = windowed_logits(model, ids, carry_state=False)
        for start in range(0, ids.shape[1], WINDOW):
            window = ids[:, start : start + WINDOW]
            torch.testing.assert_close(
                forgetful[:, start : start + WINDOW], model(window).logits, atol=1e-5, rtol=1e-5
            )


def test_carried_keys_and_values_reach_into_the_previous_window(tiny_lm):
    model = tiny_lm(use_lstm=False, position_embedding_type="rope")
    ids = ids_of(40)
    with torch.no_grad():
        outputs = list(windowed_forward(model, ids, carry_kv=8))
        assert [(o.start, o.end) for o in outputs] == [(0, 8), (8, 16), (16, 24), (24, 32), (32, 40)]
        assert all(o.past_key_values.get_seq_length() <= WINDOW for o in outputs)
        # Window 2 attends to the 8 tokens before it: the same as a forward pass over those 16 tokens.
        torch.testing.assert_close(outputs[1].logits, model(ids[:, :16]).logits[:, 8:], atol=1e-5, rtol=1e-5)


def test_score_document_matches_summed_window_losses_and_keeps_memory_constant(tiny_lm):
    model = tiny_lm()
    ids = ids_of(WINDOW * 16, batch=1)
    with torch.no_grad():
        scored = score_document(model, ids)
        logits = windowed_logits(model, ids)
    expected = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:])
    assert scored["tokens"] == ids.shape[1] - 1
    assert scored["nll"] == pytest.approx(float(expected), rel=1e-5)
    assert scored["perplexity"] == pytest.approx(float(expected.exp()), rel=1e-5)
    sizes = {o.past_key_values.layers[0].keys.shape for o in windowed_forward(model, ids)}
    assert max(shape[2] for shape in sizes) == WINDOW  # the cache never grows past one window


@pytest.mark.parametrize(("bptt_windows", "reaches_back"), [(None, True), (2, True), (1, False)])
def test_truncated_bptt_cuts_gradients_at_the_set_number_of_windows(tiny_lm, bptt_windows, reaches_back):
    model = tiny_lm().train()
    ids = ids_of(WINDOW * 2, batch=1)
    labels = ids.clone()
    labels[:, : WINDOW + 1] = -100  # only the second window's predictions count
    embeddings = []
    hook = model.model.embed_tokens.register_forward_hook(
        lambda m, i, out: out.retain_grad() or embeddings.append(out)
    )
    loss = sum(o.loss_sum for o in windowed_forward(model, ids, labels=labels, bptt_windows=bptt_windows))
    loss.backward()
    hook.remove()
    first_window_grad = embeddings[0].grad
    assert (first_window_grad is not None and first_window_grad.abs().sum() > 0) == reaches_back


def test_generate_past_the_window(tiny_lm):
    model = tiny_lm()
    prompt = ids_of(5, batch=1)
    kwargs = dict(do_sample=False, pad_token_id=0, min_new_tokens=60)
    first = generate_long(model, prompt, max_new_tokens=60, carry_kv=4, **kwargs)
    again = generate_long(model, prompt, max_new_tokens=60, carry_kv=4, **kwargs)
    assert first.shape == (1, 65) and torch.equal(first, again)
    assert torch.equal(first[:, :5], prompt)


def test_recurrent_trainer_trains_on_sequences_longer_than_the_window(tiny_lm, tmp_path):
    from datasets import Dataset
    from transformers import TrainingArguments

    model = tiny_lm().train()
    ids = ids_of(WINDOW * 3, batch=8)
    data = Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=6, learning_rate=1e-2,
        logging_steps=1, report_to=[], save_strategy="no", use_cpu=True,
    )  # fmt: skip
    trainer = RecurrentTrainer(model=model, args=args, train_dataset=data, bptt_windows=2)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 6 and losses[-1] < losses[0]


def test_bad_window_arguments_are_refused(tiny_lm):
    model = tiny_lm()
    with pytest.raises(ValueError, match="carry_kv"):
        next(windowed_forward(model, ids_of(20), carry_kv=WINDOW))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        next(windowed_forward(model, ids_of(20), window=WINDOW * 2))


def test_chrono_init_sets_gate_biases_for_long_memories(tiny_lm):
    model = tiny_lm(lstm_num_layers=2)
    chrono_init_(model, 300, seed=0)
    lstm = model.model.memory.lstm
    hidden = lstm.hidden_size
    for layer in range(2):
        bias = (getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")).detach()
        forget, input_gate = bias[hidden : 2 * hidden], bias[:hidden]
        assert float(forget.min()) >= 0 and float(forget.max()) <= math.log(299)
        assert float(forget.max()) > math.log(50)  # some cells keep their content for hundreds of tokens
        torch.testing.assert_close(input_gate, -forget)
    with pytest.raises(ValueError, match="needs use_lstm=True"):
        chrono_init_(tiny_lm(use_lstm=False), 300)
    with pytest.raises(ValueError, match="at least 3"):
        chrono_init_(model, 2)


def test_shrink_window_keeps_the_first_positions(tiny_lm):
    model = tiny_lm()
    ids = ids_of(8)
    before = model(ids).logits
    shrink_window(model, 8)
    assert model.config.max_position_embeddings == 8 and model.model.embed_positions.num_embeddings == 8
    torch.testing.assert_close(model(ids).logits, before)
    with pytest.raises(ValueError, match="window must be in"):
        shrink_window(model, 9)


def test_shrink_window_cuts_the_tokenizer_to_the_new_window(tiny_lm, tokenizer):
    # truncation=True (as pipelines use it) must cut texts to the window the model now has.
    tokenizer = copy.deepcopy(tokenizer)
    model, before = tiny_lm(), tokenizer.model_max_length
    shrink_window(model, 8, tokenizer)
    assert tokenizer.model_max_length == 8 < before
    assert len(tokenizer("a long text " * 20, truncation=True)["input_ids"]) == 8
    shrink_window(model, 8, tokenizer)  # the same window again changes nothing
    assert tokenizer.model_max_length == 8


# --- classification read window by window --------------------------------------------------------------


def left_padded(sequences):
    width = max(len(s) for s in sequences)
    ids = torch.zeros(len(sequences), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq) :], mask[row, width - len(seq) :] = seq, 1
    return ids, mask


def test_windowed_classification_of_a_batch_equals_each_text_alone(tiny_classifier):
    model = tiny_classifier()
    # One window short, several windows, a window and a bit: rows that are all padding in early windows.
    sequences = [ids_of(n, batch=1, seed=n)[0] for n in (5, WINDOW * 3 + 2, WINDOW + 1)]
    ids, mask = left_padded(sequences)
    with torch.no_grad():
        batched = windowed_classification_logits(model, ids, mask)
        for row, seq in enumerate(sequences):
            alone = windowed_classification_logits(model, seq[None])
            torch.testing.assert_close(batched[row], alone[0], atol=1e-5, rtol=1e-5)


def test_windowed_classification_uses_earlier_windows_only_with_the_state(tiny_classifier):
    model = tiny_classifier()
    seq = ids_of(WINDOW * 3, batch=1)
    other = seq.clone()
    other[:, :WINDOW] = ids_of(WINDOW, batch=1, seed=7)  # a different first window, the same last two
    with torch.no_grad():
        carried = [windowed_classification_logits(model, s) for s in (seq, other)]
        alone = [windowed_classification_logits(model, s, carry_state=False) for s in (seq, other)]
        last_window = model(seq[:, -WINDOW:]).logits
    assert not torch.allclose(carried[0], carried[1])  # the first window reaches the label
    torch.testing.assert_close(alone[0], alone[1])  # read alone, the last window decides
    torch.testing.assert_close(alone[0], last_window)


def test_windowed_classification_gradients_reach_the_first_window_and_stay_finite(tiny_classifier):
    model = tiny_classifier().train()
    ids, mask = left_padded([ids_of(n, batch=1, seed=n)[0] for n in (3, WINDOW * 2 + 3)])
    embeddings = []
    hook = model.model.embed_tokens.register_forward_hook(
        lambda m, i, out: out.retain_grad() or embeddings.append(out)
    )
    logits = windowed_classification_logits(model, ids, mask)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
    hook.remove()
    assert embeddings[0].grad[1].abs().sum() > 0  # the long text's first window
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_windowed_classification_refuses_right_padding(tiny_classifier):
    model = tiny_classifier()
    with pytest.raises(ValueError, match="left-padded"):
        windowed_classification_logits(model, ids_of(4), torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]))


def test_windowed_classification_trainer_trains_and_evaluates_through_the_windows(tiny_classifier, tmp_path):
    from datasets import Dataset
    from transformers import TrainingArguments

    # Labels from the first token, which only the carried state brings to the last window.
    model = tiny_classifier().train()
    ids = ids_of(WINDOW * 3, batch=64)
    labels = (ids[:, 0] % 2).tolist()
    data = Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels})
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=16, max_steps=8, learning_rate=5e-3,
        logging_steps=1, report_to=[], save_strategy="no", use_cpu=True,
    )  # fmt: skip
    trainer = WindowedClassificationTrainer(model=model, args=args, train_dataset=data, bptt_windows=3)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 8 and all(math.isfinite(loss) for loss in losses)
    metrics = trainer.evaluate(data)
    assert math.isfinite(metrics["eval_loss"])
