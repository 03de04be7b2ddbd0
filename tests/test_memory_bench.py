"""Memory benchmark: a tiny end-to-end run, the answer scoring against a plain windowed pass, bad input."""

import json
import random
import re
import shlex
import shutil

import pytest
import torch

from bench.memory_binding import asked_person, busier, busier_training_stories
from bench.memory_placement import grow, move
from llm_memory import MemoryTransformerForCausalLM
from llm_memory.memory.benchmark import main, parse_ranges
from llm_memory.memory.evaluate import VARIANTS, run_probe, variant_settings, window_guess
from llm_memory.memory.finetune import training_probes
from llm_memory.memory.probes import Distractors, chance_level, make_probe, max_answer_length, review_texts
from llm_memory.memory.recurrence import windowed_logits
from llm_memory.memory.report import accuracy_figure, model_reports, trained_tasks
from llm_memory.training.data import IGNORE_INDEX

WINDOW = 64


@pytest.fixture(scope="module")
def model_dir(tokenizer, tiny_lm, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_memory_model")
    tiny_lm(vocab_size=len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def distractors(tokenizer):
    return Distractors(review_texts("test")[:100], tokenizer)


@pytest.mark.parametrize("variant", VARIANTS)
def test_answer_scoring_matches_a_plain_windowed_pass(tiny_lm, variant, tokenizer, distractors):
    model = tiny_lm(vocab_size=len(tokenizer))
    for distance in (30, 150):
        probe = make_probe("qa1", distance, tokenizer, distance, distractors)
        settings = variant_settings(variant, WINDOW)
        run = run_probe(model, probe, WINDOW, **settings)
        # run_probe skips windows that cannot matter; the full pass must give the same argmax.
        ids = torch.tensor([probe.input_ids + probe.answer_ids])
        logits = windowed_logits(model, ids, window=WINDOW, **settings)[0]
        first = len(probe.input_ids) - 1
        expected = logits[first : first + len(probe.answer_ids)].argmax(-1).tolist()
        assert run.predicted_ids == expected
        assert run.correct == (expected == probe.answer_ids)


@pytest.mark.parametrize("variant", ["attention", "lstm+kv"])
def test_aligned_fact_is_in_reach_exactly_within_the_last_window(tiny_lm, variant, tokenizer, distractors):
    model = tiny_lm(vocab_size=len(tokenizer))
    settings = variant_settings(variant, WINDOW)
    for distance in (25, 30, 40, 50, 70):
        probe = make_probe("passkey", distance, tokenizer, 0, distractors, align_to=WINDOW)
        start, end = probe.fact_token_span
        within = distance + (end - start) + max_answer_length("passkey", tokenizer) <= WINDOW
        assert run_probe(model, probe, WINDOW, **settings).fact_in_reach == within


def test_end_to_end(model_dir, tmp_path, capsys):
    json_path = tmp_path / "results" / "kv.json"
    code = main(
        [
            *("--model", str(model_dir), "--task", "kv", "--distances", "40,100", "--samples", "2"),
            *(
                "--seed",
                "3",
                "--train_steps",
                "2",
                "--json",
                str(json_path),
                "--plot_dir",
                str(tmp_path / "plots"),
                "--train_distances",
                "30",
                "--save_dir",
                str(tmp_path / "tuned"),
            ),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "| variant | 40 | 100* |" in out
    for variant in VARIANTS:
        assert f"| {variant} | " in out
    assert "| chance |" in out

    report = json.loads(json_path.read_text())
    assert report["task"] == "kv" and report["window"] == WINDOW and report["distances"] == [40, 100]
    assert {(row["variant"], row["distance"]) for row in report["results"]} == {
        (variant, distance) for variant in VARIANTS for distance in (40, 100)
    }
    for row in report["results"]:
        assert 0 <= row["accuracy"] <= row["token_accuracy"] <= 1
        assert row["samples"] == 2
    assert report["chance"]["exact"] < 0.001 and report["chance"]["per_token"] == 0.1
    assert set(report["training_loss"]) == set(VARIANTS)
    assert report["train_distances"] == "30"
    assert (tmp_path / "tuned" / "config.json").is_file() and (
        tmp_path / "tuned" / "tokenizer.json"
    ).is_file()
    # Windows of 64: a 100-token distance is out of attention's reach, a kv fact at 40 is not.
    reach = {(row["variant"], row["distance"]): row["fact_in_reach"] for row in report["results"]}
    assert reach[("attention", 100)] == reach[("lstm+kv", 100)] == 0.0
    assert reach[("attention", 40)] == 1.0

    assert (tmp_path / "plots" / "kv.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (tmp_path / "plots" / "kv.html").read_text()
    assert "Plotly.newPlot" in html and '<script src="https://cdn.plot.ly' not in html
    assert len(html) > 1_000_000  # plotly.js itself is inline


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--task", "bogus"], "Unknown task 'bogus'"),
        (["--distances", "100,0"], "must all be positive"),
        (["--distances", "100,abc"], "comma-separated integers"),
        (["--variants", "attention,gru"], "Unknown variant 'gru'"),
        (["--samples", "0"], "--samples must be at least 1"),
        (["--variants", "attention", "--save_dir", "x"], "--save_variant 'lstm' is not among"),
        (["--train_distances", "-3"], "--train_distances must all be positive"),
        (["--train_distances", "300-10"], "low before high, got '300-10'"),
        (["--train_distances", "10-x"], "distances or ranges such as 10-300"),
        (["--curriculum_distances", "0-5"], "--curriculum_distances must all be positive"),
        (["--batch_size", "0"], "--batch_size must be at least 1"),
        (["--curriculum_steps", "-1"], "--curriculum_steps must be 0 or more"),
        (["--chrono_init", "2"], "--chrono_init must be at least 3 tokens"),
        (["--save_variant", "gru"], "Unknown --save_variant 'gru'"),
        (["--distances", "5"], "shorter than the passkey question"),
    ],
)
def test_bad_input_gives_one_clear_error(arguments, message, model_dir, capsys):
    assert main(["--model", str(model_dir), *arguments]) == 2
    err = capsys.readouterr().err
    assert err.strip().startswith("memory_bench: error:") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_missing_model_folder(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "nowhere")]) == 2
    assert "Model folder" in capsys.readouterr().err


def test_accuracy_figure_keeps_the_window_line_on_the_log_axis():
    report = {
        "task": "passkey",
        "window": 256,
        "distances": [128, 1024],
        "variants": ["lstm"],
        "chance": {"exact": 1e-5},
        "results": [
            {"variant": "lstm", "distance": d, "accuracy": a, "token_accuracy": a, "fact_in_reach": 0.0}
            for d, a in ((128, 0.5), (1024, 0.25))
        ],
    }
    figure = accuracy_figure(report)
    # Shapes on a log axis are placed by log10(x): a vline at x=256 would stretch the axis to 1e256.
    assert all(shape.xref != "x" or shape.x0 <= 1024 for shape in figure.layout.shapes)
    window = [trace for trace in figure.data if trace.name == "attention window"]
    assert len(window) == 1 and list(window[0].x) == [256, 256]


def test_training_batches_are_equally_long_with_the_loss_on_the_answer_only(tokenizer):
    ranges = parse_ranges("20-40,100-120", "train_distances")
    assert ranges == [(20, 40), (100, 120)]
    batch_size = 3
    data = training_probes(
        "kv", ranges, steps=4, batch_size=batch_size, tokenizer=tokenizer, window=WINDOW, seed=1
    )
    assert len(data) == 4 * batch_size
    for start in range(0, len(data), batch_size):
        batch = data.select(range(start, start + batch_size))
        assert len({len(ids) for ids in batch["input_ids"]}) == 1  # no padding needed
        assert len(set(batch["distance"])) == 1  # one distance per batch
        distance = batch["distance"][0]
        assert any(low <= distance <= high for low, high in ranges)
        for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True):
            answer = [label for label in labels if label != IGNORE_INDEX]
            # Only the answer's digits are learned, and they end the row.
            assert 1 <= len(answer) <= 4 and ids[-len(answer) :] == answer
            assert labels[: -len(answer)] == [IGNORE_INDEX] * (len(labels) - len(answer))


def test_shared_fine_tune_with_curriculum_saves_a_model_with_the_bench_window(model_dir, tmp_path, capsys):
    json_path = tmp_path / "passkey.json"
    window = 32  # the tiny model has 64 positions; the saved one reads 32 at a time
    code = main(
        [
            *("--model", str(model_dir), "--task", "passkey", "--distances", "20,80", "--samples", "2"),
            *("--window", "32", "--train_steps", "2", "--curriculum_steps", "2", "--batch_size", "2"),
            *("--train_distances", "20-80", "--chrono_init", "100", "--share_fine_tune"),
            *("--json", str(json_path), "--save_dir", str(tmp_path / "tuned")),
        ]
    )
    assert code == 0
    report = json.loads(json_path.read_text())
    assert report["window"] == window and report["share_fine_tune"] and report["chrono_init"] == 100
    # One model was fine-tuned, reading as the lstm variant, in two stages; every variant was evaluated.
    assert set(report["training_loss"]) == {"lstm"}
    assert {row["stage"] for row in report["training_loss"]["lstm"]} == {"curriculum", "main"}
    assert {row["variant"] for row in report["results"]} == set(VARIANTS)
    tuned = MemoryTransformerForCausalLM.from_pretrained(tmp_path / "tuned")
    assert tuned.config.max_position_embeddings == window
    assert tuned.model.embed_positions.weight.shape[0] == window
    # Its model card says how it was made and what it reached.
    card = (tmp_path / "tuned" / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: transformers" in card
    assert "python -m llm_memory.memory --model" in card and "--share_fine_tune" in card
    assert "| variant | 20 | 80* |" in card


def test_window_guess_is_certain_in_reach_and_chance_beyond(tokenizer, distractors):
    near = [make_probe("passkey", 25, tokenizer, seed, distractors, align_to=WINDOW) for seed in range(3)]
    far = [make_probe("passkey", 200, tokenizer, seed, distractors, align_to=WINDOW) for seed in range(3)]
    # The pass key is the only number in a probe: seen, it is the guess; unseen, only chance is left.
    assert window_guess(near, tokenizer, WINDOW) == 1.0
    assert window_guess(far, tokenizer, WINDOW) == chance_level("passkey")["exact"]
    qa = [make_probe("qa2", 200, tokenizer, seed, distractors, align_to=WINDOW) for seed in range(20)]
    level = window_guess(qa, tokenizer, WINDOW)
    assert chance_level("qa2")["exact"] / 2 < level < 0.6  # other people's moves name places in reach


@pytest.mark.slow  # fine-tunes, stops and resumes
def test_several_tasks_train_one_model_that_resumes_and_carries_its_reports(model_dir, tmp_path, capsys):
    def run(checkpoints, save_dir, results):
        return main(
            [
                *("--model", str(model_dir), "--task", "kv,qa2", "--distances", "40,100", "--samples", "2"),
                *(
                    "--train_steps",
                    "4",
                    "--batch_size",
                    "2",
                    "--train_distances",
                    "30-100",
                    "--share_fine_tune",
                ),
                *("--checkpoint_dir", str(checkpoints), "--save_steps", "2"),
                *("--save_dir", str(save_dir), "--results_dir", str(results)),
            ]
        )

    assert run(tmp_path / "ck", tmp_path / "tuned", tmp_path / "results") == 0
    out = capsys.readouterr().out
    assert "Task `kv`" in out and "Task `qa2`" in out and "| guess from the window |" in out
    for task in ("kv", "qa2"):
        report = json.loads((tmp_path / "results" / f"{task}.json").read_text())
        assert report["task"] == task and report["trained_tasks"] == ["kv", "qa2"]
        assert set(report["window_guess"]) == {"40", "100"}
        # The model folder carries the same report: the Memory tab reads it from there.
        assert json.loads((tmp_path / "tuned" / "memory_results" / f"{task}.json").read_text()) == report
    assert sorted(p.name for p in (tmp_path / "ck" / "lstm-main").iterdir()) == [
        "checkpoint-2",
        "checkpoint-4",
    ]
    card = (tmp_path / "tuned" / "README.md").read_text()
    assert "Task `kv`" in card and "Task `qa2`" in card

    # Stopped after step 2 (the last checkpoint lost), the same command resumes there and ends the same.
    shutil.rmtree(tmp_path / "ck" / "lstm-main" / "checkpoint-4")
    assert run(tmp_path / "ck", tmp_path / "resumed", tmp_path / "results2") == 0
    assert f"Resuming from {tmp_path / 'ck' / 'lstm-main' / 'checkpoint-2'}" in capsys.readouterr().out
    first = MemoryTransformerForCausalLM.from_pretrained(tmp_path / "tuned").state_dict()
    second = MemoryTransformerForCausalLM.from_pretrained(tmp_path / "resumed").state_dict()
    for name, tensor in first.items():
        torch.testing.assert_close(second[name], tensor, msg=name)


@pytest.mark.slow  # fine-tunes twice
def test_a_model_fine_tuned_again_keeps_the_stages_that_made_it(model_dir, tmp_path):
    def stage(model, task, save_dir):
        argv = [
            *("--model", str(model), "--task", task, "--distances", "100", "--samples", "1"),
            *("--variants", "lstm", "--train_steps", "1", "--batch_size", "1", "--train_distances", "30-100"),
            *("--save_dir", str(save_dir), "--results_dir", str(tmp_path / "results" / task)),
        ]
        assert main(argv) == 0
        return "python -m llm_memory.memory " + shlex.join(argv)

    first = stage(model_dir, "kv", tmp_path / "kv")
    second = stage(tmp_path / "kv", "qa1", tmp_path / "kv-qa1")
    reports = model_reports(tmp_path / "kv-qa1")
    assert [(s["model"], s["tasks"], s["command"]) for s in reports["qa1"]["stages"]] == [
        (str(model_dir), ["kv"], first),
        (str(tmp_path / "kv"), ["qa1"], second),
    ]
    # Both stages taught the model: the Memory tab offers both tasks.
    assert trained_tasks(reports) == ["kv", "qa1"]
    card = (tmp_path / "kv-qa1" / "README.md").read_text()
    assert f"Fine-tuned from the checkpoint `{model_dir}`." in card
    assert "in 2 stages" in card and f"{first}\n{second}\n" in card


def test_several_tasks_with_one_json_file_are_refused(model_dir, capsys):
    assert main(["--model", str(model_dir), "--task", "kv,qa1", "--json", "x.json"]) == 2
    assert "with several tasks use --results_dir" in capsys.readouterr().err


def test_placement_models_start_where_they_should(tiny_lm):
    model = tiny_lm(seed=2)  # two blocks, the LSTM after both
    ids = torch.randint(5, 90, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(ids).logits
        grown = grow(model).eval()
        assert grown.config.num_hidden_layers == 3 and grown.config.lstm_layer == 2
        torch.testing.assert_close(grown(ids).logits, before)
        moved = move(tiny_lm(seed=2), 1)
        assert moved.config.lstm_layer == 1
        moved.model.memory = None  # a zeroed output projection adds nothing: the same as no LSTM at all
        no_lstm = moved(ids).logits
        torch.testing.assert_close(move(tiny_lm(seed=2), 1)(ids).logits, no_lstm)
    with pytest.raises(ValueError, match="lstm_layer"):
        move(tiny_lm(seed=2), 3)


@pytest.mark.parametrize("task", ["qa1", "qa2"])
def test_busier_stories_add_other_peoples_moves_for_training_only(task, tokenizer):
    from llm_memory.memory import finetune, probes

    plain, busy = (
        probes.STORIES[task](random.Random(5)),
        busier(probes.STORIES[task], (3, 3))(random.Random(5)),
    )
    person = asked_person(plain)
    assert busy.question == plain.question and busy.target == plain.target and busy.earlier == plain.earlier
    assert busy.others[: len(plain.others)] == plain.others and len(busy.others) == len(plain.others) + 3
    assert all(not fact.before.startswith(person) for fact in busy.others)
    with busier_training_stories((3, 3)):
        # Called through its module, as fine_tune calls it.
        trained = finetune.training_probes(task, [(120, 120)], 1, 2, tokenizer, 64, 0)
        assert probes.STORIES[task].__name__ == f"{task}_story"  # swapped only while training probes are made
    standard = training_probes(task, [(120, 120)], 1, 2, tokenizer, 64, 0)
    # The first probe of each is drawn from the same story (the same seed): 3 more moves in the busier one.
    story_moves = re.compile(rf"\b(?:{'|'.join(probes.QA1_PEOPLE)}) (?:{'|'.join(probes.QA1_VERBS)}) the")
    first_busy, first_plain = (tokenizer.decode(rows["input_ids"][0]) for rows in (trained, standard))
    assert len(story_moves.findall(first_busy)) == len(story_moves.findall(first_plain)) + 3
