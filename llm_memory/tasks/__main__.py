"""``python -m llm_memory.tasks``: one demo task from the command line (``cli.main``)."""

from llm_memory.tasks.cli import main

if __name__ == "__main__":
    main()
