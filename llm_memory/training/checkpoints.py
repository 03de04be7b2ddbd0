"""The output folder of a run: the checkpoint to resume from, and the finished model moved in last.

A run's ``--output_dir`` holds the Trainer's ``checkpoint-<step>`` folders while it trains, and becomes
a complete Hub model repository once it has succeeded: the final files are written to a hidden sibling
folder first and moved in with ``config.json`` last, so a folder never looks like a model before it is
one. A checkpoint cut short by a kill is skipped when resuming.
"""

import json
import logging
import os
import re
import shutil
from pathlib import Path

from llm_memory.training.arguments import Arguments
from llm_memory.training.checks import require_model_folder
from llm_memory.training.training_log import LOG_FILE

logger = logging.getLogger(__name__)

# The file that makes a folder look like a model: it is moved into the output folder last.
FINAL_MARKER = "config.json"
# In all_results.json of a sitting ended by --max_train_minutes: the step it reached (the run goes on).
TIME_LIMIT_KEY = "stopped_by_time_limit_at_step"


def checkpoint_is_complete(folder: str) -> bool:
    """Whether a ``checkpoint-<step>`` folder was written to the end: the Trainer writes its
    trainer_state.json last, after the weights (a run killed while saving leaves it out or cut)."""
    try:
        json.loads(Path(folder, "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return any(Path(folder, name).is_file() for name in ("model.safetensors", "pytorch_model.bin"))


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest complete checkpoint of ``output_dir``; incomplete newer ones are named in a warning."""
    if not os.path.isdir(output_dir):
        return None
    steps = sorted(
        (int(name.split("-", 1)[1]), name)
        for name in os.listdir(output_dir)
        if re.fullmatch(r"checkpoint-\d+", name) and os.path.isdir(os.path.join(output_dir, name))
    )
    for _, name in reversed(steps):
        folder = os.path.join(output_dir, name)
        if checkpoint_is_complete(folder):
            return folder
        logger.warning("Skipping %s: it is incomplete (the run was stopped while saving it).", folder)
    return None


def find_checkpoint(args: Arguments) -> str | None:
    """The checkpoint to resume from, or None for a fresh run; refuses to mix a fresh run into an old one."""
    training_args, run_args = args.training, args.run
    if training_args.resume_from_checkpoint:
        require_model_folder(training_args.resume_from_checkpoint, "--resume_from_checkpoint")
        return training_args.resume_from_checkpoint
    output_dir = training_args.output_dir
    last = last_complete_checkpoint(output_dir)
    if run_args.resume:
        if last is None:
            raise ValueError(
                f"--resume: there is no complete checkpoint (checkpoint-<step> folder) in {output_dir!r} to "
                "continue from; run without --resume to start, or check --output_dir."
            )
        return last
    previous = last is not None or os.path.isfile(os.path.join(output_dir, FINAL_MARKER))
    if previous and not run_args.overwrite_output_dir:
        raise ValueError(
            f"--output_dir {output_dir!r} already holds a run; pass --resume to continue it, "
            "--overwrite_output_dir to start afresh there, or choose another --output_dir."
        )
    others = foreign_entries(output_dir)
    if not previous and others and not run_args.overwrite_output_dir:
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise ValueError(
            f"--output_dir {output_dir!r} is not empty and holds no run of this trainer ({shown}); the model "
            "would be written among those files, its card replacing any README.md. Choose a new or empty "
            "folder, or pass --overwrite_output_dir to write there anyway."
        )
    return None


def foreign_entries(output_dir: str) -> list[str]:
    """The names in ``output_dir`` that a run of this trainer did not write (sorted; [] if none)."""
    if not os.path.isdir(output_dir):
        return []
    ours = re.compile(r"checkpoint-\d+|runs|" + re.escape(LOG_FILE))
    return sorted(name for name in os.listdir(output_dir) if not ours.fullmatch(name))


def finished_run_metrics(args: Arguments) -> dict | None:
    """With --resume on a run that already wrote its final model: that run's metrics (nothing to do).
    A sitting ended by --max_train_minutes wrote a model but is not finished: None, so it continues."""
    output_dir = args.training.output_dir
    results = Path(output_dir, "all_results.json")
    if args.run.resume and Path(output_dir, FINAL_MARKER).is_file() and results.is_file():
        metrics = json.loads(results.read_text())
        return None if TIME_LIMIT_KEY in metrics else metrics
    return None


def remove_previous_run(output_dir: str) -> None:
    """For --overwrite_output_dir: the old checkpoints go, and the folder stops looking like a model."""
    if not os.path.isdir(output_dir):
        return
    for entry in Path(output_dir).iterdir():
        if entry.is_dir() and entry.name.startswith("checkpoint-"):
            shutil.rmtree(entry)
    Path(output_dir, FINAL_MARKER).unlink(missing_ok=True)


def staging_dir(output_dir: str) -> Path:
    """A hidden sibling of the output folder where the final model is written before it moves in."""
    final = Path(output_dir).resolve()
    return final.parent / f".{final.name}.incomplete"


def move_into_place(staging: Path, output_dir: str) -> None:
    """Moves every file of ``staging`` into ``output_dir``, config.json last, then removes ``staging``.

    Until config.json arrives the folder does not look like a model (an older one, from the run that
    was resumed, goes first), so a run that dies here leaves no half-written model behind.
    """
    final = Path(output_dir)
    final.mkdir(parents=True, exist_ok=True)
    (final / FINAL_MARKER).unlink(missing_ok=True)
    for entry in sorted(staging.iterdir(), key=lambda p: p.name == FINAL_MARKER):
        os.replace(entry, final / entry.name)
    staging.rmdir()
