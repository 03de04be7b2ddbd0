"""The progress of a long run: an ETA in the logs, a CSV of every logged value, and its curve as a PNG.

``ProgressCallback`` logs a run at least LOGS_PER_RUN times when no interval was chosen, and adds to
each training log the share done, the tokens seen and the time left
(from the pace of this sitting, so a resumed run is not misjudged by the one before it), and appends
the log to ``<output_dir>/training_log.csv``, a file that any tracker, spreadsheet or pandas reads. A
resumed run first drops the rows past the checkpoint it resumes from, so the file never holds a step
twice.

    python -m llm_memory.training.training_log RUN_DIR [RUN_DIR ...] --output curve.png

plots validation perplexity and training loss against tokens seen for one or more runs (a run folder
holding ``training_log.csv`` or a ``trainer_state.json``, or the CSV itself).
"""

import argparse
import csv
import datetime
import json
import logging
import math
import os
import time
from pathlib import Path

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

LOG_FILE = "training_log.csv"
# With adapt_logging, a run logs at least this many times (and at least every 500 steps, as by default).
LOGS_PER_RUN = 50
COLUMNS = (
    "step",
    "epoch",
    "tokens",
    "loss",
    "eval_loss",
    "perplexity",
    "eval_perplexity",
    "learning_rate",
    "grad_norm",
    "tokens_per_second",
    "eval_accuracy",
    "eval_f1",
    "progress",
    "eta_seconds",
    "seconds",
)


def format_duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


def _perplexity(loss):
    return round(math.exp(min(loss, 50.0)), 3) if loss is not None else None


class ProgressCallback(TrainerCallback):
    """Logs ``progress`` (0-1) and ``eta_seconds`` with each training log, prints one progress line, and
    appends every log (training and evaluation) to ``training_log.csv`` in the output folder."""

    def __init__(self, output_dir: str, adapt_logging: bool = False):
        self.path = Path(output_dir) / LOG_FILE
        self.adapt_logging = adapt_logging
        self._start_time = None
        self._start_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._start_time = time.perf_counter()
        self._start_step = state.global_step  # nonzero when resuming
        if self.adapt_logging and state.max_steps > 0:
            # The Trainer's default interval (500 steps) would leave a short run without a single log.
            state.logging_steps = max(1, min(state.logging_steps, math.ceil(state.max_steps / LOGS_PER_RUN)))
        if state.is_world_process_zero:
            self._keep_rows_up_to(state.global_step)

    def _keep_rows_up_to(self, step: int) -> None:
        if not self.path.is_file():
            return
        with self.path.open(newline="") as file:
            rows = [row for row in csv.DictReader(file) if int(row["step"]) <= step]
        self._write(rows, mode="w")

    def _write(self, rows: list[dict], mode: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header = mode == "w" or not self.path.is_file()
        with self.path.open(mode, newline="") as file:
            writer = csv.DictWriter(file, fieldnames=COLUMNS, extrasaction="ignore")
            if header:
                writer.writeheader()
            writer.writerows(rows)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or not state.is_world_process_zero:
            return
        step, max_steps = state.global_step, state.max_steps
        done = step - self._start_step
        if "loss" in logs and max_steps > 0:
            elapsed = time.perf_counter() - self._start_time
            eta = elapsed / done * (max_steps - step) if done > 0 else None
            logs["progress"] = round(step / max_steps, 4)
            if eta is not None:
                logs["eta_seconds"] = round(eta)
            logger.info(
                "step %d/%d (%.1f%%) · %.2fM tokens · loss %.4f · ETA %s",
                step,
                max_steps,
                100 * step / max_steps,
                state.num_input_tokens_seen / 1e6,
                logs["loss"],
                format_duration(eta) if eta is not None else "?",
            )
        if not any(key in logs for key in ("loss", "eval_loss", "eval_accuracy", "eval_f1")):
            return  # the closing summary (train_runtime, ...), not a point of the curve
        row = {
            **logs,
            "step": step,
            "epoch": round(state.epoch or 0.0, 4),
            "tokens": state.num_input_tokens_seen,
            "perplexity": _perplexity(logs.get("loss")),
            "eval_perplexity": _perplexity(logs.get("eval_loss")),
            "seconds": round(time.perf_counter() - self._start_time, 1),
        }
        self._write([row], mode="a")


# ---------------------------------------------------------------------------------------------------
# Reading a run's log, and its curve.
# ---------------------------------------------------------------------------------------------------


def read_log(path: str) -> list[dict]:
    """The logged rows of a run: from ``training_log.csv`` (a folder or the file), else from the
    ``log_history`` of ``trainer_state.json`` (runs made before the CSV existed). Values are floats."""
    path = Path(path)
    csv_path = path if path.suffix == ".csv" else path / LOG_FILE
    if csv_path.is_file():
        with csv_path.open(newline="") as file:
            return [
                {k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(file)
            ]
    state_path = path / "trainer_state.json"
    if not state_path.is_file():
        raise FileNotFoundError(f"{path} holds neither {LOG_FILE} nor trainer_state.json.")
    rows = []
    for entry in json.loads(state_path.read_text())["log_history"]:
        row = {k: float(v) for k, v in entry.items() if isinstance(v, int | float)}
        row.setdefault("tokens", row.get("num_input_tokens_seen", 0.0))
        if "eval_loss" in row:
            row["eval_perplexity"] = _perplexity(row["eval_loss"])
        rows.append(row)
    return rows


def plot_runs(runs: dict[str, list[dict]], output: str, title: str = "") -> None:
    """Validation perplexity (left) and training loss (right) against tokens seen, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, rows in runs.items():
        evals = [r for r in rows if "eval_loss" in r and r.get("tokens")]
        trains = [r for r in rows if "loss" in r and r.get("tokens")]
        if evals:
            left.plot(
                [r["tokens"] / 1e6 for r in evals], [r["eval_perplexity"] for r in evals], "o-", label=name
            )
        if trains:
            right.plot([r["tokens"] / 1e6 for r in trains], [r["loss"] for r in trains], label=name)
    left.set(xlabel="tokens seen (millions)", ylabel="validation perplexity", yscale="log")
    right.set(xlabel="tokens seen (millions)", ylabel="training loss")
    for axis in (left, right):
        axis.grid(True, alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(output, dpi=110)
    plt.close(figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Plot the curves of training runs.")
    parser.add_argument("runs", nargs="+", help="Run folders (or their training_log.csv); NAME=PATH to label")
    parser.add_argument("--output", required=True, help="The PNG to write.")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    runs = {}
    for entry in args.runs:
        name, _, path = (
            entry.rpartition("=") if "=" in entry else (os.path.basename(entry.rstrip("/")), "", entry)
        )
        try:
            runs[name] = read_log(path)
        except FileNotFoundError as err:
            print(f"error: {err}")
            return 1
    plot_runs(runs, args.output, args.title)
    print(f"Wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
