"""One training run with the Transformers Trainer: language modelling, classification or summarization.

Follows Transformers' ``run_clm.py``: the arguments (``arguments``) are parsed with ``HfArgumentParser``
together with ``TrainingArguments``, the data is prepared by pure transforms (``prepare``, ``data``),
and the ``Trainer`` runs underneath. Added here: three tasks, early stopping, a throughput/MFU log
(``callbacks``), progress with an ETA and a CSV of every log (``training_log``), a stop on a non-finite
loss, and an output folder that is a complete Hub model repository, written only once training has
succeeded (``checkpoints``).

Examples::

    python -m llm_memory.training --preset tiny --output_dir runs/tiny
    python -m llm_memory.training --preset small --output_dir runs/small-lm
    python -m llm_memory.training --preset small --task classification \\
        --init_from runs/small-lm --output_dir runs/small-sentiment
    python -m llm_memory.training --preset small --task summarization --output_dir runs/small-sum
    python -m llm_memory.training --train_file train.txt --validation_file valid.txt --output_dir runs/mine
    python -m llm_memory.training --preset small --config_overrides hidden_size=128,use_lstm=false ...

A new model's config comes from the preset's ``model`` section, then ``--config_overrides`` (any
``MemoryTransformerConfig`` field, as in Transformers' ``run_clm.py``).

Interrupted runs continue from the last checkpoint in ``--output_dir`` with the same command plus
``--resume``.

Several GPUs or nodes: the same command under a launcher (DistributedDataParallel)::

    torchrun --nproc_per_node 8 -m llm_memory.training --preset base --output_dir runs/base
    accelerate launch --multi_gpu --num_processes 8 -m llm_memory.training --preset base ...
    # two nodes: run on each, HOST being the first node
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \\
        -m llm_memory.training --preset base --output_dir runs/base

``--per_device_train_batch_size`` is per process; the tokenizer is trained on the first process and sent
to the others. On CPUs the processes talk over gloo, on GPUs over NCCL, chosen by the Trainer. Fully
sharded data parallel (FSDP2; GPUs only, not covered by the tests) for models that do not fit one
device: add ``--fsdp --fsdp_config '{"reshard_after_forward": true}'`` (each ``MemoryTransformerBlock``
is wrapped, from the model's ``_no_split_modules``; ``"activation_checkpointing": true`` in the config
trades compute for memory). DeepSpeed goes through the Trainer's ``--deepspeed ds_config.json``.
"""

import json
import logging
import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import datasets
import transformers
from transformers import (
    EarlyStoppingCallback,
    GenerationConfig,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from llm_memory.generation_settings import generation_config_defaults
from llm_memory.hub.model_card import ModelCardInfo, build_model_card
from llm_memory.memory.recurrence import WindowedClassificationTrainer, shrink_window
from llm_memory.training.arguments import Arguments, make_parser, parse_args, read_preset
from llm_memory.training.calibration import calibrate
from llm_memory.training.callbacks import (
    NonFiniteLossCallback,
    ThroughputCallback,
    TimeLimitCallback,
    TrainingDiverged,
    device_peak_flops,
    training_flops_per_token,
)
from llm_memory.training.checkpoints import (
    TIME_LIMIT_KEY,
    find_checkpoint,
    finished_run_metrics,
    move_into_place,
    remove_previous_run,
    staging_dir,
)
from llm_memory.training.checks import check_arguments
from llm_memory.training.metrics import classification_metrics, generate_summaries, perplexity, rouge_scores
from llm_memory.training.model import build_model, weights_digest
from llm_memory.training.prepare import PreparedData, data_collator, dataset_source, prepare_data
from llm_memory.training.sources import describe_dataset
from llm_memory.training.training_log import ProgressCallback

logger = logging.getLogger(__name__)


def setup_logging(training_args: TrainingArguments) -> None:
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    # This script's own few lines show on the main process; the libraries stay at their level.
    # (the package's logger: the progress lines of llm_memory.training.training_log too)
    logging.getLogger("llm_memory").setLevel(
        min(log_level, logging.INFO) if training_args.should_log else log_level
    )
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)


def launch_command(argv: Sequence[str]) -> str:
    """The command line that made a run, with the launcher when there were several processes."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:
        per_node = os.environ.get("LOCAL_WORLD_SIZE", str(world_size))
        nodes = world_size // max(int(per_node), 1)
        launcher = f"torchrun --nproc_per_node {per_node}" + (f" --nnodes {nodes}" if nodes > 1 else "")
        prefix = f"{launcher} -m llm_memory.training"
    else:
        prefix = "python -m llm_memory.training"
    return f"{prefix} {shlex.join(argv)}".strip()


def hyperparameters(args: Arguments, trainer: Trainer) -> dict:
    training_args = args.training
    return {
        "task": args.data.task,
        "block size": args.data.block_size,
        "steps": trainer.state.global_step,
        "epochs": round(trainer.state.epoch or 0, 3),
        "learning rate": training_args.learning_rate,
        "scheduler": training_args.lr_scheduler_type.value,
        "warmup steps": training_args.warmup_steps,
        "batch size per device": training_args.per_device_train_batch_size,
        "gradient accumulation": training_args.gradient_accumulation_steps,
        "processes": training_args.world_size,
        "weight decay": training_args.weight_decay,
        "optimizer": training_args.optim.value,
        "precision": "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32",
        "seed": training_args.seed,
    }


def save_final_model(
    trainer: Trainer,
    args: Arguments,
    metrics: dict[str, float],
    label_names: list[str] | None,
    keep_checkpoints: bool = False,
) -> None:
    """Writes model, tokenizer, card and results to a sibling folder, then moves them into --output_dir.

    The Trainer's checkpoints are removed, unless ``keep_checkpoints`` (a sitting ended by its time
    limit, which --resume continues)."""
    output_dir = args.training.output_dir
    staging = staging_dir(output_dir)
    if trainer.is_world_process_zero():
        shutil.rmtree(staging, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(staging))  # every process: FSDP and DeepSpeed gather the weights here
    if trainer.is_world_process_zero():
        (staging / "training_args.bin").unlink(missing_ok=True)  # a pickle; the card has the command
        (staging / "all_results.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        trainer.state.save_to_json(str(staging / "trainer_state.json"))
        data_args = args.data
        dataset = describe_dataset(
            dataset_source(data_args),
            data_args.dataset_config_name,
            data_args.train_file,
            data_args.validation_file,
        )
        model = trainer.model
        card = ModelCardInfo(
            model_name=Path(output_dir).resolve().name,
            task=args.data.task,
            metrics=metrics,
            command=launch_command(args.argv),
            **dataset,
            config=model.config.to_dict(),
            hyperparameters=hyperparameters(args, trainer),
            num_parameters=model.num_parameters(),
            init_from=args.model.init_from,
            label_names=label_names,
        )
        (staging / "README.md").write_text(build_model_card(card), encoding="utf-8")
        move_into_place(staging, output_dir)
        # The finished folder is the model's repository: the Trainer's checkpoints served only to resume.
        for entry in Path(output_dir).glob("checkpoint-*") if not keep_checkpoints else ():
            if entry.is_dir():
                shutil.rmtree(entry)
    trainer.accelerator.wait_for_everyone()


def final_metrics(trainer: Trainer, train_metrics: dict, args: Arguments, prepared: PreparedData) -> dict:
    """Train and validation metrics; perplexity from the loss, and ROUGE of greedy summaries."""
    data_args = args.data
    metrics = {**train_metrics, **trainer.evaluate()}
    metrics["train_samples"] = len(prepared.encoded["train"])
    metrics["eval_samples"] = len(prepared.encoded["validation"])
    if data_args.task != "classification":
        metrics["eval_perplexity"] = perplexity(metrics["eval_loss"])
    if data_args.task == "summarization" and trainer.is_world_process_zero():
        rows = prepared.raw["validation"]
        summaries = generate_summaries(
            trainer.model,
            prepared.tokenizer,
            rows[data_args.document_column_name],
            data_args.generation_max_length,
            prepared.block_size,
            args.training.per_device_eval_batch_size,
        )
        scores = rouge_scores(summaries, rows[data_args.summary_column_name])
        metrics.update({f"eval_{kind}": value for kind, value in scores.items()})
    return metrics


def logging_steps_given(args: Arguments) -> bool:
    """Whether --logging_steps was chosen (on the command line or in the preset), not left at 500."""
    if any(arg == "--logging_steps" or arg.startswith("--logging_steps=") for arg in args.argv):
        return True
    return bool(args.run.preset) and "logging_steps" in read_preset(args.run.preset, make_parser())[0]


def run(args: Arguments, callbacks: Sequence[TrainerCallback] = ()) -> dict[str, float]:
    """Trains, evaluates and writes the finished folder; returns the metrics (as in all_results.json).

    ``callbacks`` are added to the Trainer's (tests use them to interrupt a run).
    """
    data_args, run_args, training_args = args.data, args.run, args.training
    setup_logging(training_args)
    check_arguments(args)
    if (finished := finished_run_metrics(args)) is not None:
        logger.info(
            "%s holds a finished run, so --resume has nothing to continue and changes nothing; to train "
            "further, start a new run with --init_from %s.",
            training_args.output_dir,
            training_args.output_dir,
        )
        return finished
    checkpoint = find_checkpoint(args)
    if checkpoint is None and run_args.overwrite_output_dir:
        with training_args.main_process_first(desc="removing the previous run"):
            if training_args.process_index == 0:
                remove_previous_run(training_args.output_dir)
    if checkpoint:
        logger.info("Resuming from %s", checkpoint)
    prepared = prepare_data(args, checkpoint)
    data_args.block_size = prepared.block_size  # for the card

    set_seed(training_args.seed)
    model = build_model(args, prepared.tokenizer, prepared.label_names, checkpoint)
    if data_args.memory_windows > 1 and prepared.block_size < model.config.max_position_embeddings:
        # A classifier trained to read window by window at --block_size keeps that window: it is saved
        # with it and reads that way in pipelines, calibration and the benchmarks.
        logger.info(
            "Reading window by window at --block_size %d: the model's window becomes %d (was %d).",
            prepared.block_size,
            prepared.block_size,
            model.config.max_position_embeddings,
        )
        shrink_window(model, prepared.block_size, prepared.tokenizer)
    logger.info("Model: %.2fM parameters", model.num_parameters() / 1e6)
    stop_on_nan = NonFiniteLossCallback()
    throughput = ThroughputCallback(
        training_flops_per_token(model, prepared.block_size),
        run_args.peak_flops or device_peak_flops(training_args.device),
        training_args.world_size,
    )
    # After the throughput callback: the progress log and its CSV row include tokens/s.
    progress = ProgressCallback(training_args.output_dir, adapt_logging=not logging_steps_given(args))
    trainer_callbacks = [stop_on_nan, throughput, progress, *callbacks]
    if run_args.early_stopping_patience is not None:
        trainer_callbacks.append(EarlyStoppingCallback(run_args.early_stopping_patience))
    time_limit = TimeLimitCallback(run_args.max_train_minutes) if run_args.max_train_minutes else None
    if time_limit is not None:
        trainer_callbacks.append(time_limit)
    windowed = data_args.memory_windows > 1
    trainer_class = (
        partial(WindowedClassificationTrainer, window=prepared.block_size) if windowed else Trainer
    )
    trainer = trainer_class(
        model=model,
        args=training_args,
        data_collator=data_collator(data_args.task, prepared.tokenizer, data_args.memory_windows),
        train_dataset=prepared.encoded["train"],
        eval_dataset=prepared.encoded["validation"],
        processing_class=prepared.tokenizer,
        compute_metrics=classification_metrics if data_args.task == "classification" else None,
        callbacks=trainer_callbacks,
    )

    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    if stop_on_nan.diverged is not None:
        step, key, value = stop_on_nan.diverged
        raise TrainingDiverged(
            f"the {key.replace('_', ' ')} became {value} at step {step}, so training stopped and no model "
            "was written; lower --learning_rate or --max_grad_norm, or raise --warmup_steps."
        )

    model = trainer.model  # the best checkpoint's weights with --load_best_model_at_end
    model.config.use_cache = True  # the Trainer turns the cache off for training; generation wants it
    if data_args.task == "lm":
        # generate() and pipelines decode as the demo does: sampled, with no 4-gram repeats.
        for name, value in generation_config_defaults().items():
            setattr(model.generation_config, name, value)
    if data_args.task == "summarization":
        # Greedy and short: an --init_from language model's sampled settings (temperature, top_p) would
        # leave an invalid config (sampling settings without sampling) that cannot be saved.
        plain = GenerationConfig()
        for name in generation_config_defaults():
            setattr(model.generation_config, name, getattr(plain, name))
        model.generation_config.max_new_tokens = data_args.generation_max_length
        model.generation_config.do_sample = False
    calibration = None
    if data_args.task == "classification":
        # Every process fits the same temperature on the same rows, so the replicas stay equal.
        rows = prepared.raw["validation"]
        calibration = calibrate(
            model,
            prepared.tokenizer,
            rows[data_args.text_column_name],
            rows[data_args.label_column_name],
            training_args.per_device_eval_batch_size,
            memory_windows=data_args.memory_windows,
        )
        logger.info("Calibration on the validation split: %s", calibration)
    metrics = final_metrics(trainer, train_result.metrics, args, prepared)
    stopped_at = time_limit.stopped_at if time_limit is not None else None
    if stopped_at is not None:
        metrics[TIME_LIMIT_KEY] = stopped_at
        logger.info(
            "--max_train_minutes %g ended this sitting at step %d of %d; the model written is that of this "
            "point, and the same command with --resume continues the run.",
            run_args.max_train_minutes,
            stopped_at,
            trainer.state.max_steps,
        )
    if calibration is not None:
        metrics["eval_temperature"] = calibration["temperature"]
        metrics["eval_ece"] = calibration["calibrated"]["ece"]
        metrics["eval_ece_uncalibrated"] = calibration["uncalibrated"]["ece"]
    if trainer.is_world_process_zero():
        trainer.log_metrics("all", metrics)
    if run_args.weights_digest_dir:
        os.makedirs(run_args.weights_digest_dir, exist_ok=True)
        path = Path(run_args.weights_digest_dir, f"rank{training_args.process_index}.sha256")
        path.write_text(weights_digest(model) + "\n")
    save_final_model(trainer, args, metrics, prepared.label_names, keep_checkpoints=stopped_at is not None)
    logger.info("Wrote the model to %s", training_args.output_dir)
    return metrics


def main(argv: list[str] | None = None) -> int:
    """The command line: returns 0, or 1 after one ``error:`` line on stderr for a bad input."""
    try:
        run(parse_args(argv))
    except (ValueError, TrainingDiverged) as err:  # DataError is a ValueError
        logger.debug("Stopped on a bad input", exc_info=True)
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
