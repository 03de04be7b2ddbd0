"""``python -m llm_memory.demo``: the web demo (``app.main``).

It serves the ``checkpoints/`` of the working directory, or the model folders given with ``--model``,
``--classifier`` and ``--summarizer``.
"""

from llm_memory.demo.app import main

if __name__ == "__main__":
    main()
