"""The demo's tasks as plain functions that check their inputs and return data.

Generate, classify, summarize, attention and the memory probe. The demo, the tests, the benchmarks and
the command line (``python -m llm_memory.tasks``) call them; nothing here imports a UI library.
"""
