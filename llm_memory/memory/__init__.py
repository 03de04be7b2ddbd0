"""Memory past the attention window: segment recurrence, memory probes and the memory benchmark.

``recurrence`` runs text window by window with the memory carried, ``probes`` hides facts at set
distances, and ``evaluate``, ``finetune``, ``report`` and ``benchmark`` make the benchmark
(``python -m llm_memory.memory``).
"""
