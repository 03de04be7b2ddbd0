"""Training with the Transformers Trainer (``python -m llm_memory.training``).

The arguments and presets, the data and its corpora, the tokenizer, callbacks, metrics, calibration
and the run's output folder.
"""
