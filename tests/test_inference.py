"""The demo's task functions on tiny random models: parity with generate(), input checks, attributions,
summaries and attention at the level of readable pieces. Nothing is downloaded."""

import math
import threading
import time
from functools import partial

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from transformers import DynamicCache

from llm_memory import MemoryTransformerForCausalLM
from llm_memory.demo import figures
from llm_memory.serving import classify_batcher, packed_linear, shared_prefix
from llm_memory.serving.classify_batcher import ClassifyBatcher, classify_ids
from llm_memory.serving.kv_cache import RESERVED_LAYERS, reserving_cache
from llm_memory.serving.loading import ModelLoadError
from llm_memory.serving.models import load_models
from llm_memory.serving.packed_linear import PackedLinear
from llm_memory.serving.rows import Batch, Row
from llm_memory.serving.sampler import WordForms, repeated_ngram_mask
from llm_memory.serving.settings import SERVE_DEFAULTS
from llm_memory.tasks import summarize as summarize_task
from llm_memory.tasks.attention import attention, piece_attention
from llm_memory.tasks.checks import InputError, clean_text, count_removed_characters
from llm_memory.tasks.classify import classify
from llm_memory.tasks.cli import main as tasks_command_line
from llm_memory.tasks.generate import (
    check_generation_settings,
    document_start,
    generate,
    generate_stream,
    prompt_ids,
)
from llm_memory.tasks.summarize import SUMMARY_METHODS, abstract_overlap, summarize
from llm_memory.training.data import split_sentences
from llm_memory.training.tokenization import REPLACEMENT_CHAR, Piece, encode

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_WINDOW = 64


@pytest.fixture(scope="module")
def models(tiny_checkpoints):
    return load_models(tiny_checkpoints["model"], tiny_checkpoints["classifier"])


@pytest.mark.parametrize("packed_wins", [True, False])
def test_load_models_serves_on_packed_linear_layers_where_they_win(
    tiny_checkpoints, monkeypatch, packed_wins
):
    def timed(layer):  # (nn.Linear, packed) seconds per call at 1, 4 and 16 rows
        return {rows: (2.0, 1.0 if packed_wins else 3.0) for rows in (1, 4, 16)}

    monkeypatch.setattr(packed_linear, "kernel_seconds", timed)
    loaded = load_models(tiny_checkpoints["model"], tiny_checkpoints["classifier"])
    for model in (loaded.lm, loaded.classifier):
        assert any(isinstance(module, PackedLinear) for module in model.modules()) == packed_wins
        assert any(type(module) is torch.nn.Linear for module in model.modules()) != packed_wins


@pytest.fixture(scope="module")
def models_with_summarizer(tiny_checkpoints):
    return load_models(
        tiny_checkpoints["model"], tiny_checkpoints["classifier"], tiny_checkpoints["summarizer"]
    )


# --- loading -----------------------------------------------------------------------------------------


def test_load_models_reads_folders(models, tiny_checkpoints):
    assert models.window == TINY_WINDOW
    assert models.max_new_tokens == TINY_WINDOW - 1
    assert (models.num_layers, models.num_heads) == (2, 4)
    assert models.summarizer is None
    assert not models.lm.training and not any(p.requires_grad for p in models.lm.parameters())


def test_summarization_flag_in_config_makes_the_model_its_own_summarizer(tiny_checkpoints):
    models = load_models(tiny_checkpoints["summarizer"], tiny_checkpoints["classifier"])
    assert models.summarizer is models.lm


@pytest.mark.parametrize("role", ["model", "classifier", "summarizer"])
@pytest.mark.parametrize(
    ("folder", "message"), [("missing", "does not exist"), ("empty", "holds no config.json")]
)
def test_missing_or_empty_model_folder_is_a_clear_error(tiny_checkpoints, tmp_path, role, folder, message):
    paths = dict(tiny_checkpoints)
    paths[role] = str(tmp_path / folder)
    if folder == "empty":
        (tmp_path / folder).mkdir()
    with pytest.raises(ModelLoadError, match=message) as info:
        load_models(paths["model"], paths["classifier"], paths["summarizer"])
    assert info.value.role == role
    assert str(tmp_path / folder) in str(info.value)


@pytest.mark.parametrize(
    ("damage", "message"),
    [("truncated", "is truncated or corrupt"), ("nan", r"holds NaN or infinite values \(first in")],
)
def test_a_corrupt_weights_file_is_named_in_the_error(
    tiny_checkpoints, corrupt_copy, tmp_path, damage, message
):
    broken = corrupt_copy(tiny_checkpoints["classifier"], tmp_path, damage)
    with pytest.raises(ModelLoadError, match=message) as info:
        load_models(tiny_checkpoints["model"], str(broken))
    assert info.value.role == "classifier" and str(broken / "model.safetensors") in str(info.value)


# --- input checks ------------------------------------------------------------------------------------


def test_clean_text_strips_control_characters_and_keeps_emoji():
    assert clean_text("a\x00b\x07c\x1b[0m\r\nd\te") == "abc[0m\nd\te"
    assert clean_text("👩\u200d💻 我喜欢编程") == "👩\u200d💻 我喜欢编程"
    assert clean_text("lone \ud800 surrogate") == "lone  surrogate"
    assert count_removed_characters("a\x00b") == 1


@pytest.mark.parametrize("text", ["", "   \n\t", "\x00\x01\x02", None, 42])
def test_empty_or_non_text_is_refused(text):
    with pytest.raises(InputError, match="empty|must be a string"):
        clean_text(text)


def test_overlong_text_is_refused_with_the_limit():
    with pytest.raises(InputError, match=f"limit is {SERVE_DEFAULTS.max_input_chars:,} characters"):
        clean_text("x" * (SERVE_DEFAULTS.max_input_chars + 1))


BAD_SETTINGS = [
    ("max_new_tokens", 0, "from 1 to 63"),
    ("max_new_tokens", TINY_WINDOW, "from 1 to 63"),
    ("max_new_tokens", 2.5, "an integer"),
    ("temperature", 0.0, "from 0.1 to 2.0"),
    ("temperature", float("nan"), "from 0.1 to 2.0"),
    ("top_k", -1, "from 0 to 200"),
    ("top_p", 1.5, "from 0.05 to 1.0"),
    ("repetition_penalty", 0.5, "from 1.0 to 2.0"),
    ("num_beams", 9, "from 2 to 8"),
    ("seed", -2, "from -1 to"),
    ("seed", True, "an integer"),
    ("strategy", "nucleus", "one of greedy, sample, beam"),
]


@pytest.mark.parametrize(("name", "value", "message"), BAD_SETTINGS)
def test_generation_settings_out_of_range(models, name, value, message):
    with pytest.raises(InputError, match=name) as info:
        next(generate_stream(models, "hello", **{name: value}))
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(layer=2), "layer must be an integer from 0 to 1"),
        (dict(head=-1), "head must be an integer from 0 to 3"),
        (dict(token_index=99), "token_index must be an integer from"),
        (dict(average_heads="yes"), "average_heads must be true or false"),
    ],
)
def test_attention_settings_out_of_range(models, kwargs, message):
    with pytest.raises(InputError, match=message):
        attention(models, "hello world", **kwargs)


def test_summary_settings_out_of_range(models):
    with pytest.raises(InputError, match="num_sentences must be an integer from 1 to 10"):
        summarize(models, "One. Two.", num_sentences=11)
    with pytest.raises(
        InputError, match="method must be one of learned, lead, summarizer, centroid, attention"
    ):
        summarize(models, "One. Two.", method="salience")


# --- generation --------------------------------------------------------------------------------------


def hf_generate(models, prompt, **kwargs) -> str:
    ids, _, _ = prompt_ids(models.lm_tokenizer, prompt, models.window - kwargs["max_new_tokens"])
    ids = torch.tensor([ids])
    output = models.lm.generate(ids, attention_mask=torch.ones_like(ids), pad_token_id=0, **kwargs)
    return models.lm_tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True)


def test_greedy_stream_equals_generate(models):
    updates = list(generate_stream(models, "The movie was", strategy="greedy", max_new_tokens=12))
    expected = hf_generate(
        models,
        "The movie was",
        max_new_tokens=12,
        do_sample=False,
        repetition_penalty=1.1,
        no_repeat_ngram_size=4,
    )
    assert updates[-1].done and updates[-1].text == expected
    assert updates[-1].seed is None  # greedy: no seed to report
    assert all(not update.done for update in updates[:-1])
    # Each update extends the last: a stream, not a series of unrelated texts.
    for before, after in zip(updates, updates[1:], strict=False):
        assert after.text.startswith(before.text) and after.num_tokens >= before.num_tokens
    assert updates[-1].tokens_per_second > 0


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_repeated_ngram_mask_bans_what_transformers_no_repeat_processor_bans(size):
    from transformers import NoRepeatNGramLogitsProcessor

    generator = torch.Generator().manual_seed(size)
    vocab, length = 7, 30  # a small vocabulary, so that n-grams repeat
    ids = torch.randint(3, vocab, (5, length), generator=generator)
    pads = torch.tensor([0, 3, 0, 10, 29])
    for row, pad in enumerate(pads.tolist()):
        ids[row, :pad] = 0
    banned = repeated_ngram_mask(ids, size, pads, vocab)
    # Word forms that are all distinct, and no whitespace, change nothing.
    distinct = WordForms(torch.arange(vocab), torch.zeros(vocab, dtype=torch.bool))
    assert torch.equal(repeated_ngram_mask(ids, size, pads, vocab, distinct), banned)
    processor = NoRepeatNGramLogitsProcessor(size)
    for row, pad in enumerate(pads.tolist()):
        real = ids[row : row + 1, pad:]
        expected = processor(real, torch.zeros(1, vocab))[0] == -math.inf
        assert torch.equal(banned[row], expected), (size, row)


def test_word_forms_ban_a_repeat_across_case_and_line_breaks(tokenizer):
    forms = WordForms.of(tokenizer, len(tokenizer))
    encode_text = partial(encode, tokenizer)
    assert forms.space[encode_text("\n")].all() and not forms.space[encode_text(" The")].any()
    assert (
        forms.ids[encode_text(" The")[-1]]
        == forms.ids[encode_text("The")[-1]]
        == forms.ids[encode_text(" the")[-1]]
    )
    text = "Yes. the film is a movie.\nThe film is"
    ids = torch.tensor([encode_text(text)])
    starts = torch.tensor([0])
    banned = repeated_ngram_mask(ids, 4, starts, len(tokenizer), forms)[0]
    a = encode_text(" a")
    assert len(a) == 1 and banned[a[0]]  # "the film is a" again, after a line break
    assert banned[forms.ids == forms.ids[a[0]]].all()  # and every token of that form
    assert banned.sum() == (forms.ids == forms.ids[a[0]]).sum()  # nothing else
    assert not repeated_ngram_mask(ids, 4, starts, len(tokenizer))[0, a[0]]  # tokens differ
    # Byte pieces of characters (each decodes alone to U+FFFD) keep forms of their own.
    pieces = [i for i in range(len(tokenizer)) if "\ufffd" in tokenizer.decode([i])]
    assert len(pieces) > 1 and len(set(forms.ids[pieces].tolist())) == len(pieces)


def test_greedy_tokens_repeat_no_4_gram_by_default(models):
    prompt = models.lm_tokenizer("the the the the", add_special_tokens=False).input_ids
    settings = check_generation_settings(models, strategy="greedy", max_new_tokens=40)
    row = models.batcher.submit(prompt, settings)
    assert row.done.wait(60) and row.error is None
    ids = prompt + row.tokens
    # Every 4-gram that ends in a generated token is new (the prompt's own repeats came before).
    seen = {tuple(ids[i : i + 4]) for i in range(len(prompt) - 3)}
    for end in range(len(prompt), len(ids)):
        ngram = tuple(ids[end - 3 : end + 1])
        assert ngram not in seen
        seen.add(ngram)


def test_each_request_draws_a_fresh_seed_and_reports_it(models):
    first = generate(models, "The movie was", max_new_tokens=12, temperature=2.0, top_k=0)
    second = generate(models, "The movie was", max_new_tokens=12, temperature=2.0, top_k=0)
    assert first.seed is not None and second.seed is not None and first.seed != second.seed
    assert first.text != second.text
    # The reported seed makes the same text again.
    again = generate(models, "The movie was", max_new_tokens=12, temperature=2.0, top_k=0, seed=first.seed)
    assert again.text == first.text and again.seed == first.seed


def test_sampling_with_top_k_1_is_greedy(models):
    greedy = generate(models, "我喜欢编程", strategy="greedy", max_new_tokens=10).text
    top1 = generate(models, "我喜欢编程", strategy="sample", top_k=1, seed=-1, max_new_tokens=10).text
    assert top1 == greedy


def run_together_while_busy(models, monkeypatch, run, keys, busy_tokens: int) -> dict:
    """``run(key)`` for every key on its own thread, while a greedy request keeps the server busy: the
    batcher then waits its (widened) window and decodes them as one batch, without the busy request
    (it is not stopped to join them). Returns each key's result."""
    monkeypatch.setattr(models.batcher, "window_s", 0.5)
    monkeypatch.setattr(models.batcher, "quiet_s", 0.5)
    monkeypatch.setattr(models.batcher, "rebatch_max_tokens", 0)
    busy = generate_stream(models, "Keep the server busy", strategy="greedy", max_new_tokens=busy_tokens)
    next(busy)
    results = {}
    threads = [threading.Thread(target=lambda k=key: results.update({k: run(k)})) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    busy.close()
    return results


def test_seeded_sampling_is_the_same_alone_and_in_a_batch(models, monkeypatch):
    settings = dict(strategy="sample", max_new_tokens=10, temperature=1.5, top_k=0, top_p=1.0, seed=7)
    alone = generate(models, "The movie was", **settings).text
    assert generate(models, "The movie was", **settings).text == alone
    assert models.batcher.batch_sizes[-1] == 1

    # With a generation running, the batcher waits its window for more: the four requests below
    # become one batch of rows of different lengths, each with its own settings.
    prompts = {
        "a": "The movie was",
        "b": "A much longer prompt than the others, to pad the rest",
        "c": "Hi",
        "d": "😀",
    }

    def run(key):
        seed = 7 if key == "a" else 1
        return generate(models, prompts[key], **{**settings, "seed": seed}).text

    results = run_together_while_busy(models, monkeypatch, run, prompts, busy_tokens=60)
    assert list(models.batcher.batch_sizes)[-1] == 4
    assert results["a"] == alone


def test_the_batch_cache_writes_keys_in_place_and_gives_the_logits_of_a_dynamic_cache(models):
    # Two left-padded rows decode 6 steps; then the first leaves (reorder_cache) and the second goes on.
    model, tokenizer = models.lm, models.lm_tokenizer
    rows = [encode(tokenizer, "The movie was"), encode(tokenizer, "A much longer prompt")]
    length = max(map(len, rows))
    input_ids = torch.tensor([[tokenizer.pad_token_id] * (length - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (length - len(r)) + [1] * len(r) for r in rows])

    def decode(cache):
        ids, attention, steps, storages = input_ids, mask, [], []
        with torch.no_grad():
            for step in range(10):
                logits = model(ids, attention_mask=attention, past_key_values=cache, use_cache=True).logits[
                    :, -1
                ]
                steps.append(logits)
                storages.append([layer.keys.data_ptr() for layer in cache.layers])
                ids = logits.argmax(-1, keepdim=True)
                attention = torch.cat([attention, torch.ones_like(ids)], dim=1)
                if step == 5:
                    cache.reorder_cache(torch.tensor([1]))
                    ids, attention = ids[1:], attention[1:]
        return steps, storages

    expected, _ = decode(DynamicCache(config=model.config))
    reserved = reserving_cache(model.config, length + 10)
    assert {type(layer) for layer in reserved.layers} <= set(RESERVED_LAYERS.values())
    logits, storages = decode(reserved)
    for got, want in zip(logits, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    # Written in place: one storage per layer from the first step to the reorder, another after it.
    assert len({tuple(s) for s in storages[:6]}) == 1 and len({tuple(s) for s in storages[6:]}) == 1


def test_rows_leave_the_batch_when_they_end(models, monkeypatch):
    # Three rows that end after 3, 12 and 30 tokens: each step computes only the rows still going, and
    # every row's text is the one it makes alone.
    limits = {"a": 3, "b": 12, "c": 30}
    prompts = {"a": "The movie was", "b": "A much longer prompt than the others", "c": "Hi"}
    settings = dict(strategy="sample", temperature=0.7, top_k=0, top_p=1.0, seed=3)

    def make(key):
        return generate(models, prompts[key], **settings, max_new_tokens=limits[key])

    alone = {key: make(key) for key in prompts}
    assert [alone[key].num_tokens for key in prompts] == [3, 12, 30]  # no eos came first: a fair test

    rows_per_step = []
    forward = models.lm.forward

    def counting(input_ids, *args, **kwargs):
        rows_per_step.append(input_ids.shape[0])
        return forward(input_ids, *args, **kwargs)

    monkeypatch.setattr(models.lm, "forward", counting)
    results = run_together_while_busy(models, monkeypatch, make, prompts, busy_tokens=30)
    assert list(models.batcher.batch_sizes)[-1] == 3
    assert {key: result.text for key, result in results.items()} == {k: r.text for k, r in alone.items()}
    # The batch of three: a pass over the prompts, then steps of 3, 2 and 1 rows (busy's steps are 1-row).
    batch_steps = rows_per_step[rows_per_step.index(3) :]
    assert batch_steps[:3] == [3, 3, 3] and batch_steps.count(2) == 9 and batch_steps.count(1) >= 18


def test_rows_with_the_same_prompt_share_the_first_pass_and_keep_their_own_texts(models, monkeypatch):
    # Four requests, three of them the same prompt with different seeds (users clicking one example).
    requests = {
        "a": ("The movie was", 1),
        "b": ("The movie was", 2),
        "c": ("The movie was", 3),
        "d": ("Hi", 1),
    }
    settings = dict(strategy="sample", temperature=1.2, top_k=0, top_p=1.0, max_new_tokens=12)

    def make(key):
        prompt, seed = requests[key]
        return generate(models, prompt, **settings, seed=seed).text

    alone = {key: make(key) for key in requests}
    assert len(set(alone.values())) == 4  # the seeds make different texts: sharing must not merge them

    passes = []
    forward = models.lm.forward

    def recording(input_ids, *args, **kwargs):
        passes.append(tuple(input_ids.shape))
        return forward(input_ids, *args, **kwargs)

    monkeypatch.setattr(models.lm, "forward", recording)
    results = run_together_while_busy(models, monkeypatch, make, requests, busy_tokens=30)
    assert list(models.batcher.batch_sizes)[-1] == 4
    assert results == alone
    # The batch's first pass read two contexts, each once; its next step decodes all four rows.
    first = next(i for i, shape in enumerate(passes) if shape[0] == 2 and shape[1] > 1)
    assert passes[first + 1 :].count((4, 1)) >= 1 and passes[first + 1][0] == 4


@pytest.mark.parametrize("new_tokens", [1, 3])
def test_shared_prefix_attention_is_sdpa_over_the_whole_context(models, new_tokens):
    # 3 rows, 4 heads: 20 shared positions, then 5 own ones, the first row's first 2 of them pads.
    torch.manual_seed(0)
    rows, heads, shared, own, head_dim = 3, 4, 20, 5, 8
    query = torch.randn(rows, heads, new_tokens, head_dim)
    key, value = torch.randn(rows, heads, own, head_dim), torch.randn(rows, heads, own, head_dim)
    prefix_keys, prefix_values = (
        torch.randn(1, heads, shared, head_dim),
        torch.randn(1, heads, shared, head_dim),
    )
    layer = models.lm.model.layers[0].attn

    def check(own_mask, whole_mask):
        """Our attention with ``own_mask`` over the own tokens against SDPA with ``whole_mask`` over all."""
        got, weights = shared_prefix.shared_prefix_attention(
            layer, query, key, value, own_mask, scaling=0.3, shared_prefix={0: (prefix_keys, prefix_values)}
        )
        expected = torch.nn.functional.scaled_dot_product_attention(
            query,
            torch.cat([prefix_keys.expand(rows, -1, -1, -1), key], dim=2),
            torch.cat([prefix_values.expand(rows, -1, -1, -1), value], dim=2),
            attn_mask=whole_mask,
            scale=0.3,
        )
        assert weights is None
        torch.testing.assert_close(got, expected.transpose(1, 2), rtol=0, atol=1e-6)

    visible = torch.ones(rows, 1, new_tokens, own, dtype=torch.bool).tril(own - new_tokens)
    visible[0, :, :, :2] = False
    check(visible, torch.cat([torch.ones(rows, 1, new_tokens, shared, dtype=torch.bool), visible], dim=-1))
    # A float mask is added to the scaled scores, as SDPA adds it.
    bias = torch.randn(rows, 1, new_tokens, own)
    check(bias, torch.cat([torch.zeros(rows, 1, new_tokens, shared), bias], dim=-1))
    # Without a mask, the own tokens are causal among themselves, as SDPA's is_causal.
    causal = torch.ones(new_tokens, own, dtype=torch.bool).tril(own - new_tokens)
    check(None, torch.cat([torch.ones(new_tokens, shared, dtype=torch.bool), causal], dim=-1))


def test_the_batchers_model_attends_with_sdpa_where_no_prefix_is_shared(models):
    assert models.lm.config._attn_implementation == shared_prefix.NAME
    ids = torch.tensor([encode(models.lm_tokenizer, "The movie was good, and so was the music.")])
    with torch.no_grad():
        got = models.lm(ids).logits
        models.lm.set_attn_implementation("sdpa")
        try:
            expected = models.lm(ids).logits
        finally:
            models.lm.set_attn_implementation(shared_prefix.NAME)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def recording_forward(models, monkeypatch) -> list[tuple[tuple[int, ...], bool, bool]]:
    """Records each forward pass of the language model: the shape of its input ids, whether it was
    given shared keys and values, and whether gradients were on."""
    passes = []
    forward = models.lm.forward

    def recording(input_ids, *args, **kwargs):
        passes.append((tuple(input_ids.shape), "shared_prefix" in kwargs, torch.is_grad_enabled()))
        return forward(input_ids, *args, **kwargs)

    monkeypatch.setattr(models.lm, "forward", recording)
    return passes


def test_rows_with_a_long_shared_prompt_read_it_once_and_keep_their_own_texts(models, monkeypatch):
    # Three users send one long prompt with different seeds: the prompt's keys and values are read and
    # kept once, and each row still makes the text it makes alone.
    prompt = "The movie was long, the music was loud and the actors were " * 3
    settings = dict(strategy="sample", temperature=1.2, top_k=0, top_p=1.0, max_new_tokens=12)
    seeds = {"a": 1, "b": 2, "c": 3}

    def make(key):
        return generate(models, prompt, **settings, seed=seeds[key]).text

    alone = {key: make(key) for key in seeds}
    assert len(set(alone.values())) == 3
    length = len(prompt_ids(models.lm_tokenizer, prompt, TINY_WINDOW - 12)[0])
    assert length - 1 >= models.batcher.shared_prefix_min_tokens  # long enough to be shared

    passes = recording_forward(models, monkeypatch)
    results = run_together_while_busy(models, monkeypatch, make, seeds, busy_tokens=30)
    assert list(models.batcher.batch_sizes)[-1] == 3
    assert results == alone
    # One pass over the shared tokens (all but the last), then steps of the three rows' own tokens.
    first = passes.index(((1, length - 1), False, False))
    assert passes[first + 1] == ((3, 1), True, False)
    assert all(shared and not grad for (rows, _), shared, grad in passes[first + 1 :] if rows > 1)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(position_embedding_type="rope", use_lstm=False),
        dict(position_embedding_type="sinusoidal"),
        dict(position_embedding_type="rope", lstm_num_layers=2),
    ],
)
def test_a_shared_prompt_kept_once_gives_the_tokens_of_one_kept_per_row(
    tokenizer, tiny_config, tmp_path, overrides
):
    # Every position kind, with and without the LSTM (one or two layers of state to copy out).
    torch.manual_seed(0)
    MemoryTransformerForCausalLM(tiny_config(vocab_size=len(tokenizer), **overrides)).save_pretrained(
        tmp_path
    )
    tokenizer.save_pretrained(tmp_path)
    models = load_models(str(tmp_path))
    prompt = encode(tokenizer, "The movie was long, the music was loud and the actors were " * 3)
    prompt = prompt[-(TINY_WINDOW - 12) :]

    def tokens(shared_prefix_min_tokens: int) -> list[list[int]]:
        models.batcher.shared_prefix_min_tokens = shared_prefix_min_tokens
        rows = [
            Row(
                prompt,
                check_generation_settings(models, max_new_tokens=12, seed=seed, temperature=1.5),
            )
            for seed in range(4)
        ]
        models.batcher.generate(Batch(rows))
        return [row.tokens for row in rows]

    shared = tokens(SERVE_DEFAULTS.shared_prefix_min_tokens)
    assert len(set(map(tuple, shared))) > 1  # the seeds make different texts
    assert shared == tokens(0)


def test_rows_that_made_tokens_before_joining_others_on_a_shared_prompt_keep_their_texts(models, monkeypatch):
    # The first request runs alone, then two more with the same prompt stop it and join it: the three
    # rows share the prompt; the first row's own part (its tokens so far) is longer than the others'
    # (left-padded), read in one pass of several tokens.
    settings = dict(strategy="sample", temperature=1.2, top_k=0, top_p=1.0, max_new_tokens=12, seed=5)
    prompt = "The movie was long, the music was loud and the actors were " * 3
    alone = generate(models, prompt, **settings).text
    slow_decoding(models, monkeypatch)
    monkeypatch.setattr(models.batcher, "window_s", 0.05)
    monkeypatch.setattr(models.batcher, "quiet_s", 0.05)
    passes = recording_forward(models, monkeypatch)
    rebatches = models.batcher.rebatches
    together = run_together(models, prompt, {"b": prompt, "c": prompt}, settings)
    assert models.batcher.rebatches == rebatches + 1
    assert list(models.batcher.batch_sizes)[-1] == 3
    assert together == {"first": alone, "b": alone, "c": alone}
    rows, own = next(shape for shape, shared, _ in passes if shared)
    assert rows == 3 and own > 1


def slow_decoding(models, monkeypatch, seconds: float = 0.02):
    """Each forward pass of the language model takes at least ``seconds``: a request keeps running
    long enough for others to arrive while it does."""
    forward = models.lm.forward

    def slow(*args, **kwargs):
        time.sleep(seconds)
        return forward(*args, **kwargs)

    monkeypatch.setattr(models.lm, "forward", slow)


def run_together(models, first: str, later: dict[str, str], settings: dict) -> dict[str, str]:
    """Starts ``first``, and once its first token is out sends the ``later`` prompts from threads."""
    results = {}
    stream = generate_stream(models, first, **settings)
    next(stream)

    def run(key):
        results[key] = generate(models, later[key], **settings).text

    threads = [threading.Thread(target=run, args=(key,)) for key in later]
    for thread in threads:
        thread.start()
    *_, last = stream
    results["first"] = last.text
    for thread in threads:
        thread.join()
    return results


def test_new_requests_join_a_young_batch_and_every_text_is_unchanged(models, monkeypatch):
    settings = dict(strategy="sample", max_new_tokens=40, temperature=1.5, top_k=0, top_p=1.0, seed=5)
    prompts = {"b": "A much longer prompt than the first one", "c": "😀"}
    alone = {key: generate(models, text, **settings).text for key, text in prompts.items()}
    alone["first"] = generate(models, "The movie was", **settings).text

    slow_decoding(models, monkeypatch)
    monkeypatch.setattr(models.batcher, "window_s", 0.05)
    monkeypatch.setattr(models.batcher, "quiet_s", 0.05)
    monkeypatch.setattr(models.batcher, "rebatch_max_tokens", 30)
    rebatches = models.batcher.rebatches
    together = run_together(models, "The movie was", prompts, settings)
    # The first request's batch stopped once to take the others in; all three then ran as one batch.
    assert models.batcher.rebatches == rebatches + 1
    assert list(models.batcher.batch_sizes)[-1] == 3
    # The first row went on from its own tokens and random generator: each text is the one made alone.
    assert together == alone


def test_a_batch_that_takes_new_rows_in_stops_before_the_burst_is_gathered(models, monkeypatch):
    # The first row must not run ahead while the batcher waits for the rest of a burst: every row of
    # the joint batch would be padded to its longer context, on every step.
    settings = dict(strategy="greedy", max_new_tokens=40)
    alone = {key: generate(models, text, **settings).text for key, text in (("b", "Hi"), ("c", "Hello"))}
    alone["first"] = generate(models, "The movie was", **settings).text
    slow_decoding(models, monkeypatch)  # 20 ms a step: the quiet window below is 15 steps long
    monkeypatch.setattr(models.batcher, "window_s", 2.0)
    monkeypatch.setattr(models.batcher, "quiet_s", 0.3)
    events = []
    forward, submit = models.lm.forward, models.batcher.submit

    def recording_forward(input_ids, *args, **kwargs):
        events.append(("step", input_ids.shape[0]))
        return forward(input_ids, *args, **kwargs)

    def recording_submit(*args, **kwargs):
        events.append(("submit", None))
        return submit(*args, **kwargs)

    monkeypatch.setattr(models.lm, "forward", recording_forward)
    monkeypatch.setattr(models.batcher, "submit", recording_submit)
    rebatches = models.batcher.rebatches
    together = run_together(models, "The movie was", {"b": "Hi", "c": "Hello"}, settings)
    assert models.batcher.rebatches == rebatches + 1
    assert list(models.batcher.batch_sizes)[-1] == 3
    # After the second request came, the first row made at most the step under way, then waited.
    second = [i for i, event in enumerate(events) if event[0] == "submit"][1]
    joint = events.index(("step", 3))
    assert [size for kind, size in events[second:joint] if kind == "step"] in ([], [1])
    assert together == alone


def test_the_window_closes_once_requests_stop_coming(models, monkeypatch):
    settings = dict(strategy="greedy", max_new_tokens=40)
    slow_decoding(models, monkeypatch)
    # A window far longer than the decoding: requests that all arrive at once must not wait it out.
    monkeypatch.setattr(models.batcher, "window_s", 30.0)
    monkeypatch.setattr(models.batcher, "quiet_s", 0.2)
    start = time.perf_counter()
    together = run_together(models, "The movie was", {"b": "Hi", "c": "Hello"}, settings)
    assert time.perf_counter() - start < 10.0
    assert list(models.batcher.batch_sizes)[-1] == 3
    assert together["b"] == generate(models, "Hi", **settings).text


def test_an_older_batch_is_not_stopped_for_new_requests(models, monkeypatch):
    settings = dict(strategy="greedy", max_new_tokens=40)
    slow_decoding(models, monkeypatch)
    monkeypatch.setattr(models.batcher, "window_s", 0.05)
    monkeypatch.setattr(models.batcher, "quiet_s", 0.05)
    monkeypatch.setattr(models.batcher, "rebatch_max_tokens", 0)
    rebatches = models.batcher.rebatches
    together = run_together(models, "The movie was", {"b": "Hi", "c": "Hello"}, settings)
    assert models.batcher.rebatches == rebatches
    assert list(models.batcher.batch_sizes)[-2:] == [1, 2]
    assert together["first"] == generate(models, "The movie was", **settings).text


def test_min_interval_spaces_the_updates_and_keeps_the_text(models, monkeypatch):
    settings = dict(strategy="greedy", max_new_tokens=20)
    every_token = list(generate_stream(models, "The movie was", **settings))
    slow_decoding(models, monkeypatch)  # 20 tokens take over 0.4 s
    times, updates = [], []
    for update in generate_stream(models, "The movie was", **settings, min_interval_s=0.15):
        times.append(time.perf_counter())
        updates.append(update)
    assert updates[0].num_tokens == 1  # the first token is shown at once
    assert updates[-1].done and updates[-1].text == every_token[-1].text
    assert 2 <= len(updates) <= 5 < len(every_token)
    gaps = [later - earlier for earlier, later in zip(times[:-2], times[1:-1], strict=True)]
    assert all(gap >= 0.14 for gap in gaps)  # the end may come sooner; nothing else does


def test_rows_that_span_more_columns_than_the_window_together_are_one_batch(models, monkeypatch):
    # Prompts cut to the window less 30 tokens, 30 new tokens each: a row with tokens already made,
    # left-padded beside a new one, makes the batch wider than the window, while each row's own
    # positions stay inside it (they count its tokens, not the columns). The rows' shared prompt is
    # read for each row here, not once (see the shared-prefix tests).
    monkeypatch.setattr(models.batcher, "shared_prefix_min_tokens", 0)
    settings = dict(strategy="greedy", max_new_tokens=30)
    prompt = "word " * 100
    alone = generate(models, prompt, **settings).text
    slow_decoding(models, monkeypatch)
    monkeypatch.setattr(models.batcher, "window_s", 0.05)
    monkeypatch.setattr(models.batcher, "quiet_s", 0.05)
    widths = []
    forward = models.lm.forward

    def recording(input_ids, *args, attention_mask, **kwargs):
        widths.append(attention_mask.shape[1])
        return forward(input_ids, *args, attention_mask=attention_mask, **kwargs)

    monkeypatch.setattr(models.lm, "forward", recording)
    rebatches = models.batcher.rebatches
    together = run_together(models, prompt, {"b": prompt}, settings)
    assert models.batcher.rebatches == rebatches + 1
    assert list(models.batcher.batch_sizes)[-1] == 2
    assert max(widths) > TINY_WINDOW
    assert together == {"first": alone, "b": alone}


def test_a_model_refuses_more_positions_than_its_window_for_any_row(models):
    # The window is checked on each row's own positions: columns of padding do not count, tokens do.
    ids = torch.tensor([[5] * TINY_WINDOW, [5] * TINY_WINDOW])
    padded = torch.cat([torch.zeros((2, 3), dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros((2, 3), dtype=torch.long), torch.ones_like(ids)], dim=1)
    with torch.no_grad():
        models.lm(padded, attention_mask=mask)  # 67 columns, 64 positions a row
        with pytest.raises(ValueError, match=f"{TINY_WINDOW + 1} tokens exceed max_position_embeddings"):
            models.lm(torch.cat([ids, ids[:, :1]], dim=1))


def test_a_request_cancelled_while_its_batch_is_stopped_ends(models, monkeypatch):
    slow_decoding(models, monkeypatch)
    monkeypatch.setattr(models.batcher, "window_s", 0.05)
    monkeypatch.setattr(models.batcher, "quiet_s", 0.05)
    first = generate_stream(models, "The movie was", strategy="greedy", max_new_tokens=40)
    next(first)
    second = generate_stream(models, "Hi", strategy="greedy", max_new_tokens=40)
    next(second)
    first.close()  # the first user leaves; the second request goes on alone
    *_, last = second
    assert last.done and last.num_tokens > 0
    assert not models.batcher.waiting


def test_beam_search_equals_generate(models):
    updates = list(generate_stream(models, "The movie was", strategy="beam", num_beams=3, max_new_tokens=8))
    expected = hf_generate(
        models,
        "The movie was",
        max_new_tokens=8,
        do_sample=False,
        num_beams=3,
        early_stopping=True,
        repetition_penalty=1.1,
        no_repeat_ngram_size=4,
    )
    assert len(updates) == 1 and updates[0].done
    assert updates[0].text == expected


def test_a_prompt_read_from_its_start_follows_the_document_start_the_model_was_trained_after(
    models, monkeypatch
):
    tokenizer = models.lm_tokenizer
    start = document_start(tokenizer)
    assert start == [tokenizer.eos_token_id]  # training puts eos between documents
    ids = encode(tokenizer, "The movie was")
    assert prompt_ids(tokenizer, "The movie was", 40) == (start + ids, 0, len(ids))
    # No room for it: the prompt alone; cut to fit: a document's middle, no start.
    assert prompt_ids(tokenizer, "The movie was", len(ids)) == (ids, 0, len(ids))
    assert prompt_ids(tokenizer, "The movie was", len(ids) - 1) == (ids[1:], 1, len(ids) - 1)

    submitted = []
    submit = models.batcher.submit
    monkeypatch.setattr(
        models.batcher, "submit", lambda ids, settings: submitted.append(ids) or submit(ids, settings)
    )
    final = generate(models, "The movie was", strategy="greedy", max_new_tokens=10)
    assert submitted == [start + ids]  # what the model reads
    assert final.prompt_tokens == len(ids) and final.dropped_prompt_tokens == 0  # what the user sent


def test_a_tokenizer_that_adds_a_bos_itself_begins_documents_with_it():
    class Tokenizer:
        eos_token_id = 2

        def __init__(self, front, back):
            self.front, self.back = front, back

        def __call__(self, text, add_special_tokens=True):
            ids = [5] * len(text)
            return {"input_ids": self.front + ids + self.back if add_special_tokens else ids}

    assert document_start(Tokenizer(front=[1], back=[])) == [1]  # a bos, as Llama's tokenizer adds
    assert document_start(Tokenizer(front=[1], back=[2])) == [1]  # only what goes in front
    assert document_start(Tokenizer(front=[], back=[2])) == [2]  # nothing in front: the eos


def test_long_prompt_loses_its_start_and_max_new_tokens_holds(models):
    prompt = "word " * 200
    final = generate(models, prompt, strategy="greedy", max_new_tokens=10)
    num_ids = len(encode(models.lm_tokenizer, prompt))
    assert final.prompt_tokens == TINY_WINDOW - 10
    assert final.dropped_prompt_tokens == num_ids - (TINY_WINDOW - 10)
    assert final.num_tokens <= 10


def test_closing_a_stream_cancels_it_and_the_next_request_runs(models):
    stream = generate_stream(models, "The movie was", strategy="greedy", max_new_tokens=60)
    next(stream)
    stream.close()
    final = generate(models, "The movie was", strategy="greedy", max_new_tokens=5)
    assert final.done and final.num_tokens <= 5


def test_stream_never_shows_half_a_character(models):
    for update in generate_stream(models, "我喜欢", strategy="sample", seed=3, max_new_tokens=30):
        if not update.done:
            assert not update.text.endswith(REPLACEMENT_CHAR)


# --- classification ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["A wonderful film.", "我喜欢编程", "👩\u200d💻 writes code 🎉"])
def test_classify_gives_probabilities_and_a_score_per_whole_piece(models, text):
    result = classify(models, text)
    assert set(result.probabilities) == {"neg", "pos"}
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert result.label == max(result.probabilities, key=result.probabilities.get)
    assert "".join(piece for piece, _ in result.attributions) == text
    assert all(REPLACEMENT_CHAR not in piece for piece, _ in result.attributions)
    scaled = [score for _, score in result.highlights()]
    assert max(abs(score) for score in scaled) == pytest.approx(1.0)


def test_attributions_are_gradient_times_input(models):
    """First order: f(x) - f((1 - eps) x) = eps * sum over tokens of x . grad f(x) = eps * sum of attributions."""
    text = "A wonderful film with a dull end"
    result = classify(models, text)
    target = list(result.probabilities).index(result.label)
    ids = torch.tensor([encode(models.classifier_tokenizer, text)])
    embeddings = models.classifier.get_input_embeddings()(ids).double()
    classifier = models.classifier.double()
    try:
        eps = 1e-4
        with torch.no_grad():
            full = classifier(inputs_embeds=embeddings).logits[0, target]
            shrunk = classifier(inputs_embeds=embeddings * (1 - eps)).logits[0, target]
    finally:
        classifier.float()
    total = sum(score for _, score in result.attributions)
    assert float(full - shrunk) / eps == pytest.approx(total, rel=1e-2, abs=1e-4)


CLASSIFY_TEXTS = [
    "Great.",
    "A dull, long film that I would not watch again.",
    "我喜欢",
    "ok " * 20,
    "Fine 😀",
]


def test_a_classified_batch_equals_each_text_alone(models):
    model, tokenizer = models.classifier, models.classifier_tokenizer
    rows = [encode(tokenizer, text) for text in CLASSIFY_TEXTS]
    batched = classify_ids(model, tokenizer, rows)
    for ids, (probabilities, target, scores) in zip(rows, batched, strict=True):
        [(alone_probabilities, alone_target, alone_scores)] = classify_ids(model, tokenizer, [ids])
        assert target == alone_target and scores.shape == (len(ids),)
        np.testing.assert_allclose(probabilities, alone_probabilities, atol=1e-5)
        torch.testing.assert_close(scores, alone_scores, atol=1e-5, rtol=1e-4)


def test_concurrent_classify_requests_share_passes_and_get_their_own_results(models, monkeypatch):
    model, tokenizer = models.classifier, models.classifier_tokenizer
    batcher = ClassifyBatcher(model, tokenizer, window_s=2.0, quiet_s=0.2)
    passes = []
    real = classify_ids
    monkeypatch.setattr(
        classify_batcher, "classify_ids", lambda m, t, rows: passes.append(len(rows)) or real(m, t, rows)
    )
    texts = CLASSIFY_TEXTS * 3
    rows = [encode(tokenizer, text) for text in texts]
    results = [None] * len(rows)
    barrier = threading.Barrier(len(rows))

    def client(index):
        barrier.wait()
        results[index] = batcher.run(rows[index])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(rows))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(passes) == len(rows) and len(passes) < len(rows)  # some requests shared a pass
    for ids, (probabilities, target, scores) in zip(rows, results, strict=True):
        [(alone_probabilities, alone_target, alone_scores)] = real(model, tokenizer, [ids])
        assert target == alone_target
        np.testing.assert_allclose(probabilities, alone_probabilities, atol=1e-5)
        torch.testing.assert_close(scores, alone_scores, atol=1e-5, rtol=1e-4)


def test_a_leading_classify_request_returns_under_steady_load(models):
    model, tokenizer = models.classifier, models.classifier_tokenizer
    batcher = ClassifyBatcher(model, tokenizer, max_batch_size=2, window_s=0.2, quiet_s=0.1)
    ids = encode(tokenizer, "Great.")
    stop = threading.Event()

    def steady():
        while not stop.is_set():
            batcher.run(ids)

    first = threading.Thread(target=batcher.run, args=(ids,))
    first.start()  # the server is idle: this request leads
    load = [threading.Thread(target=steady) for _ in range(12)]  # more than a pass takes
    for thread in load:
        thread.start()
    try:
        first.join(10)
        assert not first.is_alive()  # done while the others keep the queue full
    finally:
        stop.set()
        for thread in load:
            thread.join(30)


def test_a_failed_classify_pass_fails_its_requests_and_the_next_one_runs(models, monkeypatch):
    model, tokenizer = models.classifier, models.classifier_tokenizer
    batcher = ClassifyBatcher(model, tokenizer)
    real = classify_ids
    calls = []

    def fail_once(m, t, rows):
        calls.append(rows)
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return real(m, t, rows)

    monkeypatch.setattr(classify_batcher, "classify_ids", fail_once)
    ids = encode(tokenizer, "Great.")
    with pytest.raises(RuntimeError, match="out of memory"):
        batcher.run(ids)
    assert batcher.run(ids)[1] == real(model, tokenizer, [ids])[0][1]


def test_classify_cuts_text_past_the_window(models):
    result = classify(models, "word " * 100)
    assert result.truncated_tokens > 0
    assert sum(len(piece) for piece, _ in result.attributions) < len("word " * 100)
    assert result.truncated_side == "right"


def test_classify_reads_the_end_when_the_tokenizer_truncates_left(models):
    tokenizer = models.classifier_tokenizer
    text = "start " * 100 + "finale"
    tokenizer.truncation_side = "left"
    try:
        result = classify(models, text)
    finally:
        tokenizer.truncation_side = "right"
    assert result.truncated_tokens > 0 and result.truncated_side == "left"
    read = "".join(piece for piece, _ in result.attributions)
    assert read.rstrip().endswith("finale") and len(read) < len(text)


# --- summarization -----------------------------------------------------------------------------------


def test_split_sentences():
    text = "Hello world. Is it? 3.14 is pi! 我喜欢编程。你呢？\n\nA paragraph without a stop\nstill going"
    sentences = [text[start:end] for start, end in split_sentences(text)]
    assert sentences == [
        "Hello world.",
        "Is it?",
        "3.14 is pi!",
        "我喜欢编程。",
        "你呢？",
        "A paragraph without a stop\nstill going",
    ]


@pytest.mark.parametrize(
    "method", [m for m in SUMMARY_METHODS if m != "learned"]
)  # learned: test_sentence_scorer
def test_summarize_picks_sentences_in_document_order(models_with_summarizer, method):
    document = " ".join(f"Sentence number {i} talks about topic {i % 3}." for i in range(12))
    result = summarize(models_with_summarizer, document, num_sentences=3, method=method, abstractive=False)
    assert len(result.picked) == 3 and result.picked == sorted(result.picked)
    assert len(result.scores) == len(result.sentences) == 12
    best = sorted(range(12), key=lambda i: -result.scores[i])[:3]
    assert sorted(best) == result.picked
    assert result.summary == result.extract == " ".join(result.sentences[i] for i in result.picked)
    assert result.abstract is None
    assert "".join(text for text, _ in result.marked()) == document
    assert sum(label == "summary" for _, label in result.marked()) == 3


def test_without_a_sentence_scorer_the_default_is_lead_with_or_without_a_summarizer(
    models, models_with_summarizer
):
    document = "First. Second one. Third one here."
    assert summarize(models, document, 1).method == "lead"
    assert summarize(models, document, 2).picked == [0, 1]
    assert summarize(models_with_summarizer, document, 1, abstractive=False).method == "lead"


def test_the_summarizer_method_without_a_summarizer_says_how_to_load_one(models):
    with pytest.raises(InputError, match="start the app with --summarizer PATH"):
        summarize(models, "One. Two.", 1, method="summarizer")


def test_abstract_overlap_is_each_sentences_rouge_1_against_the_abstract():
    document = "Return the sum of the values. Raise an error when empty. Values are numbers."
    spans = split_sentences(document)
    scores = abstract_overlap("Returns the sum of values.", document, spans)
    assert scores[0] == max(scores) and 0.5 < scores[0] <= 1.0  # stemmed: "Returns" matches "Return"
    assert scores[1] == 0.0  # nothing in common


def test_summarizer_salience_ranks_by_the_abstract_and_ties_go_to_the_earlier(
    models_with_summarizer, monkeypatch
):
    monkeypatch.setattr(summarize_task, "generate_abstract", lambda models, text: "the third one wins")
    document = "First one. Second one. The third one wins here. Fourth."
    result = summarize(models_with_summarizer, document, num_sentences=2, method="summarizer")
    assert result.picked == [0, 2]  # the third by overlap, then the first of the tied ones
    assert result.abstract == "the third one wins"
    quiet = summarize(models_with_summarizer, document, 1, method="summarizer", abstractive=False)
    assert quiet.picked == [2] and quiet.abstract is None


def test_summarize_reads_a_document_longer_than_the_window(models):
    document = " ".join(f"Line {i} of a long text about memory." for i in range(60))
    result = summarize(models, document, num_sentences=2)
    assert len(result.sentences) == 60 and len(result.picked) == 2


def test_summarize_with_fewer_sentences_than_asked(models):
    result = summarize(models, "只有一句话。", num_sentences=5)
    assert result.picked == [0] and result.extract == "只有一句话。"


def test_abstractive_summary_from_a_summarizer(models_with_summarizer):
    result = summarize(models_with_summarizer, "One fact. Another fact. A third fact.", num_sentences=1)
    assert isinstance(result.abstract, str)
    assert result.summary == (result.abstract or result.extract)


# --- attention ---------------------------------------------------------------------------------------


def test_piece_attention_means_query_rows_and_sums_key_columns():
    tokens = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    pieces = [Piece("ab", 0, 2), Piece("c", 2, 3)]
    expected = np.array([[(1.0 + 0.0 + 0.5 + 0.5) / 2, 0.0], [0.2 + 0.3, 0.5]])
    np.testing.assert_allclose(piece_attention(tokens, pieces), expected)


def test_pool_averages_blocks_of_pieces():
    weights = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5)
    pooled, block = figures.pool(weights, max_cells=2)
    assert block == 3 and pooled.shape == (1, 1, 2, 2)
    assert pooled[0, 0, 0, 0] == pytest.approx(weights[0, 0, :3, :3].mean())
    assert pooled[0, 0, 1, 1] == pytest.approx(weights[0, 0, 3:, 3:].mean())  # the short last block
    assert figures.pool(weights, max_cells=5)[1] == 1


def test_grid_of_a_long_text_is_pooled(models):
    result = attention(models, "word " * 60)
    num_pieces = len(result.pieces)
    assert num_pieces > figures.GRID_MAX_CELLS
    heatmap, grid = figures.attention_figures(result)
    cells = np.asarray(grid.data[0].z).shape[0]
    assert cells < num_pieces and cells <= figures.GRID_MAX_CELLS
    assert np.asarray(heatmap.data[0].z).shape == (num_pieces, num_pieces)  # the heatmap is not


@pytest.mark.parametrize("text", ["我喜欢编程", "The cat sat on the mat.", "👩\u200d💻 and 🇫🇷 stay whole"])
def test_attention_is_causal_row_normalised_and_by_whole_pieces(models, text):
    result = attention(models, text, layer=1, head=2, token_index=-1)
    num_pieces = len(result.pieces)
    assert "".join(result.pieces) == text
    assert all(REPLACEMENT_CHAR not in piece for piece in result.pieces)
    assert result.weights.shape == (2, 4, num_pieces, num_pieces)
    np.testing.assert_allclose(result.weights.sum(-1), 1.0, rtol=1e-5)
    assert np.allclose(np.triu(result.weights, k=1), 0.0)
    assert result.token_index == num_pieces - 1
    np.testing.assert_allclose(result.selected, result.weights[1, 2])
    weights = [weight for _, weight in result.highlights]
    assert max(weights) == pytest.approx(1.0)
    heatmap, grid = figures.attention_figures(result)
    assert isinstance(heatmap, go.Figure) and isinstance(grid, go.Figure)
    assert len(grid.data) == 2 * 4
    assert np.asarray(heatmap.data[0].z).shape == (num_pieces, num_pieces)


def test_attention_of_single_token_pieces_equals_the_models_weights(models):
    text = "the cat sat on a mat"
    ids = encode(models.lm_tokenizer, text)
    result = attention(models, text)
    assert len(result.pieces) == len(ids)  # every piece one token here
    with torch.no_grad():
        attentions = models.lm(torch.tensor([ids]), output_attentions=True).attentions
    np.testing.assert_allclose(result.weights, torch.stack(attentions)[:, 0].numpy(), atol=1e-6)


def test_attention_head_average(models):
    result = attention(models, "The cat sat on the mat.", layer=0, token_index=2, average_heads=True)
    assert result.head is None and result.token_index == 2
    np.testing.assert_allclose(result.selected, result.weights[0].mean(0))


def test_attention_cuts_text_past_the_window(models):
    result = attention(models, "word " * 100)
    assert result.truncated_tokens > 0
    assert result.weights.shape[-1] <= TINY_WINDOW


# --- command line ------------------------------------------------------------------------------------


def test_command_line(tiny_checkpoints, capsys):
    paths = ["--model", tiny_checkpoints["model"], "--classifier", tiny_checkpoints["classifier"]]
    tasks_command_line(["classify", "A wonderful film", *paths])
    assert capsys.readouterr().out.split()[0] in {"neg", "pos"}
    tasks_command_line(["generate", "The movie was", "--max_new_tokens", "4", *paths])
    assert "tokens/s" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        tasks_command_line(["summarize", "   ", *paths])
    assert info.value.code == 2
    assert "empty" in capsys.readouterr().err
