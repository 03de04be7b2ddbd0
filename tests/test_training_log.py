"""The progress log of a long run: ETA, the CSV and its curve."""

import csv
import json
import types

import pytest

from llm_memory.training import training_log


def state(step, tokens, max_steps=10, epoch=0.5):
    return types.SimpleNamespace(
        global_step=step,
        max_steps=max_steps,
        num_input_tokens_seen=tokens,
        epoch=epoch,
        is_world_process_zero=True,
    )


def read(path):
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_progress_adds_an_eta_and_writes_each_log_to_the_csv(tmp_path, monkeypatch):
    clock = iter([100.0, 110.0, 120.0, 125.0, 130.0])
    monkeypatch.setattr(training_log.time, "perf_counter", lambda: next(clock))
    callback = training_log.ProgressCallback(str(tmp_path))
    callback.on_train_begin(None, state(0, 0), None)
    logs = {"loss": 2.0, "learning_rate": 1e-3}
    callback.on_log(None, state(2, 512), None, logs=logs)  # 2 steps in 10 s: 8 more take 40 s
    assert logs["progress"] == 0.2 and logs["eta_seconds"] == 40
    callback.on_log(None, state(2, 512), None, logs={"eval_loss": 1.0})
    callback.on_log(None, state(2, 512), None, logs={"train_runtime": 3.0})  # not a point of the curve
    rows = read(tmp_path / training_log.LOG_FILE)
    assert [row["step"] for row in rows] == ["2", "2"]
    assert float(rows[0]["perplexity"]) == pytest.approx(7.389, abs=1e-3) and rows[0]["eval_loss"] == ""
    assert float(rows[1]["eval_perplexity"]) == pytest.approx(2.718, abs=1e-3) and rows[1]["loss"] == ""
    assert rows[0]["tokens"] == "512" and rows[0]["eta_seconds"] == "40"


def test_a_resumed_run_drops_the_rows_past_its_checkpoint(tmp_path):
    callback = training_log.ProgressCallback(str(tmp_path))
    callback.on_train_begin(None, state(0, 0), None)
    for step in (1, 2, 3, 4):
        callback.on_log(None, state(step, 100 * step), None, logs={"loss": 5.0 - step})
    resumed = training_log.ProgressCallback(str(tmp_path))
    resumed.on_train_begin(None, state(2, 200), None)  # the last checkpoint was step 2
    assert [row["step"] for row in read(tmp_path / training_log.LOG_FILE)] == ["1", "2"]
    resumed.on_log(None, state(3, 300), None, logs={"loss": 1.5})
    rows = read(tmp_path / training_log.LOG_FILE)
    assert [(row["step"], row["loss"]) for row in rows] == [("1", "4.0"), ("2", "3.0"), ("3", "1.5")]


def test_read_log_takes_the_csv_or_an_older_runs_trainer_state(tmp_path):
    (tmp_path / "old").mkdir()
    history = [
        {"step": 5, "loss": 3.0, "num_input_tokens_seen": 1000},
        {"step": 5, "eval_loss": 2.0, "num_input_tokens_seen": 1000},
    ]
    (tmp_path / "old" / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    rows = training_log.read_log(str(tmp_path / "old"))
    assert rows[0]["tokens"] == 1000 and rows[1]["eval_perplexity"] == pytest.approx(7.389, abs=1e-3)
    with pytest.raises(FileNotFoundError, match="neither training_log.csv nor trainer_state.json"):
        training_log.read_log(str(tmp_path))


def test_the_curve_command_plots_runs_and_names_a_bad_folder(tmp_path, capsys):
    callback = training_log.ProgressCallback(str(tmp_path / "run"))
    callback.on_train_begin(None, state(0, 0), None)
    for step in (1, 2, 3):
        callback.on_log(None, state(step, 1000 * step), None, logs={"loss": 5.0 - step})
        callback.on_log(None, state(step, 1000 * step), None, logs={"eval_loss": 5.5 - step})
    output = tmp_path / "curve.png"
    assert training_log.main([f"mine={tmp_path / 'run'}", "--output", str(output)]) == 0
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert training_log.main([str(tmp_path / "missing"), "--output", str(output)]) == 1
    assert "holds neither" in capsys.readouterr().out
