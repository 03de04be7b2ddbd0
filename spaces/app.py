"""Entry point of the Hugging Face Space: the llm-memory demo on the checkpoints in this folder.

``python -m llm_memory.hub.space`` puts the ``llm_memory`` package and ``checkpoints/`` next to this
file. Settings come from the Space's variables (LLM_MEMORY_MODEL, ...).
"""

from pathlib import Path

from llm_memory.demo import app

# The checkpoints the Space ships, next to this file.
CHECKPOINTS_DIR = Path(__file__).resolve().parent / "checkpoints"


def main(argv=None) -> None:
    app.main(argv, checkpoints_dir=CHECKPOINTS_DIR)


if __name__ == "__main__":
    main()
