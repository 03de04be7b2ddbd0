"""Memory tab: the probe function on a tiny model, and the tab served and called through its API."""

import json
import time
from types import SimpleNamespace

import gradio as gr
import pytest
import torch
from gradio_client import Client

from llm_memory import MemoryTransformerConfig, MemoryTransformerForCausalLM
from llm_memory.memory_tab import (
    BEYOND_WINDOW,
    add_memory_tab,
    benchmark_curves,
    fact_attention,
    run_memory_probe,
)
from llm_memory.probes import Distractors, make_probe, review_texts

WINDOW = 64


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    config = MemoryTransformerConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=WINDOW,
    )
    return MemoryTransformerForCausalLM(config).eval()


@pytest.fixture(scope="module")
def texts():
    return list(review_texts("test")[:100])


def test_fact_inside_the_window_gets_attention_shares(model, tokenizer, texts):
    result = run_memory_probe(model, tokenizer, "kv", 25, seed=0, variant="lstm", distractor_texts=texts)
    assert result["fact_in_reach"] and "inside the question's window" in result["message"]
    shares = result["attention"]["per_layer"]
    assert len(shares) == model.config.num_hidden_layers and all(0 < share < 1 for share in shares)
    assert result["answer"].strip() in result["fact"] and result["distance"] == 25
    assert isinstance(result["correct"], bool) and 0 <= result["token_accuracy"] <= 1


def test_attention_share_equals_a_plain_forward_pass(model, tokenizer, texts):
    # An aligned probe of one window is read in one pass; the share must match the model's own weights.
    probe = make_probe("passkey", 25, tokenizer, 1, Distractors(texts, tokenizer), align_to=WINDOW)
    ids = probe.input_ids + probe.answer_ids
    assert len(ids) == WINDOW
    with torch.no_grad():
        attentions = model(torch.tensor([ids]), output_attentions=True).attentions
    shares = fact_attention(probe, attentions, window_start=0)["per_layer"]
    start, end = probe.fact_token_span
    for layer, share in zip(attentions, shares, strict=True):
        expected = layer[0, :, probe.question_start : len(probe.input_ids), start:end].sum(-1).mean()
        assert share == pytest.approx(float(expected), abs=1e-6)
    result = run_memory_probe(model, tokenizer, "passkey", 25, 1, "attention", texts)
    assert result["attention"]["per_layer"] == pytest.approx(shares, abs=1e-5)


@pytest.mark.parametrize("variant", ["attention", "lstm"])
def test_fact_beyond_the_window_is_said_so(variant, model, tokenizer, texts):
    result = run_memory_probe(model, tokenizer, "qa1", 200, seed=2, variant=variant, distractor_texts=texts)
    assert result["attention"] is None and not result["fact_in_reach"]
    assert result["message"].startswith(BEYOND_WINDOW)
    assert ("LSTM" in result["message"]) == (variant == "lstm")


def test_bad_variant(model, tokenizer, texts):
    with pytest.raises(ValueError, match="Unknown variant"):
        run_memory_probe(model, tokenizer, "kv", 50, 0, "gru", texts)


@pytest.mark.parametrize(
    "distance, seed, message",
    [
        (1e12, 0, "distance must be an integer from 1 to 4096, got 1000000000000.0"),
        (5000, 0, "distance must be an integer from 1 to 4096, got 5000"),
        (float("nan"), 0, "distance must be an integer from 1 to 4096, got nan"),
        (float("inf"), 0, "distance must be an integer from 1 to 4096, got inf"),
        ("far", 0, "distance must be an integer from 1 to 4096, got 'far'"),
        ([3], 0, "distance must be an integer from 1 to 4096, got [3]"),
        (12.5, 0, "distance must be an integer from 1 to 4096, got 12.5"),
        (64, float("nan"), "seed must be an integer from 0 to 2147483647, got nan"),
        (64, -1, "seed must be an integer from 0 to 2147483647, got -1"),
    ],
)
def test_distance_and_seed_out_of_range_are_refused_at_once(model, tokenizer, texts, distance, seed, message):
    start = time.perf_counter()
    with pytest.raises(ValueError) as error:
        run_memory_probe(model, tokenizer, "passkey", distance, seed, "lstm", texts)
    assert str(error.value) == message + "."
    assert time.perf_counter() - start < 1.0


def test_memory_tab_end_to_end(model, tokenizer, texts, tmp_path):
    report = {
        "task": "kv",
        "model": "tiny",
        "window": WINDOW,
        "distances": [40, 100],
        "variants": ["attention", "lstm"],
        "samples": 2,
        "train_steps": 2,
        "chance": {"exact": 1e-4, "per_token": 0.1, "note": "a number"},
        "results": [
            {"variant": v, "distance": d, "accuracy": a, "token_accuracy": a, "fact_in_reach": 1.0}
            for v, d, a in [
                ("attention", 40, 0.5),
                ("attention", 100, 0.0),
                ("lstm", 40, 0.5),
                ("lstm", 100, 0.5),
            ]
        ],
    }
    (tmp_path / "kv.json").write_text(json.dumps(report))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    loaded = SimpleNamespace(lm=model, lm_tokenizer=tokenizer)  # what the demo app holds
    with gr.Blocks(analytics_enabled=False) as demo:
        add_memory_tab(
            {"tiny": (loaded.lm, loaded.lm_tokenizer), "broken": str(broken)},
            results_dir=tmp_path,
            distractor_texts=texts,
        )
    demo.launch(prevent_thread_lock=True, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        summary, prompt, attention, curves, note = client.predict("kv", api_name="/memory")
        assert "**Answer:**" in summary and "beyond the window" in summary  # default distance 128 > 64
        assert any(part.get("class_or_confidence") == "fact" for part in prompt)
        assert attention is None and curves is not None
        assert note == (
            "Last benchmark run: `tiny` with a 64-token window, 2 probes per distance, "
            "2 fine-tuning steps per variant."
        )

        summary, _, attention, curves, note = client.predict(
            "passkey", 25, 0, "attention", api_name="/memory"
        )
        assert "inside the question's window" in summary and attention is not None
        assert curves is None and "No benchmark results for `passkey`" in note

        # Over HTTP, out of range and a broken checkpoint: messages, not "error: null"; then it serves.
        for inputs, message in (
            (("passkey", 1e12, 0, "lstm", "tiny"), "distance must be an integer from 1 to 4096"),
            (("passkey", 64, 0, "lstm", "broken"), "The probe failed"),
        ):
            start = time.perf_counter()
            with pytest.raises(Exception, match=message):
                client.predict(*inputs, api_name="/memory")
            assert time.perf_counter() - start < 5
        assert "**Answer:**" in client.predict("passkey", 25, 0, "lstm", "tiny", api_name="/memory")[0]
    finally:
        demo.close()


def test_curves_note_tells_a_shared_fine_tune(tmp_path):
    report = {
        "task": "passkey",
        "model": "checkpoints/memory-lm",
        "window": 64,
        "distances": [32, 256],
        "variants": ["attention", "lstm"],
        "samples": 50,
        "train_steps": 3000,
        "curriculum_steps": 600,
        "share_fine_tune": True,
        "chance": {"exact": 1e-5, "per_token": 0.1, "note": "a number"},
        "results": [
            {"variant": v, "distance": d, "accuracy": a, "token_accuracy": a, "fact_in_reach": float(d < 64)}
            for v, d, a in [
                ("attention", 32, 1.0),
                ("attention", 256, 0.0),
                ("lstm", 32, 1.0),
                ("lstm", 256, 1.0),
            ]
        ],
    }
    (tmp_path / "passkey.json").write_text(json.dumps(report))
    curves, note = benchmark_curves("passkey", tmp_path)
    assert curves is not None
    assert "one model fine-tuned for 3600 steps, read the three ways" in note and "64-token window" in note
