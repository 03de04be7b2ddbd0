"""Memory past the attention window: segment recurrence (``recurrence``), the memory probes, and the
memory benchmark that evaluates, fine-tunes and reports (``python -m llm_memory.memory``)."""
