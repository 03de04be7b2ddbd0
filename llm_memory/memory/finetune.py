"""Fine-tuning a model on memory probes, read window by window the way it is then evaluated.

Windowed training with back-propagation through the carried state, as in the Recurrent Memory
Transformer (Bulatov et al., 2022): batches of equally long probes at distances drawn per batch, AdamW
with warm-up and a cosine decay, checkpoints that a stopped run resumes from.
"""

import os
import random
import tempfile
from collections.abc import Sequence

import torch
from datasets import Dataset
from transformers import TrainingArguments, default_data_collator

from llm_memory.memory import probes
from llm_memory.memory.recurrence import RecurrentTrainer
from llm_memory.training.checkpoints import last_complete_checkpoint

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def training_probes(
    task: str | Sequence[str],
    ranges: list[tuple[int, int]],
    steps: int,
    batch_size: int,
    tokenizer,
    window: int,
    seed: int,
    align: bool = True,
) -> Dataset:
    """``steps`` batches of ``batch_size`` probes over train-split reviews, in order. Batches take the
    tasks in turn (one task or several); each draws one of ``ranges``, then one distance in it (at least
    the question's length); its probes are made equally long by more distractor text in front, so a
    batch needs no padding."""
    tasks = [task] if isinstance(task, str) else list(task)
    rng = random.Random(seed)
    distractors = probes.as_distractors(None, tokenizer, "train")
    shortest = {name: probes.min_distance(name, tokenizer) for name in tasks}
    rows = []
    for step in range(steps):
        name = tasks[step % len(tasks)]
        low, high = rng.choice(ranges)
        distance = max(shortest[name], rng.randint(low, high))
        batch = [
            probes.make_probe(name, distance, tokenizer, rng, distractors, align_to=window if align else None)
            for _ in range(batch_size)
        ]
        length = max(len(probe.input_ids) + len(probe.answer_ids) for probe in batch)
        rows += [
            probes.lengthen(
                probe, length - len(probe.input_ids) - len(probe.answer_ids), tokenizer, distractors, rng
            )
            for probe in batch
        ]
    return probes.probe_dataset(rows)


def fine_tune(
    model,
    tokenizer,
    task: str | Sequence[str],
    ranges: list[tuple[int, int]],
    steps: int,
    window: int,
    settings: dict,
    *,
    seed: int = 0,
    learning_rate: float = 1e-3,
    batch_size: int = 1,
    bptt_windows: int | None = None,
    align: bool = True,
    output_dir: str | os.PathLike | None = None,
    save_steps: int = 200,
) -> list[dict]:
    """``steps`` updates of ``batch_size`` probes each (see ``training_probes``), read window by window as
    the variant is evaluated: AdamW, warm-up, then a cosine decay to 5% of ``learning_rate``. Returns the
    Trainer's log history.

    With ``output_dir`` the Trainer keeps a checkpoint there every ``save_steps`` steps (the last two),
    and a stopped run started again with the same arguments resumes from its newest complete one."""
    train = training_probes(task, ranges, steps, batch_size, tokenizer, window, seed + 1, align)
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=str(output_dir or scratch),
            max_steps=steps,
            per_device_train_batch_size=batch_size,
            train_sampling_strategy="sequential",  # the batches are built in order, equal lengths in each
            learning_rate=learning_rate,
            warmup_steps=min(50, steps // 10),
            lr_scheduler_type="cosine_with_min_lr",
            lr_scheduler_kwargs={"min_lr_rate": 0.05},
            logging_steps=max(1, min(100, steps // 10)),
            save_strategy="steps" if output_dir else "no",
            save_steps=save_steps,
            save_total_limit=2,
            report_to="none",
            disable_tqdm=True,
            seed=seed,
            dataloader_pin_memory=False,
            use_cpu=DEVICE == "cpu",
        )
        trainer = RecurrentTrainer(
            model=model,
            args=args,
            train_dataset=train.remove_columns("distance"),
            data_collator=default_data_collator,
            window=window,
            bptt_windows=bptt_windows,
            **settings,
        )
        resume_from = last_complete_checkpoint(str(output_dir)) if output_dir else None
        if resume_from:
            print(f"Resuming from {resume_from}", flush=True)
        trainer.train(resume_from_checkpoint=resume_from)
    model.eval()
    return trainer.state.log_history
