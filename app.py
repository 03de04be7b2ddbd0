"""The web demo of this checkout: ``python app.py`` serves ``llm_memory.demo`` on the checkpoints next to it.

    python app.py [--model PATH_OR_HUB_ID] [--classifier ...] [--summarizer ...] [--host 0.0.0.0] [--port 7860] [--share]

The embedded ``checkpoints/memory-lm``, ``checkpoints/sentiment`` and ``checkpoints/memory`` are the
defaults; flags and the LLM_MEMORY_* variables choose others (``llm_memory/serving/settings.py``).
"""

from pathlib import Path

from llm_memory.demo import app

# The embedded checkpoints sit next to this file, wherever it is started from.
CHECKPOINTS_DIR = Path(__file__).resolve().parent / "checkpoints"


def main(argv=None) -> None:
    app.main(argv, checkpoints_dir=CHECKPOINTS_DIR)


if __name__ == "__main__":
    main()
