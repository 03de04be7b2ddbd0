"""Memory tab: the probe function on a tiny model, and the tab served and called through its API."""

import json
import time
from types import SimpleNamespace

import gradio as gr
import pytest
import torch
from gradio_client import Client

from llm_memory.demo.memory_tab import CSS, add_memory_tab, attention_figure, benchmark_curves
from llm_memory.memory.probes import Distractors, make_probe, review_texts
from llm_memory.memory.report import model_reports, trained_tasks
from llm_memory.tasks.memory_probe import BEYOND_WINDOW, fact_attention, run_memory_probe

WINDOW = 64


@pytest.fixture(scope="module")
def model(tokenizer, tiny_lm):
    return tiny_lm(vocab_size=len(tokenizer))


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


def kv_report(train_steps: int = 2) -> dict:
    return {
        "task": "kv",
        "model": "tiny-base",
        "trained_tasks": ["kv"],
        "window": WINDOW,
        "distances": [40, 100],
        "variants": ["attention", "lstm"],
        "samples": 2,
        "train_steps": train_steps,
        "chance": {"exact": 1e-4, "per_token": 0.1, "note": "a number"},
        "window_guess": {"40": 0.3, "100": 0.0001},
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


@pytest.mark.slow  # serves the tab
def test_memory_tab_end_to_end(model, tokenizer, texts, tmp_path):
    # A model folder that carries its kv report: trained for kv, and its curve is the one shown.
    trained = tmp_path / "trained"
    model.save_pretrained(trained)
    tokenizer.save_pretrained(trained)
    (trained / "memory_results").mkdir()
    (trained / "memory_results" / "kv.json").write_text(json.dumps(kv_report()))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    loaded = SimpleNamespace(lm=model, lm_tokenizer=tokenizer)  # what the demo app holds
    with gr.Blocks(analytics_enabled=False) as demo:
        add_memory_tab(
            {"kv model": str(trained), "tiny": (loaded.lm, loaded.lm_tokenizer), "broken": str(broken)},
            distractor_texts=texts,
        )
    demo.launch(prevent_thread_lock=True, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        # The first model's first trained task is the default.
        summary, prompt, attention, curves, note = client.predict(api_name="/memory")
        assert "**Answer:**" in summary and "beyond the window" in summary  # default distance 128 > 64
        assert "was not trained" not in summary
        assert any(part.get("class_or_confidence") == "fact" for part in prompt)
        assert curves is not None and attention is not None  # beyond the window: a figure that says why
        assert "beyond the 64-token window" in attention["plot"]
        assert note == (
            "`kv model` on `kv`: a 64-token window, 2 probes per distance, "
            "2 fine-tuning steps per variant from `tiny-base`."
        )

        # The same task on a model that was never trained for it: said plainly, no borrowed curve.
        summary, _, _, curves, note = client.predict("kv", 128, 0, "lstm", "tiny", api_name="/memory")
        assert summary.startswith("**`tiny` was not trained for `kv`.**")
        assert "Trained for `kv`: `kv model`" in summary
        assert curves is None and "No benchmark curve of `tiny` on `kv`" in note

        summary, _, attention, curves, note = client.predict(
            "passkey", 25, 0, "attention", "kv model", api_name="/memory"
        )
        assert summary.startswith("**`kv model` was not trained for `passkey`.**")
        assert "It was trained for: `kv`." in summary
        assert "inside the question's window" in summary and attention is not None
        assert curves is None and "No benchmark curve of `kv model` on `passkey`" in note

        # Over HTTP, out of range and a broken checkpoint: messages, not "error: null"; then it serves.
        for inputs, message in (
            (("passkey", 1e12, 0, "lstm", "tiny"), "distance must be an integer from 1 to 4096"),
            (("passkey", 64, 0, "lstm", "broken"), "The probe failed"),
            (("passkey", 64, 0, "lstm", "elsewhere"), "elsewhere is not in the list of choices"),
        ):
            start = time.perf_counter()
            with pytest.raises(Exception, match=message):
                client.predict(*inputs, api_name="/memory")
            assert time.perf_counter() - start < 5
        assert "**Answer:**" in client.predict("passkey", 25, 0, "lstm", "tiny", api_name="/memory")[0]
    finally:
        demo.close()


def test_reports_give_the_trained_tasks_and_curves(tmp_path):
    folder = tmp_path / "model"
    (folder / "memory_results").mkdir(parents=True)
    (folder / "memory_results" / "kv.json").write_text(json.dumps(kv_report()))
    evaluated_only = {**kv_report(train_steps=0), "task": "qa1", "trained_tasks": []}
    (folder / "memory_results" / "qa1.json").write_text(json.dumps(evaluated_only))
    reports = model_reports(folder)
    assert set(reports) == {"kv", "qa1"} and trained_tasks(reports) == ["kv"]
    assert model_reports(tmp_path / "nowhere") == {} and model_reports(None) == {}
    curves, note = benchmark_curves("qa1", reports, "m")
    assert curves is not None and "evaluated as it is, without fine-tuning" in note
    # The window-guess baseline is drawn beside the variants.
    curves, _ = benchmark_curves("kv", reports, "m")
    assert "guess from the window" in {trace.name for trace in curves.data}


def test_curves_note_tells_a_shared_fine_tune():
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
    curves, note = benchmark_curves("passkey", {"passkey": report}, "memory model")
    assert curves is not None
    assert "one model fine-tuned from `checkpoints/memory-lm` for 3,600 steps, read the three ways" in note
    assert "64-token window" in note
    # Fine-tuned again from that folder: the note counts from the first model, over both stages.
    first = {
        "model": "checkpoints/memory-lm",
        "tasks": ["passkey"],
        "curriculum_steps": 600,
        "train_steps": 3000,
    }
    again = {**report, "model": "passkey-model", "train_steps": 400, "curriculum_steps": 0}
    again["stages"] = [first, {**first, "model": "passkey-model", "train_steps": 400, "curriculum_steps": 0}]
    _, note = benchmark_curves("passkey", {"passkey": again}, "memory model")
    assert "fine-tuned from `checkpoints/memory-lm` for 4,000 steps in 2 stages, read the three ways" in note


def test_embedded_memory_model_carries_its_own_curves_for_four_tasks():
    reports = model_reports("checkpoints/memory")
    assert trained_tasks(reports) == ["passkey", "kv", "qa1", "qa2"]
    for task, report in reports.items():
        far = {row["variant"]: row["accuracy"] for row in report["results"] if row["distance"] == 256}
        if task == "passkey":
            assert far["lstm"] >= 0.9  # 4x its 64-token window
        # Beyond the window the LSTM state beats attention alone and guessing from the window.
        assert far["lstm"] > far["attention"] + 0.3 and far["lstm"] > report["window_guess"]["256"] + 0.3
        assert report["stages"][0]["model"] == "checkpoints/memory-lm"


@pytest.mark.parametrize("variant", ["attention", "lstm"])
def test_beyond_the_window_the_attention_plot_explains_itself(variant, model, tokenizer, texts):
    result = run_memory_probe(model, tokenizer, "qa1", 200, seed=2, variant=variant, distractor_texts=texts)
    figure = attention_figure(result)
    text = figure.layout.annotations[0].text
    assert "beyond the 64-token window" in text and "200 tokens" in text
    assert ("LSTM state" in text) == (variant == "lstm")
    assert not figure.data  # no empty bars


def test_probe_text_wraps_between_words():
    # Gradio's HighlightedText sets word-break: break-all; the tab's CSS undoes it for the probe.
    assert "#memory-probe .textfield" in CSS and "word-break: normal" in CSS
